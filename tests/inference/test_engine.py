"""The engine on the real default model: every promise of an answer (seed, stop strings, length,
prefix, grammar, abort, trimming, prefix reuse), kept while many answers are written at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from django.conf import settings
from llama_cpp._internals import LlamaModel

from chat.options import options_parse
from inference.engine import BatchedEngine
from inference.requests import (
    Finished,
    GenerationRequest,
    GrammarRefused,
    PromptTooLong,
    TextDelta,
)
from inference.sampling import Sampling
from tests.conftest import TOM_AS_JSON
from wizweb.default_model import default_model_path

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    path = default_model_path(Path(settings.MODELS_DIR))
    loaded = LlamaModel(
        path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=False
    )
    yield loaded
    loaded.close()


def small_engine(model: LlamaModel, n_ctx: int, parallel: int = 1) -> BatchedEngine:
    template = model.metadata().get("tokenizer.chat_template", "")
    return BatchedEngine(model, n_ctx=n_ctx, parallel=parallel, chat_template=template)


@pytest.fixture(scope="module")
def engine(model: LlamaModel) -> Iterator[BatchedEngine]:
    engine = small_engine(model, 1024, parallel=4)
    yield engine
    engine.scheduler.close()  # the model is the module's


@pytest.fixture(scope="module")
def solo(model: LlamaModel) -> Iterator[BatchedEngine]:
    """One slot, as the single-answer engine had: what a prompt reuses is what the last left."""
    engine = small_engine(model, 2048)
    yield engine
    engine.scheduler.close()


def run_solo(engine: BatchedEngine, content: str, **sampling: object) -> tuple[str, Finished]:
    finished = run(engine, content, **sampling)
    return finished.content, finished


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
    with pytest.raises(GrammarRefused):
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


def test_it_gives_the_same_text_for_the_same_seed(solo: BatchedEngine) -> None:
    first, _ = run_solo(solo, "Tell me a story.", seed=11, temperature=1.0, max_tokens=30)
    second, _ = run_solo(solo, "Tell me a story.", seed=11, temperature=1.0, max_tokens=30)
    other, _ = run_solo(solo, "Tell me a story.", seed=12, temperature=1.0, max_tokens=30)
    assert first == second
    assert first != other


def chat(engine: BatchedEngine, messages: list[dict[str, str]], seed: int) -> Finished:
    request = GenerationRequest(
        messages=messages, sampling=Sampling(seed=seed, temperature=1.0, max_tokens=16)
    )
    finished = list(engine.submit(request).events())[-1]
    assert isinstance(finished, Finished)
    return finished


def test_it_gives_the_same_text_for_a_seed_whether_the_prefix_was_cached_or_not(
    solo: BatchedEngine,
) -> None:
    reused = 20
    history = [
        {"role": "system", "content": "You are a friendly guide to the sea."},
        {"role": "user", "content": "What lives in a rock pool?"},
        {"role": "assistant", "content": "Crabs, anemones, limpets and small fish."},
        {"role": "user", "content": "Which of them is the oldest kind?"},
    ]
    unrelated = [{"role": "user", "content": "Name three mountains."}]
    for seed in range(8):
        chat(solo, unrelated, seed)  # nothing of the history is left in the context
        uncached = chat(solo, history, seed)
        assert uncached.cached_tokens < 10  # the template's first tokens, at most
        # The first turns are still in the context: only the rest is evaluated.
        partly = chat(solo, history[:2], seed)
        assert partly.cached_tokens >= reused
        cached = chat(solo, history, seed)
        assert cached.cached_tokens >= min(reused, partly.prompt_tokens - 1)
        assert cached.content == uncached.content, seed
        again = chat(solo, history, seed)  # the whole prompt cached
        assert again.cached_tokens == again.prompt_tokens - 1
        assert again.content == uncached.content, seed


def test_it_stops_at_max_tokens(solo: BatchedEngine) -> None:
    _, finished = run_solo(solo, "Count from one to fifty in words.", seed=1, max_tokens=5)
    assert finished.finish_reason == "length"
    assert finished.completion_tokens == 5


def test_it_cuts_the_answer_at_a_stop_string(solo: BatchedEngine) -> None:
    free, _ = run_solo(solo, "Describe the sea.", seed=3, max_tokens=40)
    words = free.split()
    assert len(words) > 4, free
    stop = words[3]
    cut, finished = run_solo(solo, "Describe the sea.", seed=3, max_tokens=40, stop=(stop,))
    assert finished.finish_reason == "stop"
    assert cut == free[: free.index(stop)]


def test_it_begins_the_answer_with_the_response_prefix(solo: BatchedEngine) -> None:
    text, finished = run_solo(
        solo, "What is two plus two?", seed=5, max_tokens=20, response_prefix="The answer is"
    )
    assert text.startswith("The answer is")
    assert len(text) > len("The answer is")
    assert finished.completion_tokens > 0


def test_it_follows_a_grammar(solo: BatchedEngine) -> None:
    text, _ = run_solo(
        solo, "Is the sky blue?", seed=2, max_tokens=10, grammar='root ::= "yes" | "no"'
    )
    assert text in ("yes", "no")


def test_it_answers_valid_json_in_json_mode(solo: BatchedEngine) -> None:
    options = options_parse({"response_format": {"type": "json_object"}, "max_tokens": 200})
    _, finished = run_solo(
        solo,
        TOM_AS_JSON,  # an object that closes in a few tokens whatever the numerics
        temperature=0.0,
        max_tokens=200,
        grammar=options.sampling.grammar,
    )
    assert finished.finish_reason == "stop"
    assert json.loads(finished.content)["name"] == "Tom"


def test_it_aborts_within_a_token(solo: BatchedEngine) -> None:
    generation = solo.submit(
        GenerationRequest(
            messages=[{"role": "user", "content": "Write a long essay about rivers."}],
            sampling=Sampling(seed=1, max_tokens=400),
        )
    )
    events = generation.events()
    first = next(events)
    assert isinstance(first, TextDelta)
    generation.abort()
    rest = list(events)
    finished = rest[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "aborted"
    assert finished.completion_tokens <= 3
    assert finished.content.startswith(first.text)


def test_it_refuses_a_prompt_longer_than_the_context(model: LlamaModel) -> None:
    small = small_engine(model, 256)
    with pytest.raises(PromptTooLong) as caught:
        list(
            small.submit(
                GenerationRequest(messages=[{"role": "user", "content": "word " * 400}])
            ).events()
        )
    small.scheduler.close()
    assert caught.value.n_ctx == 256
    assert caught.value.prompt_tokens > 256
    assert "context holds 256" in str(caught.value)


def test_it_completes_a_raw_prompt_without_a_template(solo: BatchedEngine) -> None:
    request = GenerationRequest(
        prompt="The capital of France is", sampling=Sampling(seed=1, max_tokens=8, temperature=0.0)
    )
    events = list(solo.submit(request).events())
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.prompt_tokens == len(solo.tokenize("The capital of France is", add_bos=True))
    assert finished.completion_tokens >= 1


def turns(count: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "Be brief."}]
    for index in range(count):
        messages.append({"role": "user", "content": f"Question number {index} about rivers?"})
        messages.append({"role": "assistant", "content": f"Answer number {index}: they flow."})
    messages.append({"role": "user", "content": "And the newest question?"})
    return messages


def test_it_leaves_out_the_fewest_oldest_turns_measuring_the_history_a_few_times(
    model: LlamaModel,
) -> None:
    small = small_engine(model, 512)
    formatted = []
    measure = small._chat_tokens

    def counting(messages: list[dict[str, str]], sampling: Sampling) -> list[int]:
        formatted.append(len(messages))
        return measure(messages, sampling)

    small._chat_tokens = counting  # type: ignore[method-assign]
    messages = turns(400)
    request = GenerationRequest(messages=messages, sampling=Sampling(max_tokens=64))
    tokens, trimmed = small.fit(request)
    assert trimmed is not None
    assert len(tokens) + 64 <= small.n_ctx
    # The fewest: keeping one more turn would not leave the room asked for.
    one_more = [messages[0], *messages[1:][trimmed.turns - 1 :]]
    assert len(measure(one_more, Sampling())) + 64 > small.n_ctx
    assert trimmed.tokens == len(measure(messages, Sampling())) - len(tokens)
    assert len(formatted) <= 14, "bisection, not one try per turn"
    # A stop is heard while a long history is measured.
    generation = small.submit(GenerationRequest(messages=turns(2000)))
    generation.abort()
    (finished,) = list(generation.events())
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "aborted"
    small.scheduler.close()
