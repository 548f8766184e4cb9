"""A thinking model for the tests: the default GGUF, copied with a Qwen3-style chat template.

The small default model never thinks on its own; with this template (`<think>` markers, the
`enable_thinking` switch, earlier turns' thinking left out) and a response prefix that opens
the block, it writes thoughts that the server must split, budget and switch like a real
Qwen3's. Written once per test session with the `gguf` package.
"""

from __future__ import annotations

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


def thinker_register(default_model: LocalModel) -> LocalModel:
    """The thinking copy of the default model, written into the models dir and registered."""
    from django.conf import settings

    from models_admin.local_models import localmodel_register

    path = Path(settings.MODELS_DIR) / "thinking-copy.gguf"
    if not path.exists():
        thinking_model_write(default_model.path, path)
    return localmodel_register(path=path, name=THINKER)
