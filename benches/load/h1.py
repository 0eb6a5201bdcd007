"""A minimal HTTP/1.1 client on asyncio streams, for the benchmark's own clients.

Standard library only (the smoke run has no pip). Keep-alive connections, Content-Length and
chunked bodies, and timestamps (time.perf_counter_ns) for the moments that matter: request
written, response head read, first body byte read, body complete. Loopback only: callers pass
127.0.0.1 and a port, never a host name.
"""

import asyncio
import time

LOOPBACK = "127.0.0.1"


class HttpError(Exception):
    """The server closed early or sent something this client does not understand."""


def request_bytes(method, path, port, headers, body=b""):
    """Serializes one request; `headers` is a list of (name, value)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}:{port}"]
    for name, value in headers:
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Response:
    """What one request got, with its timestamps in nanoseconds (perf_counter_ns)."""

    __slots__ = ("status", "headers", "body", "t_sent", "t_head", "t_first_byte", "t_done",
                 "keep_alive")

    def __init__(self):
        self.status = 0
        self.headers = {}
        self.body = b""
        self.t_sent = 0
        self.t_head = 0
        self.t_first_byte = 0
        self.t_done = 0
        self.keep_alive = True


async def connect(port, timeout=5.0):
    return await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), timeout)


async def read_head(reader, resp):
    head = await reader.readuntil(b"\r\n\r\n")
    resp.t_head = time.perf_counter_ns()
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"bad status line {lines[0]!r}")
    resp.status = int(parts[1])
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        resp.headers[name.strip().lower()] = value.strip()
    if resp.headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
        resp.keep_alive = False


async def read_body(reader, resp, keep=True, first_chunk_only=False):
    """Reads the body; with `first_chunk_only`, returns after the first body bytes arrive."""
    chunks = []
    te = resp.headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailers (none expected) end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            data = await reader.readexactly(size + 2)
            if not resp.t_first_byte:
                resp.t_first_byte = time.perf_counter_ns()
            if keep:
                chunks.append(data[:-2])
            if first_chunk_only:
                return
    elif "content-length" in resp.headers:
        n = int(resp.headers["content-length"])
        if n:
            first = await reader.read(min(n, 65536))
            if not first:
                raise HttpError("connection closed inside the body")
            resp.t_first_byte = time.perf_counter_ns()
            if first_chunk_only:
                return
            rest = await reader.readexactly(n - len(first)) if n > len(first) else b""
            if keep:
                chunks.append(first + rest)
    else:
        resp.keep_alive = False
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if not resp.t_first_byte:
                resp.t_first_byte = time.perf_counter_ns()
                if first_chunk_only:
                    return
            if keep:
                chunks.append(data)
    resp.t_done = time.perf_counter_ns()
    resp.body = b"".join(chunks)


async def exchange(reader, writer, raw, keep=True):
    """Writes one serialized request and reads the whole answer."""
    resp = Response()
    resp.t_sent = time.perf_counter_ns()
    writer.write(raw)
    await writer.drain()
    await read_head(reader, resp)
    await read_body(reader, resp, keep=keep)
    return resp


def simple_sync(method, port, path, headers=(), body=b"", timeout=5.0):
    """One request on a fresh connection, blocking (callable inside a running event loop)."""
    import http.client

    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        resp = Response()
        resp.t_sent = time.perf_counter_ns()
        conn.request(method, path, body=body or None, headers=dict(headers))
        r = conn.getresponse()
        resp.t_head = time.perf_counter_ns()
        resp.status = r.status
        resp.headers = {k.lower(): v for k, v in r.getheaders()}
        resp.body = r.read()
        resp.t_done = time.perf_counter_ns()
        return resp
    finally:
        conn.close()
