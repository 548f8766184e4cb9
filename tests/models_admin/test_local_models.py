"""Scanning the models dir: files put there by hand are found and registered."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from models_admin.local_models import localmodel_register, localmodel_scan
from models_admin.models import LocalModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def scan_dir() -> Any:
    """A folder for files put there by hand; whatever other tests left in the shared models dir
    is registered first, so a scan finds only what the test puts there."""
    localmodel_scan()
    folder = Path(settings.MODELS_DIR) / "by-hand"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_it_registers_files_put_in_the_models_dir_and_reports_the_rest(
    default_model: Any, tiny_gguf: Path, scan_dir: Path
) -> None:
    shutil.copyfile(tiny_gguf, scan_dir / "tiny-F32.gguf")
    (scan_dir / "notes.gguf").write_text("not a model")
    (scan_dir / "half.gguf.incomplete").write_bytes(b"GGUF")
    hidden = Path(settings.MODELS_DIR) / ".fetch-1"
    hidden.mkdir()
    shutil.copyfile(tiny_gguf, hidden / "fetching.gguf")
    try:
        report = localmodel_scan()
    finally:
        shutil.rmtree(hidden)

    assert [m.file for m in report.added] == ["by-hand/tiny-F32.gguf"]
    added = report.added[0]
    assert added.name == "Tiny Test"
    assert added.metadata["architecture"] == "llama"
    assert [file for file, _ in report.unreadable] == ["by-hand/notes.gguf"]
    assert "is not a GGUF model file" in report.unreadable[0][1]
    assert report.missing == []
    assert localmodel_scan().added == []  # nothing new the second time


def test_it_marks_failed_a_model_whose_file_is_gone(
    default_model: Any, tiny_gguf: Path, scan_dir: Path
) -> None:
    path = scan_dir / "gone.gguf"
    shutil.copyfile(tiny_gguf, path)
    model = localmodel_register(path=path)
    path.unlink()
    report = localmodel_scan()
    assert report.missing == [model]
    model.refresh_from_db()
    assert model.state == "failed"
    assert model.error == "The file by-hand/gone.gguf is missing from the models dir."
    assert LocalModel.objects.get(pk=default_model.pk).state == "ready"


def test_a_second_file_with_the_same_header_name_gets_its_own_name(
    default_model: Any, tiny_gguf: Path, scan_dir: Path
) -> None:
    shutil.copyfile(tiny_gguf, scan_dir / "a.gguf")
    shutil.copyfile(tiny_gguf, scan_dir / "b.gguf")
    names = sorted(m.name for m in localmodel_scan().added)
    assert names == ["Tiny Test", "Tiny Test (b)"]
