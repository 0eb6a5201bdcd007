"""Time to first streamed byte: N streamed completions, a few at a time, over keep-alive.

For each request: t0 = just before the request is written; TTFB = first byte of the SSE body
(the first event), not the response head; also the head time and the whole stream's time.
Bounded by count and by a deadline. Usable as a module (`measure`) or a CLI that prints JSON:

    python3 sse_ttfb.py --port P --path '/openai/…' --header 'api-key: K' --n 40 --concurrency 4
"""

import argparse
import asyncio
import json
import sys
import time

import h1


def percentile(values, p):
    """Nearest-rank percentile of a list (None when empty)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summarize_us(values_ns):
    us = [v / 1000.0 for v in values_ns]
    return {
        "n": len(us),
        "p50": percentile(us, 50),
        "p90": percentile(us, 90),
        "p99": percentile(us, 99),
        "min": min(us) if us else None,
        "max": max(us) if us else None,
    }


async def _worker(port, raw, count, deadline, out):
    reader = writer = None
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                out["timeouts"] += 1
                return
            if writer is None:
                reader, writer = await h1.connect(port)
            left = max(0.1, deadline - time.monotonic())
            resp = await asyncio.wait_for(h1.exchange(reader, writer, raw, keep=True), left)
            if resp.status != 200 or not resp.t_first_byte:
                out["errors"] += 1
                out["statuses"][resp.status] = out["statuses"].get(resp.status, 0) + 1
            else:
                if b"data:" not in resp.body:
                    out["errors"] += 1
                    continue
                out["ttfb"].append(resp.t_first_byte - resp.t_sent)
                out["head"].append(resp.t_head - resp.t_sent)
                out["total"].append(resp.t_done - resp.t_sent)
            if not resp.keep_alive:
                writer.close()
                reader = writer = None
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, h1.HttpError) as e:
        out["errors"] += 1
        out["last_error"] = repr(e)
    finally:
        if writer is not None:
            writer.close()


async def measure_async(port, path, headers, body, n, concurrency, timeout):
    raw = h1.request_bytes("POST", path, port,
                           list(headers) + [("Content-Type", "application/json")], body)
    out = {"ttfb": [], "head": [], "total": [], "errors": 0, "timeouts": 0, "statuses": {},
           "last_error": None}
    deadline = time.monotonic() + timeout
    per = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    await asyncio.gather(*(_worker(port, raw, c, deadline, out) for c in per if c))
    return {
        "requests": n,
        "ok": len(out["ttfb"]),
        "errors": out["errors"] + out["timeouts"],
        "statuses": {str(k): v for k, v in out["statuses"].items()},
        "last_error": out["last_error"],
        "ttfb_us": summarize_us(out["ttfb"]),
        "head_us": summarize_us(out["head"]),
        "stream_us": summarize_us(out["total"]),
    }


def measure(port, path, headers, body, n=40, concurrency=4, timeout=30.0):
    return asyncio.run(measure_async(port, path, headers, body, n, concurrency, timeout))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--body", default='{"messages":[{"role":"user","content":"hi"}],"stream":true}')
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()
    headers = [tuple(x.strip() for x in h.split(":", 1)) for h in a.header]
    res = measure(a.port, a.path, headers, a.body.encode(), a.n, a.concurrency, a.timeout)
    json.dump(res, sys.stdout, indent=2)
    print()
    return 0 if res["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
