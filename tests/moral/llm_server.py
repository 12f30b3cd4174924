"""A tiny OpenAI-compatible chat server for the tests, on 127.0.0.1 in a thread.

Each request to POST /v1/chat/completions takes the next scripted reply: a chat completion whose
message content is given, a delay before it (to provoke client timeouts), a raw body, or an HTTP
error. Every request body is recorded, so tests can check what was sent in which role.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str | None = None  # the assistant message's content
    delay_s: float = 0.0
    raw_body: bytes | None = None  # sent as is, with status 200
    status: int = 200


@dataclass
class FakeLLM:
    base_url: str
    script: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def messages(self, index: int = -1) -> list[dict[str, str]]:
        return self.requests[index]["messages"]


def _completion(content: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


@contextmanager
def fake_llm_server() -> Iterator[FakeLLM]:
    fake = FakeLLM(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length") or 0)
            fake.requests.append(json.loads(self.rfile.read(length) or b"{}"))
            reply = fake.script.pop(0) if fake.script else Reply(status=500)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            body = reply.raw_body if reply.raw_body is not None else (
                _completion(reply.content or "") if reply.status == 200 else b'{"error": {"message": "boom"}}'
            )
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
