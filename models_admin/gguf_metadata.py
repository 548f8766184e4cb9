"""Reading a GGUF file's header (architecture, context length, chat template, quantisation,
parameter count) without loading its weights, through the `gguf` package of llama.cpp."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"


class NotGGUF(ValueError):
    pass


def gguf_check_magic(path: Path) -> None:
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise NotGGUF(f"{path.name} is not a GGUF model file (it does not start with 'GGUF').")


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


def gguf_read_metadata(path: Path) -> dict[str, Any]:
    """The header facts the admin page and the runtime need."""
    gguf_check_magic(path)
    stat = path.stat()
    return dict(_read_metadata(path.resolve(), stat.st_size, stat.st_mtime_ns))


# GGUFReader parses every field, the tokenizer's arrays too (a few seconds for a big vocabulary):
# remember the answer for a file that has not changed.
@functools.lru_cache(maxsize=64)
def _read_metadata(path: Path, size: int, mtime_ns: int) -> dict[str, Any]:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader fails with IndexError, ValueError... on a cut file
        raise NotGGUF(
            f"{path.name} is not a readable GGUF file ({exc}); download it again."
        ) from None
    arch = _field(reader, "general.architecture") or ""
    file_type = _field(reader, "general.file_type")
    quantization = ""
    if file_type is not None:
        try:
            quantization = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            quantization = str(file_type)
    return {
        "architecture": arch,
        "name": _field(reader, "general.name") or "",
        "context_length": _field(reader, f"{arch}.context_length") or 0,
        "embedding_length": _field(reader, f"{arch}.embedding_length") or 0,
        "block_count": _field(reader, f"{arch}.block_count") or 0,
        "head_count": _field(reader, f"{arch}.attention.head_count") or 0,
        "head_count_kv": _field(reader, f"{arch}.attention.head_count_kv") or 0,
        "chat_template": _field(reader, "tokenizer.chat_template") or "",
        "quantization": quantization,
        "parameters": int(sum(int(t.n_elements) for t in reader.tensors)),
    }
