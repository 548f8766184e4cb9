"""The batched engine on the real default model: the single engine's promises, kept while
many answers are written at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from django.conf import settings
from llama_cpp._internals import LlamaModel

from chat.engine import Finished, GenerationRequest, PromptTooLong, TextDelta
from chat.grammar import GrammarError
from inference.engine import BatchedEngine
from inference.sampling import Sampling
from wizweb.default_model import default_model_path


@pytest.fixture(scope="module")
def engine() -> Iterator[BatchedEngine]:
    path = default_model_path(Path(settings.MODELS_DIR))
    model = LlamaModel(
        path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=False
    )
    template = model.metadata().get("tokenizer.chat_template", "")
    engine = BatchedEngine(model, n_ctx=1024, parallel=4, chat_template=template)
    yield engine
    engine.close()
    model.close()


def run(engine: BatchedEngine, content: str, **sampling: object) -> Finished:
    request = GenerationRequest(
        messages=[{"role": "user", "content": content}], sampling=Sampling(**sampling)
    )
    streamed = []
    finished = None
    for event in engine.submit(request).events():
        if isinstance(event, TextDelta):
            streamed.append(event.text)
        else:
            finished = event
    assert finished is not None
    assert "".join(streamed) == finished.content
    return finished


def test_four_answers_at_once_equal_each_run_alone(engine: BatchedEngine) -> None:
    prompts = [f"Tell me fact number {i} about rivers." for i in range(4)]
    alone = [run(engine, p, seed=3, temperature=1.0, max_tokens=20).content for p in prompts]
    together: list[str] = ["" for _ in prompts]

    def answer(index: int) -> None:
        together[index] = run(
            engine, prompts[index], seed=3, temperature=1.0, max_tokens=20
        ).content

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone


def test_it_keeps_the_options_of_the_single_engine(engine: BatchedEngine) -> None:
    free = run(engine, "Describe the sea.", seed=3, max_tokens=40)
    stop = free.content.split()[3]
    cut = run(engine, "Describe the sea.", seed=3, max_tokens=40, stop=(stop,))
    assert cut.finish_reason == "stop"
    assert cut.content == free.content[: free.content.index(stop)]
    short = run(engine, "Count from one to fifty in words.", seed=1, max_tokens=5)
    assert (short.finish_reason, short.completion_tokens) == ("length", 5)
    prefixed = run(engine, "What is two plus two?", seed=5, max_tokens=10, response_prefix="Well,")
    assert prefixed.content.startswith("Well,")
    yes_no = run(engine, "Is the sky blue?", seed=2, max_tokens=10, grammar='root ::= "yes" | "no"')
    assert yes_no.content in ("yes", "no")
    with pytest.raises(GrammarError):
        run(engine, "Hi", grammar="root ::= <surely-not-one-token>")


def test_it_aborts_within_a_step_and_refuses_a_prompt_too_long(engine: BatchedEngine) -> None:
    generation = engine.submit(
        GenerationRequest(
            messages=[{"role": "user", "content": "Write a long essay about rivers."}],
            sampling=Sampling(seed=1, max_tokens=400),
        )
    )
    events = generation.events()
    first = next(events)
    assert isinstance(first, TextDelta)
    generation.abort()
    finished = list(events)[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "aborted"
    assert finished.completion_tokens <= 4
    with pytest.raises(PromptTooLong):
        run(engine, "word " * 1200)


def test_a_follow_up_reuses_the_evaluated_history(engine: BatchedEngine) -> None:
    first = run(engine, "Name a fruit.", seed=1, temperature=0.0, max_tokens=12)
    request = GenerationRequest(
        messages=[
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": "Another one?"},
        ],
        sampling=Sampling(seed=1, temperature=0.0, max_tokens=12),
    )
    follow_up = list(engine.submit(request).events())[-1]
    assert isinstance(follow_up, Finished)
    assert follow_up.cached_tokens >= first.prompt_tokens
