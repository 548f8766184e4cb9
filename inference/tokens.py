"""A model file's tokenizer and chat template without its weights (llama.cpp's vocab-only
load): how many tokens a text or a whole chat prompt is, as the worker's engine counts them.
It is a `chat.grounding.TokenCounter` outside a worker, for the tests and the benchmarks that
check a prompt's size against what the worker reports."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from inference.specials import SpecialTexts


class FileTokens:
    def __init__(self, path: Path, *, n_ctx: int, max_tokens: int, chat_template: str) -> None:
        self.llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        model = self.llama._model
        self.specials = SpecialTexts.of(model)
        self.n_ctx = n_ctx
        # What the engine keeps for the answer (inference.engine.BatchedEngine.fit).
        self.answer_room = min(max_tokens, n_ctx // 4)
        self.formatter = Jinja2ChatFormatter(
            template=chat_template,
            eos_token=model.token_get_text(self.llama.token_eos()),
            bos_token=model.token_get_text(self.llama.token_bos()),
        )

    def text(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode(), add_bos=False))

    def defuse(self, text: str) -> str:
        return self.specials.defuse(text)

    def turns(self, turns: list[dict[str, str]]) -> int:
        formatted = self.formatter(messages=turns)  # type: ignore[arg-type]
        prompt = formatted.prompt.encode()
        return len(self.llama.tokenize(prompt, add_bos=not formatted.added_special, special=True))

    def close(self) -> None:
        self.llama.close()
