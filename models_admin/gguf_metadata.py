"""Reading a GGUF file's header (architecture, context length, chat template, quantisation,
parameter count) without loading its weights, with the type tables of llama.cpp's `gguf`
package; and the shape facts (layers, heads, context) from just the first bytes of a file
still on the Hub."""

from __future__ import annotations

import contextlib
import functools
import math
import mmap
import struct
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


def gguf_read_metadata(path: Path) -> dict[str, Any]:
    """The header facts the admin page and the runtime need."""
    gguf_check_magic(path)
    stat = path.stat()
    return dict(_read_metadata(path.resolve(), stat.st_size, stat.st_mtime_ns))


# Read with the cursor below, not gguf.GGUFReader: that one parses every item of the
# tokenizer's arrays into numpy views, 2.6 s for the default model against a few ms here.
# The answer for a file that has not changed is remembered all the same.
@functools.lru_cache(maxsize=64)
def _read_metadata(path: Path, size: int, mtime_ns: int) -> dict[str, Any]:
    import gguf

    try:
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            values, parameters = _read_header(data, size)
    except (_Truncated, ValueError, KeyError, OverflowError, struct.error) as exc:
        why = "it ends too early" if isinstance(exc, _Truncated) else str(exc)
        raise NotGGUF(
            f"{path.name} is not a readable GGUF file ({why}); download it again."
        ) from None
    file_type = values.get("general.file_type")
    quantization = ""
    if file_type is not None:
        try:
            quantization = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            quantization = str(file_type)
    return {
        **_shape(values),
        "name": values.get("general.name") or "",
        "chat_template": values.get("tokenizer.chat_template") or "",
        "quantization": quantization,
        "parameters": parameters,
    }


def _read_header(data: Any, size: int) -> tuple[dict[str, Any], int]:
    """The key-value section of a whole GGUF file and its parameter count, checking that every
    tensor's data lies inside the file (a download cut short ends too early)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    if data[:4] != GGUF_MAGIC:
        raise ValueError("no GGUF magic")
    cursor = _Cursor(data)
    values: dict[str, Any] = {}
    tensor_count = _read_values(cursor, values)
    parameters, data_end = 0, 0
    for _ in range(tensor_count):
        cursor.string()  # name
        dims = [cursor.unpack("<Q", 8) for _ in range(cursor.unpack("<I", 4))]
        kind, offset = cursor.unpack("<I", 4), cursor.unpack("<Q", 8)
        elements = math.prod(dims)
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        parameters += elements
        data_end = max(data_end, offset + elements // block * block_bytes)
    alignment = int(values.get("general.alignment") or 32)
    start = -(-cursor.at // alignment) * alignment
    if start + data_end > size:
        raise _Truncated
    return values, parameters


# The scalar value types of GGUF's key-value section: (struct format, size).
_SCALARS = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    pass


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise _Truncated
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: str, size: int) -> Any:
        return struct.unpack(fmt, self.take(size))[0]

    def string(self) -> str:
        return self.take(self.unpack("<Q", 8)).decode("utf-8", "replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(*_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("<I", 4), self.unpack("<Q", 8)
            if item_kind in _SCALARS:  # skipped, not read: a vocabulary holds 100,000s of them
                self.take(count * _SCALARS[item_kind][1])
            else:
                for _ in range(count):
                    self.value(item_kind)
            return None
        raise NotGGUF(f"Unknown GGUF value type {kind}.")


def gguf_read_header_prefix(data: bytes) -> dict[str, Any]:
    """The shape facts of a model from the first bytes of its file (a Range request to the
    Hub): architecture, context length, layers and heads, for the memory estimate of a file not
    yet downloaded. Keys past the end of `data` are simply missing; the tokenizer's arrays come
    after the model's own keys in files written by llama.cpp's converters."""
    if data[:4] != GGUF_MAGIC:
        raise NotGGUF("The file does not start with 'GGUF'.")
    values: dict[str, Any] = {}
    with contextlib.suppress(_Truncated):
        _read_values(_Cursor(data), values)
    return _shape(values)


def _read_values(cursor: _Cursor, values: dict[str, Any]) -> int:
    """Read a GGUF header's key-value section into `values` (as far as it goes, should the
    data end early) and return the file's tensor count."""
    cursor.take(8)  # magic, version
    tensor_count, kv_count = cursor.unpack("<Q", 8), cursor.unpack("<Q", 8)
    for _ in range(kv_count):
        key = cursor.string()
        values[key] = cursor.value(cursor.unpack("<I", 4))
    return int(tensor_count)


def _shape(values: dict[str, Any]) -> dict[str, Any]:
    """The shape facts among a header's values: architecture, context, layers and heads."""
    arch = str(values.get("general.architecture") or "")
    return {
        "architecture": arch,
        "context_length": int(values.get(f"{arch}.context_length") or 0),
        "embedding_length": int(values.get(f"{arch}.embedding_length") or 0),
        "block_count": int(values.get(f"{arch}.block_count") or 0),
        "head_count": int(values.get(f"{arch}.attention.head_count") or 0),
        "head_count_kv": int(values.get(f"{arch}.attention.head_count_kv") or 0),
    }
