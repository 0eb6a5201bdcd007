"""Hold N SSE streams open at once through a target, keep reading them, and measure meanwhile.

One asyncio Protocol per connection (no StreamReader, no task per stream): it writes one
streamed completion, reads the response head, then counts the events that arrive (a blank
line ends each) until the upstream ends the stream or the holder closes it. At most `batch`
connections are being opened at any moment — fewer than the target's listen backlog, so the
opening burst never overflows it (the orchestrator checks the kernel's ListenOverflows too).

Once all are open (or the open deadline passes) and a settling second has passed, `sample()`
is called (the orchestrator reads the proxy's RSS and CPU there), the streams are held for
`hold_secs` while they keep dribbling, `sample()` is called again, and every connection is
closed. The events counted between the two samples show whether this client kept up with what
the upstream sends (N streams × one event per interval).
"""

import asyncio
import time

LOOPBACK = "127.0.0.1"


class _Stream(asyncio.Protocol):
    __slots__ = ("holder", "raw", "transport", "head", "head_done", "status", "events", "last",
                 "closed", "error")

    def __init__(self, holder, raw, head_done):
        self.holder = holder
        self.raw = raw
        self.transport = None
        self.head = b""
        self.head_done = head_done
        self.status = None
        self.events = 0
        self.last = 0
        self.closed = False
        self.error = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.raw)

    def data_received(self, data):
        if self.status is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    self._fail("response head too long")
                return
            line = self.head[:self.head.find(b"\r\n")].split(b" ")
            try:
                self.status = int(line[1])
            except (IndexError, ValueError):
                self._fail(f"bad status line {line!r}")
                return
            data = self.head[end + 4:]
            self.head = b""
            if not self.head_done.done():
                self.head_done.set_result(self.status)
        # Events end with a blank line; count "\n\n", including one split across two reads.
        n = data.count(b"\n\n")
        if data[:1] == b"\n" and self.last == 10:
            n += 1
        if data:
            self.last = data[-1]
        self.events += n
        self.holder.events += n

    def _fail(self, why):
        self.error = why
        if not self.head_done.done():
            self.head_done.set_exception(ConnectionError(why))
        self.transport.close()

    def connection_lost(self, exc):
        self.closed = True
        if not self.head_done.done():
            self.head_done.set_exception(ConnectionError(repr(exc) if exc else "closed"))


class Holder:
    def __init__(self):
        self.events = 0
        self.streams = []
        self.errors = []


async def _open_one(loop, holder, port, raw, sem, deadline):
    async with sem:
        left = deadline - time.monotonic()
        if left <= 0:
            holder.errors.append("open deadline passed")
            return
        head_done = loop.create_future()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Stream(holder, raw, head_done), LOOPBACK, port),
                left)
        except (OSError, asyncio.TimeoutError) as e:
            holder.errors.append(f"connect: {e!r}")
            return
        holder.streams.append(proto)
        try:
            status = await asyncio.wait_for(head_done, max(0.1, deadline - time.monotonic()))
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            holder.errors.append(f"head: {e!r}")
            return
        if status != 200:
            holder.errors.append(f"status {status}")


async def hold_async(port, raw, n, sample, hold_secs, open_secs, batch=100, settle=1.0):
    loop = asyncio.get_running_loop()
    holder = Holder()
    sem = asyncio.Semaphore(batch)
    started = time.monotonic()
    deadline = started + open_secs
    await asyncio.gather(*(_open_one(loop, holder, port, raw, sem, deadline) for _ in range(n)))
    opened_s = time.monotonic() - started
    await asyncio.sleep(settle)
    open_now = sum(1 for s in holder.streams if not s.closed and s.status == 200)
    cpu0 = time.process_time()
    ev0, t0 = holder.events, time.monotonic()
    first = sample()
    await asyncio.sleep(hold_secs)
    ev1, t1 = holder.events, time.monotonic()
    cpu1 = time.process_time()
    second = sample()
    still_open = sum(1 for s in holder.streams if not s.closed and s.status == 200)
    for s in holder.streams:
        if s.transport is not None:
            s.transport.close()
    await asyncio.sleep(0.5)
    errors = holder.errors
    return {
        "requested": n,
        "open": open_now,
        "open_at_end": still_open,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "open_all_s": round(opened_s, 2),
        "hold_s": round(t1 - t0, 2),
        "events_received": ev1 - ev0,
        "events_per_s": round((ev1 - ev0) / (t1 - t0), 1) if t1 > t0 else None,
        # This client's own CPU while holding (one Python thread: near 100% would mean it is
        # the bottleneck).
        "client_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1) if t1 > t0 else None,
        "first": first,
        "second": second,
    }


def hold(port, raw, n, sample, hold_secs=10.0, open_secs=60.0, batch=100):
    return asyncio.run(hold_async(port, raw, n, sample, hold_secs, open_secs, batch))
