"""Analyze a document with the real `azure-ai-documentintelligence` SDK against an endpoint.

Usage: python docintel_check.py ENDPOINT [KEY]   (KEY also from DOCINTEL_KEY)

Runs `begin_analyze_document` for prebuilt-read with raw bytes and with a base64 source,
polls both to completion (following Operation-Location as the SDK does), lists the models
(DocumentIntelligenceAdministrationClient, following nextLink), and prints one JSON summary. Exits 1 with a message on any mismatch.
Plain http endpoints are fine for a key credential (azure-core refuses http only for bearer
tokens).
"""

import base64
import json
import os
import sys

from azure.ai.documentintelligence import (
    DocumentIntelligenceAdministrationClient,
    DocumentIntelligenceClient,
)
from azure.ai.documentintelligence.models import AnalyzeDocumentRequest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError


def fail(message):
    print(f"docintel_check: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) < 2:
        fail("usage: docintel_check.py ENDPOINT [KEY]")
    endpoint = sys.argv[1].rstrip("/")
    key = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("DOCINTEL_KEY", "")
    if not key:
        fail("no key: pass it as the second argument or in DOCINTEL_KEY")
    client = DocumentIntelligenceClient(endpoint, AzureKeyCredential(key))
    document = b"%PDF-1.4 emulated document body"

    poller = client.begin_analyze_document(
        "prebuilt-read", body=document, content_type="application/octet-stream", polling_interval=0.05
    )
    operation_id = poller.details["operation_id"]
    result = poller.result()
    if result.model_id != "prebuilt-read":
        fail(f"model_id {result.model_id!r}, expected 'prebuilt-read'")
    if not result.content:
        fail("the analyze result has no content")

    poller2 = client.begin_analyze_document(
        "prebuilt-layout",
        AnalyzeDocumentRequest(bytes_source=base64.b64decode(base64.b64encode(document))),
        polling_interval=0.05,
    )
    result2 = poller2.result()
    if result2.model_id != "prebuilt-layout":
        fail(f"model_id {result2.model_id!r}, expected 'prebuilt-layout'")

    admin = DocumentIntelligenceAdministrationClient(endpoint, AzureKeyCredential(key))
    models = [m.model_id for m in admin.list_models()]
    if "prebuilt-read" not in models or len(models) != len(set(models)):
        fail(f"unexpected model list {models}")

    print(
        json.dumps(
            {
                "operation_id": operation_id,
                "model_id": result.model_id,
                "content": result.content,
                "pages": len(result.pages or []),
                "second_model_id": result2.model_id,
                "models": models,
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except HttpResponseError as e:
        fail(f"HTTP {e.status_code}: {e.message}")
