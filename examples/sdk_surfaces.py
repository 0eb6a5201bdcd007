"""The rest of the OpenAI surface through entra-proxy with the official Python SDK, via /v1 on
a deployment-API backend: the Responses API (plain and streamed), a multi-megabyte file upload,
an audio transcription, and a realtime session over WebSocket.

    pip install 'openai[realtime]'
    PROXY=http://127.0.0.1:8080 KEY=ep-... python3 examples/sdk_surfaces.py
"""
import io
import os

from openai import OpenAI

proxy = os.environ.get("PROXY", "http://127.0.0.1:8080")
key = os.environ["KEY"]
client = OpenAI(base_url=f"{proxy}/v1", api_key=key)

response = client.responses.create(model="gpt-4o", input="Say hello")
print("responses:", response.output_text)

kinds = [event.type for event in client.responses.create(model="gpt-4o", input="Say hello", stream=True)]
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
print("responses (streamed):", len(kinds), "events")

upload = os.urandom(3 * 1024 * 1024 + 17)
file = client.files.create(file=("batch.jsonl", io.BytesIO(upload)), purpose="batch")
assert file.bytes == len(upload) and file.purpose == "batch", file
print("files:", file.id, file.bytes, "bytes")

audio = io.BytesIO(b"RIFF" + bytes(64 * 1024))
transcript = client.audio.transcriptions.create(model="gpt-4o", file=("hello.wav", audio))
print("audio.transcriptions:", transcript.text)

# The realtime client moved from client.beta.realtime to client.realtime (GA) in openai 2.x.
realtime = getattr(client, "realtime", None) or client.beta.realtime
with realtime.connect(model="gpt-4o") as connection:
    first = connection.recv()
    assert first.type == "session.created", first
    connection.send({"type": "response.create"})
    for event in connection:
        if event.type == "response.done":
            break
print("realtime: session.created, response.done")
