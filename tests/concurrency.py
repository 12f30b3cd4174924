"""Running a test's actions at the same moment in threads, each on its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def race(action: Callable[[int], None], *, threads: int, timeout: float = 60) -> list[BaseException]:
    """Call `action(n)` for n in range(threads), all released together by a barrier; return what they raised.

    A thread's exception would otherwise be lost, so it is collected for the test to assert on. Each
    thread closes its own connection, so the test database can be dropped afterwards.
    """
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            action(n)
        except BaseException as exc:  # reported to the test
            errors.append(exc)
        finally:
            connection.close()

    started = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout)
    return errors
