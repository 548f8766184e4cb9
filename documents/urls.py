from __future__ import annotations

from django.urls import path

from documents import api, views

urlpatterns = [
    path("collections/", views.collections_page, name="collections"),
    path("api/collections/", api.collection_list, name="api-collections"),
    path("api/collections/<int:collection_id>/", api.collection_detail, name="api-collection"),
    path(
        "api/collections/<int:collection_id>/documents/",
        api.collection_documents,
        name="api-collection-documents",
    ),
    path("api/documents/", api.document_list, name="api-documents"),
    path("api/documents/<int:document_id>/", api.document_detail, name="api-document"),
    path("api/documents/<int:document_id>/file", api.document_file, name="api-document-file"),
    path("api/search/", api.search, name="api-search"),
]
