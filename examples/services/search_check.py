"""Index and search documents with the real `azure-search-documents` SDK against an endpoint.

Usage: python search_check.py ENDPOINT [KEY] [INDEX]   (KEY also from SEARCH_KEY)

Creates (or updates) the index with SearchIndexClient, uploads 7 documents with SearchClient,
searches all of them and pages through every result (the SDK posts
`@search.nextPageParameters` back when a page is cut), searches a term, gets a document by
key and counts. Prints one JSON summary; exits 1 with a message on any mismatch. Plain http
endpoints are fine for a key credential.
"""

import json
import os
import sys

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import SearchableField, SearchIndex, SimpleField

DOCS = 7


def fail(message):
    print(f"search_check: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) < 2:
        fail("usage: search_check.py ENDPOINT [KEY] [INDEX]")
    endpoint = sys.argv[1].rstrip("/")
    key = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("SEARCH_KEY", "")
    index_name = sys.argv[3] if len(sys.argv) > 3 else "hotels"
    if not key:
        fail("no key: pass it as the second argument or in SEARCH_KEY")
    credential = AzureKeyCredential(key)

    index = SearchIndex(
        name=index_name,
        fields=[
            SimpleField(name="id", type="Edm.String", key=True),
            SearchableField(name="description", type="Edm.String"),
        ],
    )
    SearchIndexClient(endpoint, credential).create_or_update_index(index)

    client = SearchClient(endpoint, index_name, credential)
    docs = [
        {"id": str(i), "description": "blue sea view" if i % 2 == 0 else "red mountain view"}
        for i in range(DOCS)
    ]
    uploaded = client.upload_documents(documents=docs)
    if not all(r.succeeded for r in uploaded) or len(uploaded) != DOCS:
        fail(f"upload: {[(r.key, r.succeeded, r.status_code) for r in uploaded]}")

    results = client.search(search_text="*", include_total_count=True)
    pages = 0
    keys = []
    for page in results.by_page():
        pages += 1
        keys.extend(doc["id"] for doc in page)
    if sorted(keys) != sorted(d["id"] for d in docs):
        fail(f"paging returned keys {keys}, expected all {DOCS} once")
    total = results.get_count()
    if total != DOCS:
        fail(f"total count {total}, expected {DOCS}")

    blue = [doc["id"] for doc in client.search(search_text="blue")]
    if sorted(blue) != ["0", "2", "4", "6"]:
        fail(f"search 'blue' returned {blue}")

    got = client.get_document(key="3")
    if got["description"] != "red mountain view":
        fail(f"get_document returned {got}")
    count = client.get_document_count()
    if count != DOCS:
        fail(f"document count {count}, expected {DOCS}")

    print(json.dumps({"index": index_name, "pages": pages, "keys": keys, "total": total, "blue": blue, "count": count}))


if __name__ == "__main__":
    try:
        main()
    except HttpResponseError as e:
        fail(f"HTTP {e.status_code}: {e.message}")
