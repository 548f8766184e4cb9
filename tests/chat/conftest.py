"""Fixtures of the chat tests: the thinking copy of the default model, and a worker pinned
to it (tests/thinking_model.py); the documents worker, for files attached on the chat page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models_admin.models import LocalModel
from tests.conftest import start_worker
from tests.documents.conftest import clean_documents, document_worker  # noqa: F401 - fixtures
from tests.processes import Child
from tests.thinking_model import THINKER, thinker_register


@pytest.fixture
def thinker(db: None, default_model: LocalModel) -> LocalModel:
    return thinker_register(default_model)


@pytest.fixture
def thinker_worker(thinker: LocalModel, log_dir: Path) -> Iterator[Child]:
    child = start_worker("pinned-thinker", log_dir, model=THINKER)
    yield child
    child.stop()
