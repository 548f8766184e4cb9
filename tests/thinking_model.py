"""A thinking model for the tests: the default GGUF, copied with a Qwen3-style chat template.

The small default model never thinks on its own; with this template (`<think>` markers, the
`enable_thinking` switch, earlier turns' thinking left out) and a response prefix that opens
the block, it writes thoughts that the server must split, budget and switch like a real
Qwen3's. Written once with the `gguf` package into `var/test-cache/` (about 5 s of Python,
which every test process would otherwise pay again) and linked from there.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

if TYPE_CHECKING:
    from models_admin.models import LocalModel

THINKER = "SmolLM2 thinking copy"

QWEN3_STYLE_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "{%- if '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def thinking_model_write(source: Path, target: Path) -> Path:
    """`source` copied to `target` with the Qwen3-style template; the tensors are unchanged."""
    reader = gguf.GGUFReader(source, "r")
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    template = MetadataDetails(gguf.GGUFValueType.STRING, QWEN3_STYLE_TEMPLATE)
    copy_with_new_metadata(reader, writer, {gguf.Keys.Tokenizer.CHAT_TEMPLATE: template}, [])
    return target


CACHE_DIR = Path(__file__).resolve().parent.parent / "var" / "test-cache"


def thinking_model_cached(source: Path) -> tuple[Path, str]:
    """The thinking copy of `source` in the cache, written if missing, and its SHA-256. Its
    name carries what it is made of, so a new template or model makes a new file; processes
    writing it at once each write their own and the last rename wins."""
    stat = source.stat()
    made_of = f"{source.name}:{stat.st_size}:{stat.st_mtime_ns}:{QWEN3_STYLE_TEMPLATE}"
    target = CACHE_DIR / f"thinking-{hashlib.sha256(made_of.encode()).hexdigest()[:16]}.gguf"
    digest_file = target.with_suffix(".sha256")
    if not (target.exists() and digest_file.exists()):
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=CACHE_DIR, suffix=".part")
        os.close(handle)
        thinking_model_write(source, Path(temporary))
        with open(temporary, "rb") as written:
            digest_file.write_text(hashlib.file_digest(written, "sha256").hexdigest())
        os.replace(temporary, target)
    return target, digest_file.read_text()


def thinker_register(default_model: LocalModel) -> LocalModel:
    """The thinking copy of the default model, linked into the models dir and registered."""
    from django.conf import settings

    from models_admin.local_models import localmodel_register
    from tests.bootstrap import link_or_copy

    cached, sha256 = thinking_model_cached(default_model.path)
    path = Path(settings.MODELS_DIR) / "thinking-copy.gguf"
    if not path.exists():
        link_or_copy(cached, path)
    return localmodel_register(path=path, name=THINKER, sha256=sha256)
