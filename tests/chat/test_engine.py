"""The generation engine on the real default model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from django.conf import settings

from chat.engine import Engine, Finished, GenerationRequest, PromptTooLong, Sampling, TextDelta
from chat.options import options_parse
from wizweb.default_model import default_model_path


def model_file() -> Path:
    return default_model_path(Path(settings.MODELS_DIR))


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    llama = llama_cpp.Llama(model_path=str(model_file()), n_ctx=2048, verbose=False)
    yield Engine(llama, chat_template=llama.metadata["tokenizer.chat_template"])
    llama.close()


def run(engine: Engine, content: str, **sampling: object) -> tuple[str, Finished]:
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
    return finished.content, finished


def test_it_gives_the_same_text_for_the_same_seed(engine: Engine) -> None:
    first, _ = run(engine, "Tell me a story.", seed=11, temperature=1.0, max_tokens=30)
    second, _ = run(engine, "Tell me a story.", seed=11, temperature=1.0, max_tokens=30)
    other, _ = run(engine, "Tell me a story.", seed=12, temperature=1.0, max_tokens=30)
    assert first == second
    assert first != other


def chat(engine: Engine, messages: list[dict[str, str]], seed: int) -> Finished:
    request = GenerationRequest(
        messages=messages, sampling=Sampling(seed=seed, temperature=1.0, max_tokens=16)
    )
    finished = list(engine.submit(request).events())[-1]
    assert isinstance(finished, Finished)
    return finished


def test_it_gives_the_same_text_for_a_seed_whether_the_prefix_was_cached_or_not(
    engine: Engine,
) -> None:
    # Where llama.cpp's kernels make split evaluation inexact, nothing is reused instead.
    reused = 20 if engine.reuses_prefix else 0
    history = [
        {"role": "system", "content": "You are a friendly guide to the sea."},
        {"role": "user", "content": "What lives in a rock pool?"},
        {"role": "assistant", "content": "Crabs, anemones, limpets and small fish."},
        {"role": "user", "content": "Which of them is the oldest kind?"},
    ]
    unrelated = [{"role": "user", "content": "Name three mountains."}]
    for seed in range(20):
        chat(engine, unrelated, seed)  # nothing of the history is left in the context
        uncached = chat(engine, history, seed)
        assert uncached.cached_tokens < 10  # the template's first tokens, at most
        # The first turns are still in the context: only the rest is evaluated.
        partly = chat(engine, history[:2], seed)
        assert partly.cached_tokens >= reused
        cached = chat(engine, history, seed)
        assert cached.cached_tokens >= min(reused, partly.prompt_tokens - 1)
        assert cached.content == uncached.content, seed
        again = chat(engine, history, seed)  # the whole prompt cached
        assert again.cached_tokens == (again.prompt_tokens - 1 if reused else 0)
        assert again.content == uncached.content, seed


def test_it_stops_at_max_tokens(engine: Engine) -> None:
    _, finished = run(engine, "Count from one to fifty in words.", seed=1, max_tokens=5)
    assert finished.finish_reason == "length"
    assert finished.completion_tokens == 5


def test_it_cuts_the_answer_at_a_stop_string(engine: Engine) -> None:
    free, _ = run(engine, "Describe the sea.", seed=3, max_tokens=40)
    words = free.split()
    assert len(words) > 4, free
    stop = words[3]
    cut, finished = run(engine, "Describe the sea.", seed=3, max_tokens=40, stop=(stop,))
    assert finished.finish_reason == "stop"
    assert cut == free[: free.index(stop)]


def test_it_begins_the_answer_with_the_response_prefix(engine: Engine) -> None:
    text, finished = run(
        engine, "What is two plus two?", seed=5, max_tokens=20, response_prefix="The answer is"
    )
    assert text.startswith("The answer is")
    assert len(text) > len("The answer is")
    assert finished.completion_tokens > 0


def test_it_follows_a_grammar(engine: Engine) -> None:
    text, _ = run(
        engine, "Is the sky blue?", seed=2, max_tokens=10, grammar='root ::= "yes" | "no"'
    )
    assert text in ("yes", "no")


def test_it_answers_valid_json_in_json_mode(engine: Engine) -> None:
    options = options_parse({"response_format": {"type": "json_object"}, "max_tokens": 200})
    _, finished = run(
        engine,
        "Give me a JSON object describing a cat.",
        seed=5,
        temperature=0.3,
        max_tokens=200,
        grammar=options.sampling.grammar,
    )
    assert finished.finish_reason == "stop"
    assert isinstance(json.loads(finished.content), dict)


def test_it_aborts_within_a_token(engine: Engine) -> None:
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
    rest = list(events)
    finished = rest[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "aborted"
    assert finished.completion_tokens <= 3
    assert finished.content.startswith(first.text)


def test_it_refuses_a_prompt_longer_than_the_context() -> None:
    llama = llama_cpp.Llama(model_path=str(model_file()), n_ctx=256, verbose=False)
    small = Engine(llama, chat_template=llama.metadata["tokenizer.chat_template"])
    with pytest.raises(PromptTooLong) as caught:
        list(
            small.submit(
                GenerationRequest(messages=[{"role": "user", "content": "word " * 400}])
            ).events()
        )
    llama.close()
    assert caught.value.n_ctx == 256
    assert caught.value.prompt_tokens > 256
    assert "context holds 256" in str(caught.value)


def test_it_completes_a_raw_prompt_without_a_template(engine: Engine) -> None:
    request = GenerationRequest(
        prompt="The capital of France is", sampling=Sampling(seed=1, max_tokens=8, temperature=0.0)
    )
    events = list(engine.submit(request).events())
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.prompt_tokens == len(engine.llama.tokenize(b"The capital of France is"))
    assert finished.completion_tokens >= 1


def turns(count: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "Be brief."}]
    for index in range(count):
        messages.append({"role": "user", "content": f"Question number {index} about rivers?"})
        messages.append({"role": "assistant", "content": f"Answer number {index}: they flow."})
    messages.append({"role": "user", "content": "And the newest question?"})
    return messages


def test_it_leaves_out_the_fewest_oldest_turns_measuring_the_history_a_few_times() -> None:
    llama = llama_cpp.Llama(model_path=str(model_file()), n_ctx=512, verbose=False)
    small = Engine(llama, chat_template=llama.metadata["tokenizer.chat_template"])
    formatted = []
    measure = small._chat_tokens

    def counting(messages: list[dict[str, str]], prefix: str) -> list[int]:
        formatted.append(len(messages))
        return measure(messages, prefix)

    small._chat_tokens = counting  # type: ignore[method-assign]
    messages = turns(400)
    request = GenerationRequest(messages=messages, sampling=Sampling(max_tokens=64))
    tokens, trimmed = small.fit(request)
    assert trimmed is not None
    assert len(tokens) + 64 <= small.n_ctx
    # The fewest: keeping one more turn would not leave the room asked for.
    one_more = [messages[0], *messages[1:][trimmed.turns - 1 :]]
    assert len(measure(one_more, "")) + 64 > small.n_ctx
    assert trimmed.tokens == len(measure(messages, "")) - len(tokens)
    assert len(formatted) <= 14, "bisection, not one try per turn"
    # A stop is heard while a long history is measured.
    generation = small.submit(GenerationRequest(messages=turns(2000)))
    generation.abort()
    (finished,) = list(generation.events())
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "aborted"
    llama.close()
