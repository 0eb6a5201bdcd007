"""Hold N SSE streams open at once through a target, then measure while they are open.

Opens N connections (at most `batch` connecting at a time), sends one streamed completion on
each, and waits for each response's head and first event. Once all are open (or the deadline
passes), it calls `sample()` — the orchestrator reads the proxy's RSS there — and then closes
every connection (the upstream streams are cancelled). The upstream must pace its events slowly
(e.g. `--stream-interval-ms 1000`) so that the streams are still open when sampled.
"""

import asyncio
import time

import h1


async def _open_one(port, raw, sem, deadline, conns, errors):
    async with sem:
        try:
            left = max(0.1, deadline - time.monotonic())
            reader, writer = await asyncio.wait_for(h1.connect(port), left)
        except (OSError, asyncio.TimeoutError) as e:
            errors.append(repr(e))
            return
        conns.append(writer)
        try:
            writer.write(raw)
            await writer.drain()
            resp = h1.Response()
            left = max(0.1, deadline - time.monotonic())
            await asyncio.wait_for(h1.read_head(reader, resp), left)
            if resp.status != 200:
                errors.append(f"status {resp.status}")
                return
            left = max(0.1, deadline - time.monotonic())
            await asyncio.wait_for(h1.read_body(reader, resp, keep=False, first_chunk_only=True),
                                   left)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, h1.HttpError) as e:
            errors.append(repr(e))


async def hold_async(port, path, headers, body, n, sample, timeout=30.0, batch=100, settle=0.5):
    raw = h1.request_bytes("POST", path, port,
                           list(headers) + [("Content-Type", "application/json")], body)
    sem = asyncio.Semaphore(batch)
    conns, errors = [], []
    started = time.monotonic()
    deadline = started + timeout
    await asyncio.gather(*(_open_one(port, raw, sem, deadline, conns, errors) for _ in range(n)))
    opened_s = time.monotonic() - started
    await asyncio.sleep(settle)
    sampled = sample()
    for w in conns:
        w.close()
    await asyncio.sleep(0.2)
    return {
        "requested": n,
        "open": n - len(errors),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "open_all_s": round(opened_s, 3),
        "sample": sampled,
    }


def hold(port, path, headers, body, n, sample, timeout=30.0):
    return asyncio.run(hold_async(port, path, headers, body, n, sample, timeout))
