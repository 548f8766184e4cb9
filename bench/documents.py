"""Benchmark: a 300-page PDF from upload to searchable through the real documents worker, and
the retrieval time per question.

    .venv/bin/python bench/documents.py [--pages 300] [--queries 50]
    createdb -h 127.0.0.1 -U postgres wizweb_docs_bench && \
    WIZ_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/wizweb_docs_bench \
        .venv/bin/python bench/documents.py; dropdb -h 127.0.0.1 -U postgres wizweb_docs_bench

The PDF is written here with fpdf2 (about 450 words a page, a fact planted on one page). The
upload goes through the HTTP API (Django's test client, so the web side's checks are counted),
the worker is `rqworker documents --worker-class documents.worker.DocumentWorker` as `serve`
runs it. Printed: the PDF's size, the upload's time in the web process, the time from upload to
state `ready` (the worker's extraction, passages and index), its pages and passages, whether
the planted fact comes first, `passages_search`'s time per question (median, p95) over
`--queries` questions, and a chat turn's retrieval with the PDF attached: the
`passages_for_question` call plus the prompt's assembly (`chat.grounding.grounded_history`,
counting each passage with the default model's real tokenizer, as the worker does), per turn.
Nothing here is asserted.

With embeddings (unless `--no-embeddings`): WIZ_EMBEDDING_MODEL is the default model, a real
inference worker (`manage.py inference_worker`) takes the document's embedding job from the
background queue once it is ready; printed are the time from `ready` to every passage having
its vector (the embedder's load included), the worker's resident memory before and at most
during it, and `passages_for_question`'s time per question with fusion (the question embedded
in this process, as on a worker) beside the question's embedding alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from environment import SHARED_MODELS_DIR, bench_django  # noqa: E402

FILLER = (
    "This page describes routine laboratory housekeeping: benches are wiped, pipettes are "
    "calibrated, glassware is rinsed, and the inventory sheet is updated before leaving. "
)
FACT = "The combination of the cryogenic freezer in room B14 is 4471, set by Dr. Okonkwo."
QUESTIONS = [
    "What is the combination of the cryogenic freezer?",
    "How are pipettes calibrated?",
    "Who set the freezer code in room B14?",
    "inventory sheet before leaving",
    "What happens to the glassware?",
]


def pdf_bytes(pages: int, fact_page: int) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    for number in range(1, pages + 1):
        pdf.add_page()
        text = f"Page {number}. " + FILLER * 16 + (FACT if number == fact_page else "")
        pdf.multi_cell(0, 5, text)
    return bytes(pdf.output())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--no-embeddings", action="store_true")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="wiz-bench-docs-"))
    # The shared models dir, as the other benchmarks: the default model is the embedding one.
    redis, model_path = bench_django(data_dir, SHARED_MODELS_DIR)
    try:
        run(args.pages, args.queries, data_dir, model_path, embeddings=not args.no_embeddings)
    finally:
        redis.stop()  # type: ignore[attr-defined]
        shutil.rmtree(data_dir, ignore_errors=True)


def percentiles(timings: list[float]) -> str:
    timings = sorted(timings)
    p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
    return f"median {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms over {len(timings)}"


def turn_timings(user: object, document: object, queries: int, model_path: Path) -> None:
    """A chat turn with the PDF attached, assembled as the worker assembles it."""
    from django.conf import settings

    from chat.grounding import grounded_history
    from chat.models import Conversation, Message
    from documents.retrieval import passages_for_question
    from inference.requests import FALLBACK_CHAT_TEMPLATE
    from inference.tokens import FileTokens
    from models_admin.local_models import localmodel_register_default

    counter = FileTokens(
        model_path,
        n_ctx=settings.WIZ_MAX_CONTEXT,
        max_tokens=settings.WIZ_DEFAULT_MAX_TOKENS,
        chat_template=localmodel_register_default().chat_template or FALLBACK_CHAT_TEMPLATE,
    )
    conversation = Conversation.objects.create(owner=user, title="bench")
    turn = Message.objects.create(
        conversation=conversation,
        role="user",
        content=QUESTIONS[0],
        attachments={"documents": [document.pk], "collections": []},  # type: ignore[attr-defined]
    )
    answer = Message.objects.create(conversation=conversation, parent=turn, role="assistant")
    search, whole = [], []
    cited = 0
    for i in range(queries):
        question = QUESTIONS[i % len(QUESTIONS)]
        Message.objects.filter(pk=turn.pk).update(content=question)
        message = Message.objects.select_related("conversation__owner").get(pk=answer.pk)
        began = time.perf_counter()
        passages_for_question(user=user, question=question, documents=[document.pk], limit=16)  # type: ignore[arg-type, attr-defined]
        search.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        grounded = grounded_history(message, counter)
        whole.append((time.perf_counter() - began) * 1000)
        cited = len(grounded.citations)
    prompt_tokens = counter.turns(grounded.turns)
    print(f"chat turn, passages_for_question alone (limit 16): {percentiles(search)}")
    print(
        f"chat turn, retrieval + assembly (grounded_history): {percentiles(whole)}; "
        f"{cited} passages, a prompt of {prompt_tokens} tokens (n_ctx {counter.n_ctx})"
    )


def run(pages: int, queries: int, data_dir: Path, model_path: Path, *, embeddings: bool) -> None:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import connection
    from django.test import Client, override_settings

    from documents.models import Document
    from documents.selectors import passages_search
    from documents.services import collection_create
    from models_admin.local_models import localmodel_register_default

    embedding_model = localmodel_register_default().name if embeddings else ""
    override_settings(WIZ_EMBEDDING_MODEL=embedding_model).enable()

    user = get_user_model().objects.create_user("bench")
    collection = collection_create(user=user, name="bench")
    started = time.perf_counter()
    content = pdf_bytes(pages, fact_page=pages * 2 // 3)
    print(f"database: {connection.vendor}; cores: {os.cpu_count()}")
    print(
        f"PDF: {pages} pages, {len(content) / 2**20:.1f} MB, written in "
        f"{time.perf_counter() - started:.1f} s"
    )

    env = dict(os.environ, PYTHONUNBUFFERED="1", WIZ_EMBEDDING_MODEL=embedding_model)
    log = (data_dir / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "rqworker", settings.DOCUMENT_QUEUE,
         "--worker-class", "documents.worker.DocumentWorker"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    inference = None
    if embeddings:
        inference = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "inference_worker", "--name", "bench"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        time.sleep(3)  # the worker's start (Django, rq) is not what is measured
        client = Client()
        client.force_login(user)
        upload = SimpleUploadedFile("bench.pdf", content)
        began = uploaded_at = time.perf_counter()
        response = client.post(f"/api/collections/{collection.pk}/documents/", {"file": upload})
        uploaded = time.perf_counter() - began
        assert response.status_code == 201, response.content
        document = Document.objects.get(pk=response.json()["id"])
        while document.state not in ("ready", "failed"):
            time.sleep(0.05)
            document.refresh_from_db()
        ready = time.perf_counter() - began
        print(f"upload (web process): {uploaded * 1000:.0f} ms")
        print(f"upload to searchable: {ready:.1f} s ({document.state}) {document.error}".rstrip())
        print(
            f"pages {document.pages}, passages {document.passages.count()}, "
            f"~{document.tokens:,} tokens"
        )
        hits = passages_search(user=user, question=QUESTIONS[0])
        print(
            f"fact first: {bool(hits) and hits[0].passage.page == pages * 2 // 3} "
            f"(page {hits[0].passage.page if hits else None})"
        )
        timings = []
        for i in range(queries):
            began = time.perf_counter()
            passages_search(user=user, question=QUESTIONS[i % len(QUESTIONS)])
            timings.append((time.perf_counter() - began) * 1000)
        print(f"retrieval per question: {percentiles(timings)}")
        turn_timings(user, document, queries, model_path)
        if inference is not None:
            embed(document, inference.pid, uploaded_at + ready, queries, pages)
    finally:
        for child in (worker, inference):
            if child is not None:
                child.terminate()
                child.wait(timeout=60)
        log.close()


def embed(document: object, worker_pid: int, ready_at: float, queries: int, pages: int) -> None:
    """The document's embedding on the inference worker, then retrieval with fusion."""
    import psutil
    from django.conf import settings

    from documents.models import Document, Passage

    assert isinstance(document, Document)
    worker = psutil.Process(worker_pid)
    rss_before = worker.memory_info().rss
    rss_most = rss_before
    model = settings.WIZ_EMBEDDING_MODEL
    total = Passage.objects.filter(document=document).count()
    missing = Passage.objects.filter(document=document).exclude(embedding_model=model)
    while missing.exists():
        rss_most = max(rss_most, worker.memory_info().rss)
        time.sleep(0.5)
    took = time.perf_counter() - ready_at
    print(
        f"embedding on the inference worker: {total} passages in {took:.1f} s from ready "
        f"({total / took:.1f} passages/s, {took / total * 1000:.0f} ms each)"
    )
    print(
        f"inference worker RSS: {rss_before / 2**20:.0f} MB before, at most "
        f"{rss_most / 2**20:.0f} MB while embedding"
    )
    import llama_cpp  # noqa: F401 - questions are embedded here, as on an inference worker

    from documents.embeddings import question_vector
    from documents.retrieval import passages_for_question

    user = document.owner
    hits = passages_for_question(user=user, question=QUESTIONS[0])  # loads the embedder
    print(
        f"fact first with fusion: {bool(hits) and hits[0].passage.page == pages * 2 // 3} "
        f"(page {hits[0].passage.page if hits else None})"
    )
    fused, alone = [], []
    for i in range(queries):
        question = QUESTIONS[i % len(QUESTIONS)]
        began = time.perf_counter()
        question_vector(question)
        alone.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        passages_for_question(user=user, question=question)
        fused.append((time.perf_counter() - began) * 1000)
    for name, timings in (("question embedding alone", alone), ("retrieval with fusion", fused)):
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
        print(
            f"{name}: median {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms over {queries}"
        )


if __name__ == "__main__":
    main()
