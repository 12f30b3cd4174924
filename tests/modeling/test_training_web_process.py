"""The web process serves the model pages and API without loading torch at start-up (STYLE.md §6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_modeling_web_modules_do_not_import_torch() -> None:
    script = (
        "import django, sys; django.setup(); "
        "import modeling.urls, modeling.api_urls, modeling.views, modeling.apis, modeling.admin, "
        "modeling.tasks, modeling.triggers; "
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
