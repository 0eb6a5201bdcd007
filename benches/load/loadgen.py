"""Fallback load generator (asyncio) for machines without wrk: same inputs, same JSON as wrk.lua.

Far slower and noisier than wrk (one Python thread drives every connection), so its numbers
are only good for the smoke run's "does every target answer" check; results.json records
which generator ran. C keep-alive connections, for D seconds, optionally paced to R requests/s
(one schedule shared by all connections, like wrk.lua's delay()).
"""

import asyncio
import time

import h1
from sse_ttfb import percentile


async def _conn(port, raw, stop_at, pace, out):
    try:
        reader, writer = await h1.connect(port)
    except (OSError, asyncio.TimeoutError):
        out["errors"]["connect"] += 1
        return
    try:
        while True:
            now = time.monotonic()
            if pace is not None:
                slot = max(pace["next"], now)
                pace["next"] = slot + pace["period"]
                if slot >= stop_at:
                    return
                if slot > now:
                    await asyncio.sleep(slot - now)
            elif now >= stop_at:
                return
            try:
                left = max(0.5, stop_at - time.monotonic() + 2.0)
                resp = await asyncio.wait_for(h1.exchange(reader, writer, raw, keep=False), left)
            except asyncio.TimeoutError:
                out["errors"]["timeout"] += 1
                return
            except (OSError, asyncio.IncompleteReadError, h1.HttpError):
                out["errors"]["read"] += 1
                return
            out["lat"].append((resp.t_done - resp.t_sent) / 1000.0)
            out["requests"] += 1
            if resp.status >= 400:
                out["errors"]["status"] += 1
            if not resp.keep_alive:
                writer.close()
                reader, writer = await h1.connect(port)
    finally:
        writer.close()


async def run_async(port, path, headers, body, connections, duration, rate=None):
    raw = h1.request_bytes("POST", path, port,
                           list(headers) + [("Content-Type", "application/json")], body)
    out = {"requests": 0, "lat": [],
           "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}}
    started = time.monotonic()
    stop_at = started + duration
    pace = {"next": started, "period": 1.0 / rate} if rate else None
    await asyncio.gather(*(_conn(port, raw, stop_at, pace, out) for _ in range(connections)))
    took = time.monotonic() - started
    lat = out["lat"]
    return {
        "requests": out["requests"],
        "duration_us": int(took * 1e6),
        "bytes": 0,
        "errors": out["errors"],
        "latency_us": {
            "min": min(lat) if lat else 0,
            "mean": sum(lat) / len(lat) if lat else 0,
            "max": max(lat) if lat else 0,
            "p50": percentile(lat, 50) or 0,
            "p90": percentile(lat, 90) or 0,
            "p99": percentile(lat, 99) or 0,
            "p999": percentile(lat, 99.9) or 0,
        },
    }


def run(port, path, headers, body, connections, duration, rate=None):
    return asyncio.run(run_async(port, path, headers, body, connections, duration, rate))
