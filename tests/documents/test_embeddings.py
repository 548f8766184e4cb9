"""Embeddings with the real default model on a real inference worker: every passage of an
indexed document gets a vector, fusion finds a passage that shares no word with the question,
a document deleted mid-embedding stops its job cleanly, a changed model embeds again; with the
setting off nothing is embedded and retrieval is the full text's; in a process without
llama.cpp (the web process) retrieval stays full text and never loads it. (SQLite, and
PostgreSQL with DATABASE_URL.)

Retrieval's question is embedded here, in the test process, with llama.cpp imported below: on
the inference worker, where chat.grounding calls it, llama.cpp is loaded the same way."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp  # noqa: F401 - this process embeds questions, as an inference worker does
import numpy as np
import pytest
from django.conf import settings
from django.test import override_settings
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from documents.embeddings import (
    EMBED_BATCH,
    document_embeddings_request,
    documents_to_embed,
    embed_job_id,
)
from documents.models import Collection, Document, Passage
from documents.retrieval import passages_for_question
from documents.selectors import passages_search
from documents.services import collection_create, document_delete, document_upload
from models_admin.models import LocalModel
from tests.conftest import SECOND_MODEL, start_worker
from tests.documents.conftest import FILLER, index_here, upload
from tests.processes import Child, child_env, python_run, wait_for
from wizweb.redis_server import redis_connection

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

# One passage each. The questions share no word with any of them (stop words aside), and the
# default model's vectors put each question nearest its own passage (checked when written:
# cosine 0.84 against at most 0.77 for the cat, 0.89 against 0.79 for the revenue).
PASSAGES = {
    "cat.txt": "The cat curled up on the windowsill and purred while the kitten chased a ball "
    "of yarn.",
    "revenue.txt": "Quarterly revenue grew by four percent, driven by sales in Europe and "
    "lower costs.",
    "router.txt": "To reset the router, hold the button on the back for ten seconds until the "
    "lights blink.",
    "dough.txt": "Add two cups of flour, one egg and a pinch of salt, then knead the dough for "
    "five minutes.",
    "fever.txt": "The patient was given antibiotics for the infection and the fever went down "
    "overnight.",
}
PET_QUESTION = "Which pets like to nap in the sun?"
MONEY_QUESTION = "How did the company's earnings do?"


@pytest.fixture
def embedding_on(default_model: LocalModel) -> Iterator[LocalModel]:
    with override_settings(WIZ_EMBEDDING_MODEL=default_model.name):
        yield default_model


@pytest.fixture
def background_queue() -> Iterator[Queue]:
    queue = Queue(settings.BACKGROUND_QUEUE, connection=redis_connection())
    queue.empty()
    yield queue
    queue.empty()


def add(user: Any, collection: Collection | None, name: str, text: str) -> Document:
    document = document_upload(user=user, collection=collection, upload=upload(name, text.encode()))
    return index_here(document)


def embedded(document: Document, model: str) -> bool:
    passages = Passage.objects.filter(document=document)
    return passages.exists() and not passages.exclude(embedding_model=model).exists()


def wait_embedded(document: Document, model: str, timeout: float = 300) -> None:
    wait_for(
        lambda: embedded(document, model),
        timeout=timeout,
        what=f"the passages of {document.name} to be embedded by {model}",
        interval=0.25,
    )


def vectors_of(document: Document) -> np.ndarray:
    blobs = Passage.objects.filter(document=document).order_by("ordinal")
    return np.stack([np.frombuffer(bytes(p.embedding), dtype=np.float32) for p in blobs])


def job_of(document: Document) -> Job:
    return Job.fetch(embed_job_id(document.pk), connection=redis_connection())


def test_every_passage_of_an_indexed_document_gets_a_vector_on_an_inference_worker(
    owner: Any, embedding_on: LocalModel, background_queue: Queue, inference_worker: Child
) -> None:
    text = " ".join(f"Step {n}: {FILLER}" for n in range(32))
    document = add(owner, None, "steps.txt", text)
    count = Passage.objects.filter(document=document).count()
    assert count > EMBED_BATCH  # embedded in more than one batch
    wait_embedded(document, embedding_on.name)
    vectors = vectors_of(document)
    assert vectors.shape == (count, embedding_on.metadata["embedding_length"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    job = job_of(document)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=30, what="done")
    assert job.origin == settings.BACKGROUND_QUEUE
    assert job.worker_name == "test-inference"
    assert job.return_value() == f"document {document.pk}: {count} passages embedded"


@pytest.fixture
def five_files(
    owner: Any, embedding_on: LocalModel, background_queue: Queue, inference_worker: Child
) -> dict[str, Document]:
    collection = collection_create(user=owner, name="Odds and ends")
    documents = {name: add(owner, collection, name, text) for name, text in PASSAGES.items()}
    for document in documents.values():
        wait_embedded(document, embedding_on.name)
    return documents


def test_fusion_finds_a_passage_that_shares_no_word_with_the_question(
    owner: Any, outsider: Any, five_files: dict[str, Document]
) -> None:
    collection = five_files["cat.txt"].collection_id
    for question, name in ((PET_QUESTION, "cat.txt"), (MONEY_QUESTION, "revenue.txt")):
        assert passages_search(user=owner, question=question, collections=[collection]) == []
        hits = passages_for_question(user=owner, question=question, collections=[collection])
        assert hits[0].document.name == name
        assert hits[0].score > hits[1].score
    # Access as the full text has it: an outsider finds nothing, asked for the collection or not.
    assert passages_for_question(user=outsider, question=PET_QUESTION) == []
    assert (
        passages_for_question(user=outsider, question=PET_QUESTION, collections=[collection]) == []
    )
    # Narrowed to one document, only it.
    router = five_files["router.txt"]
    hits = passages_for_question(user=owner, question=PET_QUESTION, documents=[router.pk])
    assert [h.document.pk for h in hits] == [router.pk]


def test_a_passage_both_rankings_like_comes_first(
    owner: Any, five_files: dict[str, Document]
) -> None:
    # "kitten" is in the cat's passage only: the full text finds it, the vectors too.
    collection = five_files["cat.txt"].collection_id
    question = f"{PET_QUESTION} A kitten?"
    text = passages_search(user=owner, question=question, collections=[collection])
    assert [h.document.name for h in text] == ["cat.txt"]
    fused = passages_for_question(user=owner, question=question, collections=[collection])
    assert fused[0].document.name == "cat.txt"
    assert fused[0].score == pytest.approx(2 / 61)


def test_a_changed_embedding_model_embeds_again(
    owner: Any, second_model: LocalModel, five_files: dict[str, Document]
) -> None:
    cat = five_files["cat.txt"]
    before = vectors_of(cat)
    ids = sorted(d.pk for d in five_files.values())
    with override_settings(WIZ_EMBEDDING_MODEL=SECOND_MODEL):
        # The old model's vectors are noticed: every document needs the new one's.
        assert documents_to_embed(ids, SECOND_MODEL) == ids
        # A question over them queues their jobs (and is answered meanwhile by what there is).
        passages_for_question(user=owner, question=PET_QUESTION, documents=ids)
        for document in five_files.values():
            wait_embedded(document, SECOND_MODEL)
        hits = passages_for_question(user=owner, question=PET_QUESTION, documents=[cat.pk])
        assert [h.document.pk for h in hits] == [cat.pk]
    # The second model is the same weights under another name: the same vectors again.
    assert np.allclose(vectors_of(cat), before, atol=1e-4)


def test_a_document_deleted_mid_embedding_stops_its_job_cleanly(
    owner: Any, embedding_on: LocalModel, background_queue: Queue, inference_worker: Child
) -> None:
    text = " ".join(f"Section {n}: {FILLER}" for n in range(60))  # about 20 passages
    document = add(owner, None, "long.txt", text)
    total = Passage.objects.filter(document=document).count()
    wait_for(
        lambda: Passage.objects.filter(document=document, embedding_model__isnull=False).exists(),
        timeout=300,
        what="the first passages to be embedded",
        interval=0.05,
    )
    job = job_of(document)
    document_delete(user=owner, document=document)
    wait_for(
        lambda: job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED),
        timeout=120,
        what="the embedding job to end",
    )
    assert job.get_status() == JobStatus.FINISHED, job.latest_result()
    embedded_count = int(str(job.return_value()).split(": ")[1].split()[0])
    assert 0 < embedded_count < total
    assert not Passage.objects.filter(document_id=document.pk).exists()


def test_with_the_setting_off_nothing_is_embedded_and_retrieval_is_the_full_text(
    owner: Any, background_queue: Queue, default_model: LocalModel
) -> None:
    assert settings.WIZ_EMBEDDING_MODEL == ""
    collection = collection_create(user=owner, name="Odds and ends")
    documents = [add(owner, collection, name, text) for name, text in PASSAGES.items()]
    assert document_embeddings_request(document_ids=[d.pk for d in documents]) == []
    assert background_queue.count == 0
    for document in documents:
        with pytest.raises(NoSuchJobError):
            job_of(document)
    assert not Passage.objects.filter(embedding__isnull=False).exists()
    for question in (PET_QUESTION, "kitten yarn", "revenue in Europe", "reset dough fever"):
        full_text = passages_search(user=owner, question=question, collections=[collection])
        hits = passages_for_question(user=owner, question=question, collections=[collection])
        assert [(h.passage.pk, h.score) for h in hits] == [
            (h.passage.pk, h.score) for h in full_text
        ]


WITHOUT_LLAMA = """
import sys
import django
django.setup()
from django.contrib.auth.models import User
from documents.retrieval import passages_for_question
user = User.objects.get(username="alice")
hits = passages_for_question(user=user, question=sys.argv[1])
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "llama_cpp")
print(",".join(h.document.name for h in hits) + "|" + ",".join(loaded))
"""


def test_in_a_process_without_llama_cpp_retrieval_is_the_full_text_and_loads_nothing(
    owner: Any, five_files: dict[str, Document], embedding_on: LocalModel
) -> None:
    env = child_env(DJANGO_SETTINGS_MODULE="wizweb.settings", WIZ_EMBEDDING_MODEL=embedding_on.name)
    for question, found in ((PET_QUESTION, ""), ("kitten", "cat.txt")):
        result = python_run(WITHOUT_LLAMA, question, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{found}|"


def test_a_worker_asked_to_stop_ends_its_embedding_job_after_the_batch_in_hand(
    owner: Any, second_model: LocalModel, background_queue: Queue, log_dir: Path
) -> None:
    # Pinned to the second model, which embeds: the job goes to this worker's own queue.
    child = start_worker("embed-stop", log_dir, model=SECOND_MODEL)
    try:
        with override_settings(WIZ_EMBEDDING_MODEL=SECOND_MODEL):
            text = " ".join(f"Section {n}: {FILLER}" for n in range(60))  # about 20 passages
            document = add(owner, None, "long.txt", text)
            total = Passage.objects.filter(document=document).count()
            wait_for(
                lambda: Passage.objects.filter(
                    document=document, embedding_model=SECOND_MODEL
                ).exists(),
                timeout=300,
                what="the first passages to be embedded",
                interval=0.05,
            )
            job = job_of(document)
            assert job.origin == f"{settings.BACKGROUND_QUEUE}.m{second_model.pk}"
            child.process.send_signal(signal.SIGTERM)  # a warm shutdown
            assert child.process.wait(timeout=60) == 0
    finally:
        child.stop()
    assert job.get_status(refresh=True) == JobStatus.FINISHED, job.latest_result()
    left = Passage.objects.filter(document=document).exclude(embedding_model=SECOND_MODEL)
    assert 0 < left.count() < total


def test_a_worker_that_starts_embeds_what_was_indexed_before_the_setting(
    owner: Any, second_model: LocalModel, background_queue: Queue, log_dir: Path
) -> None:
    """Documents indexed while no embedding model was set (or embedded by another since) are
    queued by the next inference worker to start, not left to wait for a question."""
    document = add(owner, None, "cat.txt", PASSAGES["cat.txt"])  # the setting is off here
    assert documents_to_embed([document.pk], SECOND_MODEL) == [document.pk]
    child = start_worker(
        "embed-sweep", log_dir, model=SECOND_MODEL, WIZ_EMBEDDING_MODEL=SECOND_MODEL
    )
    try:
        wait_embedded(document, SECOND_MODEL)
    finally:
        child.stop()
    assert job_of(document).origin == f"{settings.BACKGROUND_QUEUE}.m{second_model.pk}"
