"""Call Translator v3.0 the way its docs do, against an endpoint.

Usage: python translator_check.py ENDPOINT [KEY] [REGION] [--custom-domain]
(KEY also from TRANSLATOR_KEY, REGION from TRANSLATOR_REGION, default westeurope)

ENDPOINT is the global host (`/translate`, `/detect`, `/languages`) or, with
--custom-domain, a resource's custom domain (`/translator/text/v3.0/…`). Sends the key in
Ocp-Apim-Subscription-Key with Ocp-Apim-Subscription-Region. Prints one JSON summary;
exits 1 with a message on any mismatch.
"""

import json
import os
import sys

import requests


def fail(message):
    print(f"translator_check: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    custom = "--custom-domain" in sys.argv[1:]
    if not args:
        fail("usage: translator_check.py ENDPOINT [KEY] [REGION] [--custom-domain]")
    base = args[0].rstrip("/")
    key = args[1] if len(args) > 1 else os.environ.get("TRANSLATOR_KEY", "")
    region = args[2] if len(args) > 2 else os.environ.get("TRANSLATOR_REGION", "westeurope")
    if not key:
        fail("no key: pass it as the second argument or in TRANSLATOR_KEY")
    root = f"{base}/translator/text/v3.0" if custom else base
    headers = {
        "Ocp-Apim-Subscription-Key": key,
        "Ocp-Apim-Subscription-Region": region,
        "Content-Type": "application/json",
    }
    r = requests.post(
        f"{root}/translate",
        params=[("api-version", "3.0"), ("to", "de"), ("to", "fr")],
        headers=headers,
        json=[{"Text": "Hello, friend."}],
        timeout=10,
    )
    if r.status_code != 200:
        fail(f"translate: HTTP {r.status_code} {r.text!r}")
    body = r.json()
    targets = [t["to"] for t in body[0]["translations"]]
    if targets != ["de", "fr"]:
        fail(f"translate answered {body}")

    r = requests.post(
        f"{root}/detect", params={"api-version": "3.0"}, headers=headers, json=[{"Text": "Hallo Welt"}], timeout=10
    )
    if r.status_code != 200 or r.json()[0]["language"] != "de":
        fail(f"detect: HTTP {r.status_code} {r.text!r}")

    r = requests.get(f"{root}/languages", params={"api-version": "3.0"}, timeout=10)
    if r.status_code != 200 or "translation" not in r.json():
        fail(f"languages: HTTP {r.status_code} {r.text!r}")

    print(json.dumps({"translations": body[0]["translations"], "detected": "de", "languages": sorted(r.json()["translation"])}))


if __name__ == "__main__":
    try:
        main()
    except requests.RequestException as e:
        fail(f"request failed: {e}")
