"""Reading GGUF headers without loading the weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from models_admin.gguf_metadata import NotGGUF, gguf_read_metadata
from models_admin.local_models import localmodel_register_default
from wizweb.default_model import DEFAULT_MODEL_SHA256, default_model_path


def test_it_reads_the_default_models_header() -> None:
    metadata = gguf_read_metadata(default_model_path(Path(settings.MODELS_DIR)))
    assert metadata["architecture"] == "llama"
    assert metadata["context_length"] == 8192
    assert "<|im_start|>" in metadata["chat_template"]
    assert metadata["quantization"] == "Q4_1"
    assert 100_000_000 < metadata["parameters"] < 200_000_000


def test_it_refuses_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>Not found</html>" * 10)
    with pytest.raises(NotGGUF, match="is not a GGUF model file"):
        gguf_read_metadata(fake)


def test_it_refuses_a_truncated_gguf(tmp_path: Path) -> None:
    source = default_model_path(Path(settings.MODELS_DIR))
    truncated = tmp_path / "cut.gguf"
    with source.open("rb") as handle:
        truncated.write_bytes(handle.read(2000))
    with pytest.raises(NotGGUF):
        gguf_read_metadata(truncated)


@pytest.mark.django_db
def test_it_registers_the_default_model_as_ready_and_default() -> None:
    model = localmodel_register_default()
    assert model.state == "ready"
    assert model.is_default
    assert model.sha256 == DEFAULT_MODEL_SHA256
    assert model.size_bytes == default_model_path(Path(settings.MODELS_DIR)).stat().st_size
    assert localmodel_register_default().pk == model.pk


def test_it_refuses_a_gguf_cut_inside_its_weights(tmp_path: Path) -> None:
    # The header is whole; the last tensor's data is not (a download cut short).
    source = default_model_path(Path(settings.MODELS_DIR))
    cut = tmp_path / "cut.gguf"
    with source.open("rb") as handle:
        cut.write_bytes(handle.read(source.stat().st_size - 1000))
    with pytest.raises(NotGGUF, match="ends too early"):
        gguf_read_metadata(cut)
