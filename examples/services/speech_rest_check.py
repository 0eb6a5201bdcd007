"""Call the Speech REST APIs the way the Speech docs and SDK samples do, against an endpoint.

Usage: python speech_rest_check.py ENDPOINT [KEY] [--custom-domain]   (KEY also from SPEECH_KEY)

ENDPOINT is a regional Speech listener (`{region}.tts/stt.speech.microsoft.com` and
`{region}.api.cognitive.microsoft.com` paths) or, with --custom-domain, a resource's custom
domain (paths under /tts and /stt). Steps: POST /sts/v1.0/issueToken with
Ocp-Apim-Subscription-Key; text to speech (SSML, X-Microsoft-OutputFormat) with
`Authorization: Bearer <that token>`; the voices list; short-audio speech to text with the
key. Prints one JSON summary; exits 1 with a message on any mismatch.
"""

import json
import os
import sys

import requests


def fail(message):
    print(f"speech_rest_check: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    custom = "--custom-domain" in sys.argv[1:]
    if not args:
        fail("usage: speech_rest_check.py ENDPOINT [KEY] [--custom-domain]")
    base = args[0].rstrip("/")
    key = args[1] if len(args) > 1 else os.environ.get("SPEECH_KEY", "")
    if not key:
        fail("no key: pass it as the second argument or in SPEECH_KEY")
    tts = f"{base}/tts" if custom else base
    stt = f"{base}/stt" if custom else base

    r = requests.post(
        f"{base}/sts/v1.0/issueToken",
        headers={"Ocp-Apim-Subscription-Key": key, "Content-type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    if r.status_code != 200:
        fail(f"issueToken: HTTP {r.status_code} {r.text!r}")
    token = r.text
    if token.count(".") != 2:
        fail(f"issueToken did not return a JWT: {token[:40]!r}")

    ssml = (
        "<speak version='1.0' xml:lang='en-US'><voice xml:lang='en-US' name='en-US-JennyNeural'>"
        "Hello from the emulator.</voice></speak>"
    )
    r = requests.post(
        f"{tts}/cognitiveservices/v1",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/ssml+xml",
            "X-Microsoft-OutputFormat": "riff-24khz-16bit-mono-pcm",
            "User-Agent": "speech_rest_check",
        },
        data=ssml.encode("utf-8"),
        timeout=10,
    )
    if r.status_code != 200:
        fail(f"text to speech: HTTP {r.status_code} {r.text!r}")
    audio = r.content
    if audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
        fail("text to speech did not return a RIFF/WAVE file")

    r = requests.get(f"{tts}/cognitiveservices/voices/list", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    if r.status_code != 200 or not isinstance(r.json(), list):
        fail(f"voices list: HTTP {r.status_code} {r.text!r}")
    voices = [v["ShortName"] for v in r.json()]

    r = requests.post(
        f"{stt}/speech/recognition/conversation/cognitiveservices/v1",
        params={"language": "en-US", "format": "simple"},
        headers={
            "Ocp-Apim-Subscription-Key": key,
            "Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000",
            "Accept": "application/json",
        },
        data=audio,
        timeout=10,
    )
    if r.status_code != 200:
        fail(f"speech to text: HTTP {r.status_code} {r.text!r}")
    recognized = r.json()
    if recognized.get("RecognitionStatus") != "Success" or not recognized.get("DisplayText"):
        fail(f"speech to text answered {recognized}")

    print(
        json.dumps(
            {
                "token_parts": token.count(".") + 1,
                "audio_bytes": len(audio),
                "voices": voices,
                "recognized": recognized["DisplayText"],
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except requests.RequestException as e:
        fail(f"request failed: {e}")
