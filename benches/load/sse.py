"""The streamed chat completion of the `sse` variants, and an upstream that answers as Azure does.

A stream of CHUNKS `chat.completion.chunk` events in the shape Azure OpenAI sends them, then
`data: [DONE]`. Two shapes of the same stream:

- plain: what Azure sends when the request does not ask for usage;
- with usage: what it sends for `stream_options.include_usage = true`: every chunk carries
  `"usage":null` and a last chunk with `"choices":[]` carries the usage.

entra-proxy, for a key with `tokens_per_minute`, asks for usage when the client did not and
removes what asking added (docs/src/limits.md, "How usage is read"; src/forward/usage.rs): the
client of such a request must get the plain bytes exactly. A client that asks for usage itself
gets the stream with usage unchanged.

`write_bodies(dir)` writes both as files for the static nginx upstream (upstream.conf.tmpl).
`FaithfulUpstream` is a small HTTP/1.1 server (asyncio, in a thread) that picks the shape from
the request body as Azure does, sends one HTTP chunk per event, and records what it was sent:
the correctness check runs each target against it once, so what the static upstream stands in
for (it cannot read a request body) is checked against the rule it stands in for.
"""

import asyncio
import json
import os
import threading

CHUNKS = 200
ID = "chatcmpl-AzBench0000000000000000000000"
CREATED = 1733000000
MODEL = "gpt-4o-2024-08-06"
FINGERPRINT = "fp_b705f0c291"
PROMPT_TOKENS = 14
WORDS = ("The proxy reads every chunk of a streamed answer for its usage and passes the "
         "bytes on as they come so the client sees the stream Azure sent").split()


def _chunk(i, n, usage_null):
    if i == 0:
        delta = {"role": "assistant", "content": ""}
    elif i == n - 1:
        delta = {}
    else:
        delta = {"content": " " + WORDS[i % len(WORDS)]}
    obj = {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
           "system_fingerprint": FINGERPRINT,
           "choices": [{"index": 0, "delta": delta, "logprobs": None,
                        "finish_reason": "stop" if i == n - 1 else None}]}
    if usage_null:
        obj["usage"] = None
    return obj


def events(with_usage, n=CHUNKS):
    """The stream as a list of SSE events (bytes, each ending in a blank line)."""
    out = [b"data: " + json.dumps(_chunk(i, n, with_usage), separators=(",", ":")).encode()
           + b"\n\n" for i in range(n)]
    if with_usage:
        completion = n - 2
        out.append(b"data: " + json.dumps({
            "id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
            "system_fingerprint": FINGERPRINT, "choices": [],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion,
                      "total_tokens": PROMPT_TOKENS + completion}},
            separators=(",", ":")).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


def body(with_usage, n=CHUNKS):
    return b"".join(events(with_usage, n))


def removal(n=CHUNKS):
    """Bytes the proxy removes from the stream with usage (it must be exactly these)."""
    return len(body(True, n)) - len(body(False, n))


def write_bodies(directory, n=CHUNKS):
    """Writes plain.sse and usage.sse into `directory`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name, with_usage in (("plain", False), ("usage", True)):
        path = os.path.join(directory, f"{name}.sse")
        with open(path, "wb") as f:
            f.write(body(with_usage, n))
        paths[name] = path
    return paths


def asks_for_usage(request_body):
    try:
        req = json.loads(request_body)
    except ValueError:
        return False
    return isinstance(req, dict) and req.get("stream") is True \
        and isinstance(req.get("stream_options"), dict) \
        and req["stream_options"].get("include_usage") is True


class FaithfulUpstream:
    """Answers every POST with the stream, in the shape the request body asks for (as Azure
    does), one HTTP chunk per event; records (path, body) of every request. Loopback only."""

    def __init__(self, n=CHUNKS):
        self.n = n
        self.requests = []
        self.port = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the faithful upstream did not start")

    def _run(self):
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())

    async def _serve(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else ""
                length = 0
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v.strip())
                req_body = await reader.readexactly(length) if length else b""
                self.requests.append((path, req_body))
                evs = events(asks_for_usage(req_body), self.n)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n"
                             b"apim-request-id: 00000000-0000-0000-0000-000000000000\r\n\r\n")
                for ev in evs:
                    writer.write(b"%x\r\n" % len(ev) + ev + b"\r\n")
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def stop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
