"""/api/collections/, /api/documents/, /api/search/ with API keys or a session: the owner may
do everything, a member of a group the collection is shared with may read, search and
download, and an outsider gets 404 everywhere."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings

from documents.models import Collection, Document, Passage
from tests.documents.conftest import docx_bomb_bytes, index_here, pdf_bytes, upload
from wizweb.apikeys import apikey_create

pytestmark = pytest.mark.django_db


def client_of(user: Any) -> Client:
    secret = apikey_create(user=user, name="t").secret
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def post_file(client: Client, collection_id: int, name: str, content: bytes) -> Any:
    return client.post(
        f"/api/collections/{collection_id}/documents/", {"file": upload(name, content)}
    )


def test_the_owner_creates_lists_renames_and_deletes_collections(owner: Any) -> None:
    api = client_of(owner)
    created = api.post("/api/collections/", {"name": "Recipes"}, content_type="application/json")
    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["owner"], body["mine"]) == ("Recipes", "alice", True)
    assert body["shared"] == {"everyone": False, "groups": []}
    again = api.post("/api/collections/", {"name": "Recipes"}, content_type="application/json")
    assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_name"
    url = f"/api/collections/{body['id']}/"
    renamed = api.patch(url, {"name": "Cooking"}, content_type="application/json")
    assert renamed.json()["name"] == "Cooking" and renamed.json()["documents"] == []
    assert [c["name"] for c in api.get("/api/collections/").json()["results"]] == ["Cooking"]
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    assert api.post("/api/collections/", b"[", content_type="application/json").status_code == 400


def test_a_session_needs_the_csrf_token_to_change_things(owner: Any) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    refused = browser.post("/api/collections/", {"name": "x"}, content_type="application/json")
    assert refused.status_code == 403
    assert browser.get("/api/collections/").status_code == 200
    assert Client().get("/api/collections/").status_code == 401


def test_an_upload_is_queued_and_listed_with_its_state_and_progress(owner: Any) -> None:
    api = client_of(owner)
    collection = api.post("/api/collections/", {"name": "c"}, content_type="application/json")
    cid = collection.json()["id"]
    response = post_file(api, cid, "notes.pdf", pdf_bytes(["one", "two", "three"]))
    assert response.status_code == 201, response.content
    document = response.json()
    assert (document["name"], document["kind"], document["state"]) == ("notes.pdf", "pdf", "queued")
    assert document["progress"] == {"done": 0, "total": 0}
    index_here(Document.objects.get(pk=document["id"]))
    (listed,) = api.get(f"/api/collections/{cid}/documents/").json()["results"]
    assert (listed["state"], listed["pages"], listed["progress"]) == (
        "ready",
        3,
        {"done": 3, "total": 3},
    )
    detail = api.get(f"/api/documents/{document['id']}/").json()
    assert detail["tokens"] > 0 and detail["error"] == ""


def test_bad_uploads_answer_a_sentence_and_keep_nothing(owner: Any) -> None:
    api = client_of(owner)
    cid = api.post("/api/collections/", {"name": "c"}, content_type="application/json").json()["id"]
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    wrong = post_file(api, cid, "essay.txt", png)
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "unsupported_type"
    assert "by its content" in wrong.json()["error"]["message"]
    bomb = post_file(api, cid, "thesis.docx", docx_bomb_bytes())
    assert (bomb.status_code, bomb.json()["error"]["code"]) == (400, "zip_bomb")
    missing = api.post(f"/api/collections/{cid}/documents/", {})
    assert missing.json()["error"]["code"] == "no_file"
    with override_settings(WIZ_DOCUMENT_MAX_BYTES=100_000):
        large = post_file(api, cid, "big.txt", b"word " * 100_000)
        assert (large.status_code, large.json()["error"]["code"]) == (413, "file_too_large")
        small = post_file(api, cid, "small.txt", b"word " * 1000)
        assert small.status_code == 201
    with override_settings(WIZ_DOCUMENTS_MAX_BYTES_PER_USER=6000):
        over = post_file(api, cid, "more.txt", b"word " * 1000)
        assert (over.status_code, over.json()["error"]["code"]) == (413, "quota_exceeded")
    assert Document.objects.count() == 1


@pytest.fixture
def shared_document(staff: Any, shared_collection: Collection) -> Document:
    api = client_of(staff)
    response = post_file(api, shared_collection.pk, "centrifuge.txt", b"Balance the rotor.")
    return index_here(Document.objects.get(pk=response.json()["id"]))


def test_a_member_reads_searches_and_downloads_a_shared_collection_but_changes_nothing(
    member: Any, shared_collection: Collection, shared_document: Document
) -> None:
    api = client_of(member)
    cid, did = shared_collection.pk, shared_document.pk
    (listed,) = api.get("/api/collections/").json()["results"]
    assert (listed["name"], listed["mine"], listed["shared"]["groups"]) == (
        "Lab protocols",
        False,
        ["lab"],
    )
    assert [d["name"] for d in api.get(f"/api/collections/{cid}/").json()["documents"]] == [
        "centrifuge.txt"
    ]
    assert api.get(f"/api/documents/{did}/").status_code == 200
    download = api.get(f"/api/documents/{did}/file")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"Balance the rotor."
    assert "attachment" in download["Content-Disposition"]
    assert "centrifuge.txt" in download["Content-Disposition"]
    hits = api.get("/api/search/", {"q": "rotor?", "collection": cid}).json()["results"]
    assert [(h["document"]["name"], h["text"]) for h in hits] == [
        ("centrifuge.txt", "Balance the rotor.")
    ]
    for refused in (
        api.delete(f"/api/documents/{did}/"),
        api.delete(f"/api/collections/{cid}/"),
        api.patch(f"/api/collections/{cid}/", {"name": "x"}, content_type="application/json"),
        post_file(api, cid, "mine.txt", b"hello"),
    ):
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "not_owner"
    assert Document.objects.filter(pk=did).exists()


def test_an_outsider_gets_404_everywhere(
    outsider: Any, shared_collection: Collection, shared_document: Document
) -> None:
    api = client_of(outsider)
    cid, did = shared_collection.pk, shared_document.pk
    assert api.get("/api/collections/").json()["results"] == []
    for response in (
        api.get(f"/api/collections/{cid}/"),
        api.get(f"/api/collections/{cid}/documents/"),
        api.patch(f"/api/collections/{cid}/", {"name": "x"}, content_type="application/json"),
        api.delete(f"/api/collections/{cid}/"),
        post_file(api, cid, "x.txt", b"hello"),
        api.get(f"/api/documents/{did}/"),
        api.get(f"/api/documents/{did}/file"),
        api.delete(f"/api/documents/{did}/"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert api.get("/api/search/", {"q": "rotor"}).json()["results"] == []
    assert api.get("/api/search/", {"q": "rotor", "document": did}).json()["results"] == []
    assert Document.objects.filter(pk=did).exists()


def test_the_owner_deletes_a_document_with_its_passages(
    staff: Any, shared_document: Document, django_capture_on_commit_callbacks: Any
) -> None:
    api = client_of(staff)
    path = shared_document.path
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/documents/{shared_document.pk}/").status_code == 204
    assert not path.exists()
    assert not Passage.objects.filter(document_id=shared_document.pk).exists()
    assert api.get(f"/api/documents/{shared_document.pk}/").status_code == 404


def test_only_staff_share_and_only_with_groups_that_exist(
    owner: Any, staff: Any, member: Any
) -> None:
    mine = client_of(owner)
    cid = mine.post("/api/collections/", {"name": "c"}, content_type="application/json").json()[
        "id"
    ]
    share = {"share": {"everyone": True, "groups": []}}
    refused = mine.patch(f"/api/collections/{cid}/", share, content_type="application/json")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "not_owner")
    theirs = client_of(staff)
    sid = theirs.post("/api/collections/", {"name": "s"}, content_type="application/json").json()[
        "id"
    ]
    bad = theirs.patch(
        f"/api/collections/{sid}/", {"share": {"groups": "lab"}}, content_type="application/json"
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_share")
    ok = theirs.patch(
        f"/api/collections/{sid}/",
        {"share": {"everyone": False, "groups": ["lab"]}},
        content_type="application/json",
    )
    assert ok.json()["shared"] == {"everyone": False, "groups": ["lab"]}
    assert [c["name"] for c in client_of(member).get("/api/collections/").json()["results"]] == [
        "s"
    ]
