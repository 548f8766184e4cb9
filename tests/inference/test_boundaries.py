"""The inference app's boundaries: the web process never loads llama.cpp, and `inference`
never imports the apps that call it."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from tests.processes import python_run

ROOT = Path(__file__).resolve().parents[2]

WEB_PROCESS = """
import sys
import django
django.setup()
import wizweb.asgi, wizweb.urls
from django.urls import get_resolver
get_resolver().url_patterns  # every view module the web process serves
import chat.consumers, chat.openai_api, chat.options, chat.submission, chat.queue, chat.tools
import chat.conversations
import models_admin.consumers, models_admin.views, wizweb.views
import documents.retrieval, documents.embeddings, documents.jobs
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "llama_cpp")
print(",".join(loaded))
"""


def test_the_web_process_never_imports_llama_cpp() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "wizweb.settings"}
    result = python_run(WEB_PROCESS, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the web process loaded {result.stdout.strip()}"


def test_inference_imports_neither_chat_nor_models_admin() -> None:
    for path in sorted((ROOT / "inference").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in {"chat", "models_admin"}, f"{path.name} imports {name}"
