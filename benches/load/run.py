#!/usr/bin/env python3
"""The load benchmark: direct vs entra-proxy vs nginx vs LiteLLM, one machine, one run.

Started by benches/load.sh (which builds, installs in full mode, and puts this in a loopback-only
network namespace when it can). Standard library only.

For each upstream variant it starts the upstream, the targets in front of it, and measures every
target with the same request (same path, same body, same concurrency), repetitions interleaved
(rep 1: A B C D, rep 2: B C D A, …: the order turns, so a drift over the run favours no
target). The identity always comes from the emulator.

- fast: nginx answering a static chat completion (a process of its own): what is left is each
  proxy's own cost. sse / sse-usage: the same nginx answering a streamed chat completion of
  200 chunks (sse.py), without and with the usage chunk. instant, latency50, streaming: the
  emulator (instant, 50 ms, a 20-event stream).
- entra-proxy's key has tokens_per_minute (--key tpm, the default): every answer is metered and
  charged, and a streamed request that does not ask for usage is sent with include_usage.

Each variant:
- correctness, apart from the load: a sample of answers through every target, status and body
  compared with what the upstream sends (sse: byte for byte, less exactly what the proxy
  documents it removes); once per run the sse answers are also checked against an upstream that
  reads the request body as Azure does (sse.FaithfulUpstream);
- throughput: plain wrk -t<CPUs> -c<C> for <T> s (throughput.lua builds the request once and
  runs no Lua per request or response), requests/s; utime+stime of the target's process tree (every
  nginx worker) over that run → CPU µs per request (and per streamed chunk); wrk's own CPU is
  the generator's, never counted;
- the generator check: direct (the same wrk against the upstream itself) must reach at least
  2× the faster proxy's rate, median against median; a variant that fails is INVALID and its
  throughput and CPU are not reported as a result;
- latency at a fixed rate, in separate paced runs (paced.lua's delay() to <R> requests/s, below
  saturation): p50/p90/p99 as wrk measures them, and CPU per request of the target and of the
  upstream over that run; instant: also at higher rates, each only while it is at most
  half the target's saturation throughput;
- streaming: time to the first SSE body byte over <N> requests (sse_ttfb.py);
- peak RSS (VmHWM summed over the process tree) and calls to the emulator's token endpoints;
- full mode: system calls and context switches per request (perf stat, else strace -c -f) over
  one more saturation run.

Then the extras: entra-proxy's start-up and idle RSS; N SSE streams held open through
entra-proxy and nginx (RSS, CPU, memory per stream); token acquisitions under load with
short-lived tokens; the cost of limits accounting; RSS after 1M, 5M and 10M requests (rss).

Every child process dies with this one; every measurement is bounded in count and time.
Results: <out>/results.json and a Markdown table on stdout (report.py).
"""

import argparse
import hashlib
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import h1  # noqa: E402
import loadgen  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
import sse  # noqa: E402
import sse_ttfb  # noqa: E402
import streams  # noqa: E402

PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
AUDIENCE = "https://cognitiveservices.azure.com"
MESSAGES = [{"role": "user", "content": "Say hello in five words."}]
BODY = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 32},
                  separators=(",", ":"))
STREAM_BODY = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 32,
                          "stream": True}, separators=(",", ":"))
# The sse variants (upstream.conf.tmpl): a deployment whose static answer is the stream without
# usage, and one whose answer is the stream with usage.
SSE_PATH = "/openai/deployments/gpt-4o-stream/chat/completions?api-version=2024-10-21"
SSE_USAGE_PATH = "/openai/deployments/gpt-4o-stream-usage/chat/completions?api-version=2024-10-21"
SSE_BODY = json.dumps({"model": "gpt-4o-stream", "messages": MESSAGES, "max_tokens": 256,
                       "stream": True}, separators=(",", ":"))
SSE_USAGE_BODY = json.dumps({"model": "gpt-4o-stream-usage", "messages": MESSAGES,
                             "max_tokens": 256, "stream": True,
                             "stream_options": {"include_usage": True}}, separators=(",", ":"))
# entra-proxy with a key whose tokens are limited sends a streamed request that does not ask for
# usage with include_usage (Azure then answers with the usage chunk): in the sse variant, its
# model name goes to the deployment whose static answer has it. FaithfulUpstream checks that it
# does ask.
SSE_PROXY_MODELS = """
[[models]]
name = "gpt-4o-stream"
backend = "primary"
deployment = "gpt-4o-stream-usage"
"""

# The bench key's limits (--key): tokens_per_minute that never refuses, so every answer is
# metered and charged, and streams are sent with include_usage; or none.
KEYS = {
    "tpm": "tokens_per_minute = 1000000000000\n",
    "none": "",
}

# The generator check: direct must reach this many times the faster proxy's rate.
GENERATOR_MARGIN = 2.0

MODES = {
    "full": {
        "reps": 3,
        "throughput_secs": 6,
        "throughput_conns": 32,
        "rate": 50,
        "rate_secs": 6,
        "rate_conns": 16,
        "curve_rates": [500, 2000],
        "warmup_secs": 1,
        "sample": 20,
        "ttfb_requests": 40,
        "ttfb_concurrency": 4,
        "streams": 10000,
        "streams_hold_secs": 10,
        "streams_idle_secs": 2,
        "streams_open_secs": 120,
        "startup_reps": 3,
        # (token lifetime s, load s): a normal refresh, and tokens shorter than the proxy's
        # 10 s expiry margin (entra-proxy's EXPIRY_SAFETY).
        "churn": [[40, 12], [8, 4]],
        "litellm_start_timeout": 180,
        "syscall_secs": 3,
        "perf_secs": 10,
        "limits_rate": 500,
        "rss_checkpoints": [1_000_000, 5_000_000, 10_000_000],
        "rss_segment_secs": 10,
        "rss_max_secs": 900,
        "variants": ["fast", "sse", "sse-usage", "instant", "latency50", "streaming"],
        "extras": ["startup", "streams", "churn", "limits"],
    },
    "smoke": {
        "reps": 1,
        "throughput_secs": 1,
        "throughput_conns": 8,
        "rate": 50,
        "rate_secs": 1,
        "rate_conns": 8,
        "curve_rates": [200],
        "warmup_secs": 0,
        "sample": 3,
        "ttfb_requests": 8,
        "ttfb_concurrency": 2,
        "streams": 50,
        "streams_hold_secs": 2,
        "streams_idle_secs": 1,
        "streams_open_secs": 20,
        "startup_reps": 1,
        "churn": [],
        "litellm_start_timeout": 120,
        "syscall_secs": 1,
        "perf_secs": 2,
        "limits_rate": 200,
        "rss_checkpoints": [2_000, 5_000, 10_000],
        "rss_segment_secs": 1,
        "rss_max_secs": 10,
        "variants": ["fast", "sse", "sse-usage"],
        "extras": ["startup", "streams", "limits", "rss"],
    },
}

# Upstream variants: emulator flags, and whether the request streams. `upstream: nginx-static`:
# the data plane goes to the static nginx (upstream.conf.tmpl); `path`/`body`: the request
# (default PATH and BODY, or STREAM_BODY when it streams); `chunks`: streamed chunks per answer
# (CPU per chunk is reported); `expect`: the body every target must answer with (sse.py:
# "plain" or "usage"; "json": the static chat completion); `latency`: whether paced runs or a
# time-to-first-byte measurement follow the throughput run.
VARIANTS = {
    # nginx answering a static chat completion: the upstream costs next to nothing.
    "fast": {"latency_ms": 0, "stream_events": 20, "stream_interval_ms": 5, "stream": False,
             "upstream": "nginx-static", "expect": "json"},
    # The same nginx answering a 200-chunk stream: what a proxy costs per streamed chunk.
    "sse": {"latency_ms": 0, "stream_events": 20, "stream_interval_ms": 5, "stream": True,
            "upstream": "nginx-static", "path": SSE_PATH, "body": SSE_BODY,
            "chunks": 200, "expect": "plain", "proxy_extra": SSE_PROXY_MODELS,
            "latency": False},
    # The client asks for usage itself: every target passes the stream with usage unchanged.
    "sse-usage": {"latency_ms": 0, "stream_events": 20, "stream_interval_ms": 5, "stream": True,
                  "upstream": "nginx-static", "path": SSE_USAGE_PATH, "body": SSE_USAGE_BODY,
                  "chunks": 200, "expect": "usage", "latency": False},
    "instant": {"latency_ms": 0, "stream_events": 20, "stream_interval_ms": 5, "stream": False,
                "curve": True},
    "latency50": {"latency_ms": 50, "stream_events": 20, "stream_interval_ms": 5, "stream": False},
    "streaming": {"latency_ms": 0, "stream_events": 20, "stream_interval_ms": 5, "stream": True},
}

# The extras measured after the variants (entra-proxy alone, or its limits).
EXTRAS = ["startup", "streams", "churn", "limits", "rss"]

TARGET_ORDER = ["direct", "entra-proxy", "nginx", "litellm"]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A target or the emulator did not answer: the run exits non-zero."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env["NO_PROXY"] = "*"
    # Nothing the benchmark starts should look for Azure's real identity endpoints.
    for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
              "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
              "AZURE_FEDERATED_TOKEN_FILE", "ENTRA_PROXY_CONFIG"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def fill(template_name, out_path, values):
    with open(os.path.join(HERE, template_name)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", str(v))
    left = [ln for ln in text.splitlines() if "@@" in ln and not ln.lstrip().startswith("#")]
    if left:
        raise Failed(f"{template_name}: unfilled placeholder in {left[0]!r}")
    with open(out_path, "w") as f:
        f.write(text)
    return out_path


def http_get_quick(port, path, timeout=0.5):
    """Blocking GET on a fresh connection; returns the status or None (used for polling)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = s.recv(64)
        parts = data.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else None
    except OSError:
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --- the emulator ---------------------------------------------------------------------------


class Emulator:
    def __init__(self, ctx, name, latency_ms=0, stream_events=20, stream_interval_ms=5):
        self.ctx = ctx
        self.port = free_port()
        argv = [ctx.emulator, "--listen", f"127.0.0.1:{self.port}",
                "--latency-ms", str(latency_ms), "--stream-events", str(stream_events),
                "--stream-interval-ms", str(stream_interval_ms)]
        if ctx.resource_key:
            argv += ["--resource-key", ctx.resource_key]
        self.proc = ctx.procs.spawn(f"emulator-{name}", argv, env=child_env())
        deadline = time.monotonic() + 20
        while http_get_quick(self.port, "/emulator/stats") != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"the emulator ({name}) did not start; see {ctx.out}/emulator-{name}.log")
            time.sleep(0.02)

    def control(self, method, path, body=None):
        raw = json.dumps(body).encode() if body is not None else b""
        headers = [("Content-Type", "application/json")] if body is not None else []
        resp = h1.simple_sync(method, self.port, path, headers, raw)
        if resp.status >= 300:
            raise Failed(f"emulator {method} {path}: {resp.status} {resp.body[:200]!r}")
        return json.loads(resp.body) if resp.body else None

    def stats(self):
        return self.control("GET", "/emulator/stats")

    def token_requests(self):
        return self.stats()["token_requests"]

    def mint(self):
        return self.control("POST", "/emulator/mint", {"aud": AUDIENCE})["access_token"]

    def stop(self):
        self.ctx.procs.stop(self.proc)


class StaticUpstream:
    """nginx answering every request with a static chat completion (upstream.conf.tmpl)."""

    def __init__(self, ctx, name, workers=1):
        self.ctx = ctx
        self.port = free_port()
        prefix = os.path.join(ctx.out, f"upstream-{name}")
        for d in ("tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "logs"):
            os.makedirs(os.path.join(prefix, d), exist_ok=True)
        sse.write_bodies(os.path.join(prefix, "sse"))
        conf = fill("upstream.conf.tmpl", os.path.join(prefix, "nginx.conf"),
                    {"PORT": self.port, "PREFIX": prefix, "WORKERS": workers,
                     "SSE_DIR": os.path.join(prefix, "sse")})
        self.proc = ctx.procs.spawn(f"upstream-{name}",
                                    [ctx.nginx, "-p", prefix, "-c", conf, "-e",
                                     f"{prefix}/error.log"], env=child_env())
        deadline = time.monotonic() + 20
        while http_get_quick(self.port, "/") != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"the static upstream did not start; see {ctx.out}/upstream-{name}.log")
            time.sleep(0.02)

    def stop(self):
        self.ctx.procs.stop(self.proc)


# --- targets ----------------------------------------------------------------------------------


class Target:
    """One way to reach the upstream: a port, the credential header, and the process (if any)."""

    def __init__(self, name, port, headers, proc=None):
        self.name = name
        self.port = port
        self.headers = headers
        self.proc = proc

    @property
    def pid(self):
        return self.proc.pid if self.proc else None


def wait_answers(ctx, target, body, timeout, what, path=PATH):
    """Sends the benchmark request until it gets a 200; raises Failed after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if target.proc is not None and target.proc.poll() is not None:
            raise Failed(f"{what} exited with {target.proc.returncode}; see its log in {ctx.out}")
        try:
            r = h1.simple_sync("POST", target.port, path,
                               target.headers + [("Content-Type", "application/json")],
                               body.encode(), timeout=10)
            if r.status == 200:
                return
            last = f"status {r.status}: {r.body[:300]!r}"
        except (OSError, TimeoutError, Exception) as e:  # noqa: BLE001 - keep polling
            last = repr(e)
        time.sleep(0.05)
    raise Failed(f"{what} did not answer 200 within {timeout}s (last: {last})")


def start_entra_proxy(ctx, emu, tag, upstream_port=None, extra="", name="entra-proxy"):
    """entra-proxy with its identity from `emu`, proxying to `upstream_port` (default: `emu`);
    `extra` is appended to its config (the bench key's block is the last one). A `name` given
    with --also runs that binary, with that environment."""
    binary, env = ctx.bin, dict(ctx.proxy_env)
    if name in ctx.also:
        binary = ctx.also[name]
        env.update(ctx.also_env.get(name, {}))
    port = free_port()
    path = os.path.join(ctx.out, f"entra-proxy-{tag}.toml")
    fill("proxy.toml.tmpl", path,
         {"PORT": port, "EMULATOR_PORT": emu.port, "UPSTREAM_PORT": upstream_port or emu.port,
          "KEY_SHA256": ctx.key_sha256})
    if extra:
        with open(path, "a") as f:
            f.write(extra)
    proc = ctx.procs.spawn(f"{name}-{tag}", [binary, "serve", "--config", path],
                           env=child_env(env))
    return Target(name, port, [("api-key", ctx.key)], proc)


def start_nginx(ctx, emu, token, tag, upstream_port=None):
    port = free_port()
    prefix = os.path.join(ctx.out, f"nginx-{tag}")
    for d in ("tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "logs"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    conf = fill("nginx.conf.tmpl", os.path.join(prefix, "nginx.conf"),
                {"PORT": port, "UPSTREAM_PORT": upstream_port or emu.port, "TOKEN": token,
                 "PREFIX": prefix, "WORKERS": ctx.workers, "NOFILE": ctx.nofile,
                 "WORKER_CONNECTIONS": max(1024, ctx.nofile - 64)})
    proc = ctx.procs.spawn(f"nginx-{tag}",
                           [ctx.nginx, "-p", prefix, "-c", conf, "-e", f"{prefix}/error.log"],
                           env=child_env())
    return Target("nginx", port, [("api-key", ctx.key)], proc)


def start_litellm(ctx, emu, token, tag, upstream_port=None):
    port = free_port()
    field, credential = ("api_key", ctx.resource_key) if ctx.resource_key \
        else ("azure_ad_token", token)
    cfg = fill("litellm.yaml.tmpl", os.path.join(ctx.out, f"litellm-{tag}.yaml"),
               {"UPSTREAM_PORT": upstream_port or emu.port, "CREDENTIAL_FIELD": field, "CREDENTIAL": credential,
                "MASTER_KEY": ctx.litellm_key})
    env = child_env({
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
    })
    proc = ctx.procs.spawn(f"litellm-{tag}",
                           [ctx.litellm, "--config", cfg, "--host", "127.0.0.1",
                            "--port", str(port), "--num_workers", str(ctx.nproc)],
                           env=env, cwd=ctx.out)
    return Target("litellm", port, [("api-key", ctx.litellm_key)], proc)


# --- measurements -----------------------------------------------------------------------------


def load(ctx, target, body, conns, secs, rate=None, path=PATH):
    """One bounded load run; returns wrk's JSON summary (or loadgen's, same shape), with the
    generator's own CPU seconds over the run under "generator_cpu_s".

    Saturation (no `rate`): throughput.lua, a static request, no Lua per request or response.
    Paced (`rate` requests/s): paced.lua, whose delay() spaces the requests."""
    headers = target.headers
    if ctx.wrk:
        env = child_env({
            "BENCH_PATH": path,
            "BENCH_BODY": body,
            "BENCH_AUTH_NAME": headers[0][0],
            "BENCH_AUTH_VALUE": headers[0][1],
            "BENCH_RATE": str(rate or ""),
        })
        script = "paced.lua" if rate else "throughput.lua"
        # Saturation: a wrk thread per CPU (one thread starves on a busy machine and held nginx
        # back in the measurements of benches/RESULTS.md); paced: one thread, one schedule.
        threads = 1 if rate else min(ctx.gen_threads, conns)
        argv = [ctx.wrk, f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "10s",
                "-s", os.path.join(HERE, script), f"http://127.0.0.1:{target.port}"]
        # wrk is the only child this process reaps during the run: the change in the children's
        # rusage is wrk's own CPU.
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            p = subprocess.run(argv, env=env, capture_output=True, text=True,
                               timeout=secs + 30)
        except subprocess.TimeoutExpired as e:
            raise Failed(f"wrk against {target.name} did not stop") from e
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        for line in p.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                res = json.loads(line[len("BENCH_JSON "):])
                res["generator_cpu_s"] = round((ru1.ru_utime - ru0.ru_utime)
                                               + (ru1.ru_stime - ru0.ru_stime), 3)
                res["generator_threads"] = threads
                return res
        raise Failed(f"wrk against {target.name} printed no result: {p.stdout[-500:]} {p.stderr[-500:]}")
    t0 = time.process_time()
    res = loadgen.run(target.port, path, headers, body.encode(), conns, secs, rate)
    res["generator_cpu_s"] = round(time.process_time() - t0, 3)
    return res


def load_errors(res):
    return sum(res["errors"].values())


def summarize_load(res):
    secs = res["duration_us"] / 1e6 if res["duration_us"] else 0
    gen = res.get("generator_cpu_s")
    return {
        "requests": res["requests"],
        "secs": round(secs, 3),
        "rps": round(res["requests"] / secs, 1) if secs else 0,
        "errors": load_errors(res),
        "errors_by_kind": res["errors"],
        "latency_us": res["latency_us"],
        # Bytes wrk read per answer, head included: a cheap check that every answer was whole.
        "bytes_per_response": round(res["bytes"] / res["requests"], 1)
        if res["requests"] and res.get("bytes") else None,
        # The generator's CPU over the run, as a share of one core (its threads together).
        "generator_cpu_pct": round(100 * gen / secs, 1) if gen is not None and secs else None,
    }


def check_load(ctx, target, what, res):
    """A target that answered nothing (or only errors) fails the run; in smoke mode, any error."""
    ok = res["requests"] - res["errors"]["status"]
    if res["requests"] == 0 or ok <= 0:
        raise Failed(f"{target.name} answered no request in {what}: {res['errors']}")
    if ctx.mode_name == "smoke" and load_errors(res):
        raise Failed(f"{target.name} had errors in {what}: {res['errors']}")


def measure_target(ctx, variant, vconf, target, emu, up, rec):
    """One repetition of every measurement of `variant` against `target` (upstream process:
    `up`, identity: `emu`); appends to `rec`."""
    body, path = request_of(vconf)
    m = ctx.mode
    rep = {}
    t0 = emu.token_requests()

    cpu0 = procs.cpu_seconds(target.pid) if target.pid else None
    ecpu0 = procs.cpu_seconds(up.proc.pid)
    host0 = procs.host_ticks()
    res = load(ctx, target, body, m["throughput_conns"], m["throughput_secs"], path=path)
    host1 = procs.host_ticks()
    cpu1 = procs.cpu_seconds(target.pid) if target.pid else None
    ecpu1 = procs.cpu_seconds(up.proc.pid)
    check_load(ctx, target, f"{variant} throughput", res)
    rep["throughput"] = summarize_load(res)
    n = max(1, res["requests"])
    if target.pid:
        rep["cpu_s_per_10k"] = round((cpu1 - cpu0) / n * 10000, 4)
    rep["upstream_cpu_s_per_10k"] = round((ecpu1 - ecpu0) / n * 10000, 4)
    ticks = host1[1] - host0[1]
    rep["steal_pct"] = round(100 * (host1[0] - host0[0]) / ticks, 1) if ticks > 0 else None

    if not vconf.get("latency", True):
        pass
    elif not vconf["stream"]:
        rep["fixed_rate"] = paced(ctx, target, up, body, m["rate"], f"{variant} fixed-rate",
                                  path=path)
        if vconf.get("curve"):
            rep["curve"] = measure_curve(ctx, target, up, body, rep["throughput"]["rps"],
                                         path=path)
    else:
        tt = sse_ttfb.measure(target.port, path, target.headers, body.encode(),
                              n=m["ttfb_requests"], concurrency=m["ttfb_concurrency"],
                              timeout=60)
        if tt["ok"] == 0 or (ctx.mode_name == "smoke" and tt["errors"]):
            raise Failed(f"{target.name} streamed {tt['ok']}/{tt['requests']}: "
                         f"{tt['statuses']} {tt['last_error']}")
        rep["ttfb"] = tt
    rep["token_calls"] = emu.token_requests() - t0
    rec["reps"].append(rep)
    if target.pid:
        rec["rss_kb_now"] = procs.rss_kb(target.pid)
    line = f"{variant:9s} {target.name:11s} {rep['throughput']['rps']:>9.1f} req/s"
    if rep["throughput"].get("generator_cpu_pct") is not None:
        line += f" (wrk {rep['throughput']['generator_cpu_pct']:.0f}% cpu)"
    if "fixed_rate" in rep:
        lat = rep["fixed_rate"]["latency_us"]
        line += f"  p50 {lat['p50']:.0f}us p99 {lat['p99']:.0f}us @{rep['fixed_rate']['rps']:.0f}/s"
    if "ttfb" in rep:
        line += f"  ttfb p50 {rep['ttfb']['ttfb_us']['p50']:.0f}us"
    if "cpu_s_per_10k" in rep:
        line += f"  cpu {rep['cpu_s_per_10k'] * 100:.1f}us/req"
        if vconf.get("chunks"):
            line += f" {rep['cpu_s_per_10k'] * 100 / vconf['chunks']:.2f}us/chunk"
    if rep.get("steal_pct"):
        line += f"  steal {rep['steal_pct']}%"
    for rate, c in rep.get("curve", {}).items():
        if "latency_us" in c:
            line += f"  p50 {c['latency_us']['p50']:.0f}us @{c['rps']:.0f}/s"
    errs = rep["throughput"]["errors"] + rep.get("fixed_rate", {}).get("errors", 0) \
        + rep.get("ttfb", {}).get("errors", 0) \
        + sum(c.get("errors", 0) for c in rep.get("curve", {}).values())
    if errs:
        line += f"  ERRORS {errs}"
    log(line)


def paced(ctx, target, up, body, rate, what, path=PATH):
    """One paced run: latency, and CPU time per request of the target and of the upstream
    process `up` (which shows what idle, cold CPUs cost each request at low rates)."""
    m = ctx.mode
    cpu0 = procs.cpu_ns(target.pid) if target.pid else None
    ecpu0 = procs.cpu_ns(up.proc.pid)
    res = load(ctx, target, body, m["rate_conns"], m["rate_secs"], rate=rate, path=path)
    cpu1 = procs.cpu_ns(target.pid) if target.pid else None
    ecpu1 = procs.cpu_ns(up.proc.pid)
    check_load(ctx, target, what, res)
    out = summarize_load(res)
    n = max(1, res["requests"])

    # Live threads only (schedstat): a thread that ended during the run takes its time with it,
    # and the difference can even fall below zero; then there is no figure.
    def per_req(a, b):
        return round((b - a) / n / 1000, 1) if b >= a else None

    if target.pid:
        out["cpu_us_per_req"] = per_req(cpu0, cpu1)
    out["upstream_cpu_us_per_req"] = per_req(ecpu0, ecpu1)
    return out


def measure_curve(ctx, target, up, body, saturation_rps, path=PATH):
    """Fixed-rate latency at each of the mode's higher rates (below half of saturation)."""
    out = {}
    for rate in ctx.mode["curve_rates"]:
        if rate > saturation_rps / 2:
            out[str(rate)] = {"skipped": f"above half its saturation ({saturation_rps:.0f}/s)"}
            continue
        out[str(rate)] = paced(ctx, target, up, body, rate, f"fixed rate {rate}/s", path=path)
    return out


def profile(ctx, target, body, variant, path=PATH):
    """--perf: one more saturation run of entra-proxy under `perf record` (not counted in any
    result), for where its CPU goes. Self time by symbol (no call graph: the shipped build has
    no frame pointers, so call chains would be guesses)."""
    data = os.path.join(ctx.out, f"perf-{variant}.data")
    p = ctx.procs.spawn(f"perf-{variant}", [ctx.perf, "record", "-F", "1999", "-p",
                                            str(target.pid), "-o", data], env=child_env())
    time.sleep(0.5)
    try:
        res = load(ctx, target, body, ctx.mode["throughput_conns"], ctx.mode["perf_secs"],
                   path=path)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        ctx.procs.stop(p)
    ctx.perf_data.append(data)
    log(f"{variant:9s} {target.name:11s} perf record: {res['requests']} requests -> {data}")


def perf_reports(ctx):
    """Flat profiles (self time by shared object, and by symbol) of the perf.data files, as
    text next to them."""
    out = {}
    for data in ctx.perf_data:
        txt = data.replace(".data", ".txt")
        try:
            by_dso = subprocess.run([ctx.perf, "report", "-i", data, "--stdio", "--no-children",
                                     "--sort", "dso"], capture_output=True, text=True,
                                    timeout=180).stdout
            p = subprocess.run([ctx.perf, "report", "-i", data, "--stdio", "--no-children",
                                "--sort", "dso,symbol", "--percent-limit", "0.3"],
                               capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            continue
        with open(txt, "w") as f:
            f.write(by_dso + "\n" + p.stdout)
        top = []
        for text in (by_dso, p.stdout):
            for ln in text.splitlines():
                words = ln.split()
                if not words or ln.startswith("#"):
                    continue
                while words and words[-1] == "-":
                    words.pop()
                top.append(" ".join(words))
        out[os.path.basename(data)] = top[:40]
    return out


def count_syscalls(ctx, target, body, variant, path=PATH):
    """System calls (and, with perf, context switches) per request of the target's process tree
    over one saturation run: perf stat of raw_syscalls:sys_enter and context-switches (attached
    to every thread), else strace -c -f (which slows the target down, but counts the same
    calls)."""
    pids = procs.tree(target.pid)
    secs = ctx.mode["syscall_secs"]
    out = os.path.join(ctx.out, f"syscalls-{variant}-{target.name}.txt")
    if ctx.perf_stat:
        argv = [ctx.perf_stat, "stat", "-e", "raw_syscalls:sys_enter,context-switches", "-x", ",",
                "-o", out, "-p", ",".join(map(str, pids))]
        tool = "perf stat"
    else:
        argv = [ctx.strace, "-c", "-f", "-o", out] + [a for p in pids for a in ("-p", str(p))]
        tool = "strace -c -f"
    p = ctx.procs.spawn(f"syscalls-{variant}-{target.name}", argv, env=child_env())
    time.sleep(0.5)
    try:
        res = load(ctx, target, body, ctx.mode["throughput_conns"], secs, path=path)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        ctx.procs.stop(p)
    calls = switches = None
    try:
        with open(out) as f:
            text = f.read()
        if ctx.perf_stat:
            for ln in text.splitlines():
                cells = ln.split(",")
                if len(cells) > 2 and cells[0].isdigit():
                    if cells[2] == "raw_syscalls:sys_enter":
                        calls = int(cells[0])
                    elif cells[2] == "context-switches":
                        switches = int(cells[0])
        else:
            for ln in text.splitlines():
                words = ln.split()
                if len(words) >= 4 and words[-1] == "total":
                    calls = int(words[3]) if words[3].isdigit() else int(words[2])
    except (OSError, ValueError):
        pass
    n = max(1, res["requests"])
    r = {"tool": tool, "requests": res["requests"], "calls": calls,
         "per_request": round(calls / n, 2) if calls is not None else None,
         "switches_per_request": round(switches / n, 2) if switches is not None else None}
    log(f"{variant:9s} {target.name:11s} syscalls: {r['per_request']} per request, context "
        f"switches: {r['switches_per_request']} ({tool}, {res['requests']} requests)")
    return r


def measure_until_quiet(ctx, variant, vconf, target, emu, up, rec):
    """One repetition of `target`, measured again while the host stole more than
    `ctx.max_steal` percent of the CPUs during its throughput run; a target gets at most as many
    repeats as repetitions (bounded time). Repeated repetitions are kept under `discarded`."""
    while True:
        measure_target(ctx, variant, vconf, target, emu, up, rec)
        steal = rec["reps"][-1].get("steal_pct")
        repeats = len(rec.get("discarded", []))
        if ctx.max_steal is None or steal is None or steal <= ctx.max_steal \
                or repeats >= ctx.mode["reps"]:
            return
        rec.setdefault("discarded", []).append(rec["reps"].pop())
        log(f"{variant:9s} {target.name:11s} measured again: the host stole {steal}% of the "
            f"CPUs (> {ctx.max_steal}%)")


def summarize_variant(rec, vconf):
    stream = vconf["stream"]
    reps = rec["reps"]
    s = {
        "rps": median([r["throughput"]["rps"] for r in reps]),
        "errors": sum(r["throughput"]["errors"] + r.get("fixed_rate", {}).get("errors", 0)
                      + r.get("ttfb", {}).get("errors", 0)
                      + sum(c.get("errors", 0) for c in r.get("curve", {}).values())
                      for r in reps),
        "cpu_s_per_10k": median([r.get("cpu_s_per_10k") for r in reps]),
        "cpu_us_per_req": median([round(r["cpu_s_per_10k"] * 100, 2)
                                  if r.get("cpu_s_per_10k") is not None else None
                                  for r in reps]),
        "syscalls_per_req": rec.get("syscalls", {}).get("per_request"),
        "switches_per_req": rec.get("syscalls", {}).get("switches_per_request"),
        "upstream_cpu_s_per_10k": median([r["upstream_cpu_s_per_10k"] for r in reps]),
        "steal_pct_max": max((r["steal_pct"] for r in reps if r.get("steal_pct") is not None),
                             default=None),
        "token_calls": rec["token_calls_start"]
        + sum(r["token_calls"] for r in reps + rec.get("discarded", [])),
        "discarded_reps": len(rec.get("discarded", [])),
        "peak_rss_kb": rec.get("peak_rss_kb"),
        "bytes_per_response": median([r["throughput"].get("bytes_per_response") for r in reps]),
        "generator_cpu_pct": median([r["throughput"].get("generator_cpu_pct") for r in reps]),
    }
    if vconf.get("chunks") and s["cpu_us_per_req"] is not None:
        s["cpu_us_per_chunk"] = round(s["cpu_us_per_req"] / vconf["chunks"], 3)
    if not vconf.get("latency", True):
        pass
    elif not stream:
        for p in ("p50", "p90", "p99"):
            s[f"{p}_us"] = median([r["fixed_rate"]["latency_us"][p] for r in reps])
        s["rate_rps"] = median([r["fixed_rate"]["rps"] for r in reps])
        for k in ("cpu_us_per_req", "upstream_cpu_us_per_req"):
            s[f"rate_{k}"] = median([r["fixed_rate"].get(k) for r in reps])
        curve = {}
        for rate in sorted({k for r in reps for k in r.get("curve", {})}, key=int):
            runs = [r["curve"][rate] for r in reps if "latency_us" in r["curve"].get(rate, {})]
            if not runs:
                curve[rate] = {"skipped": reps[0]["curve"][rate].get("skipped", "not measured")}
                continue
            curve[rate] = {"rps": median([c["rps"] for c in runs]), "reps": len(runs)}
            for p in ("p50", "p99"):
                curve[rate][f"{p}_us"] = median([c["latency_us"][p] for c in runs])
            for k in ("cpu_us_per_req", "upstream_cpu_us_per_req"):
                curve[rate][k] = median([c.get(k) for c in runs])
        if curve:
            s["curve"] = curve
    else:
        for p in ("p50", "p90", "p99"):
            s[f"ttfb_{p}_us"] = median([r["ttfb"]["ttfb_us"][p] for r in reps])
        s["stream_p50_us"] = median([r["ttfb"]["stream_us"]["p50"] for r in reps])
    return s


def fail(ctx, recs, name, msg):
    """Records that a target did not answer; the run goes on with the others, exits 1."""
    log(f"FAILED {name}: {msg}")
    ctx.failures.append(f"{name}: {msg}")
    recs[name] = {"failed": msg}


def request_of(vconf):
    """(body, path) of a variant's request."""
    body = vconf.get("body") or (STREAM_BODY if vconf["stream"] else BODY)
    return body, vconf.get("path", PATH)


def static_json():
    """The static chat completion upstream.conf.tmpl answers with (one source for both)."""
    with open(os.path.join(HERE, "upstream.conf.tmpl")) as f:
        m = re.search(r"return 200 '(.*)';", f.read())
    return m.group(1).encode()


def expected_body(vconf):
    """The exact body every target must answer with, or None where only its shape is checked."""
    return {"json": static_json, "plain": lambda: sse.body(False),
            "usage": lambda: sse.body(True)}.get(vconf.get("expect"), lambda: None)()


def usage_estimates(port):
    """entra_proxy_usage_estimated_total summed over its reasons (0 when absent)."""
    try:
        r = h1.simple_sync("GET", port, "/metrics", timeout=5)
    except (OSError, TimeoutError):
        return None
    total = 0.0
    for ln in r.body.decode("utf-8", "replace").splitlines():
        if ln.startswith("entra_proxy_usage_estimated_total"):
            total += float(ln.rsplit(" ", 1)[1])
    return total


def sample_check(ctx, target, vconf):
    """Correctness, apart from the throughput loop: a sample of answers (each on a connection of
    its own), status 200 and the body the upstream sends, byte for byte where it is static (sse:
    less exactly what the proxy removes). For entra-proxy on a streamed variant, also that every
    answer's usage was read (its usage_estimated counter did not move). Raises Failed."""
    body, path = request_of(vconf)
    # LiteLLM writes its own answer (its own id, its own JSON): only the shape is checked.
    want = expected_body(vconf) if target.name != "litellm" else None
    n = ctx.mode["sample"]
    est0 = usage_estimates(target.port) if target.pid and target.name != "nginx" \
        and vconf["stream"] else None
    exact, first_bad, sizes = 0, None, set()
    for _ in range(n):
        r = h1.simple_sync("POST", target.port, path,
                           target.headers + [("Content-Type", "application/json")],
                           body.encode(), timeout=30)
        sizes.add(len(r.body))
        if r.status != 200:
            ok, why = False, f"status {r.status}: {r.body[:200]!r}"
        elif want is not None:
            ok = r.body == want
            why = None if ok else f"body differs ({len(r.body)} bytes, want {len(want)})" \
                + (f" at byte {next(i for i, (a, b) in enumerate(zip(r.body, want)) if a != b)}"
                   if any(a != b for a, b in zip(r.body, want)) else "")
        elif vconf["stream"]:
            ok = r.body.rstrip().endswith(b"data: [DONE]") and r.body.startswith(b"data:")
            why = None if ok else f"not an SSE stream ending in [DONE]: {r.body[:120]!r}"
        else:
            try:
                ok = "usage" in json.loads(r.body)
            except ValueError:
                ok = False
            why = None if ok else f"not a chat completion with usage: {r.body[:120]!r}"
        exact += ok
        if not ok and first_bad is None:
            first_bad = why
    out = {"n": n, "ok": exact, "body_bytes": sorted(sizes), "compared": "exact bytes"
           if want is not None else "shape", "first_failure": first_bad}
    if est0 is not None:
        est1 = usage_estimates(target.port)
        out["usage_estimated"] = None if est1 is None else est1 - est0
        if est1 is not None and est1 != est0 and ctx.key_kind == "tpm":
            out["ok"] = 0
            out["first_failure"] = (f"{est1 - est0:g} answers charged an estimate: the usage "
                                    "chunk was not read")
    if out["ok"] != n:
        raise Failed(f"{target.name}: {n - out['ok']}/{n} sampled answers wrong: "
                     f"{out['first_failure']}")
    return out


def sse_faithful_check(ctx, emu, token):
    """Every target against sse.FaithfulUpstream, which answers with usage exactly when the
    request body asks for it (as Azure does), one HTTP chunk per event. For each request kind
    (not asking for usage, asking): what reached the upstream, what it sent, what the client
    got. A client must get the plain stream when it did not ask for usage, whoever asked Azure
    for it; entra-proxy with a tokens_per_minute key must have asked, and removed exactly the
    usage-only chunk and every "usage":null (sse.removal() bytes)."""
    up = sse.FaithfulUpstream()
    out = {"chunks": sse.CHUNKS, "plain_bytes": len(sse.body(False)),
           "usage_bytes": len(sse.body(True)), "removal_bytes": sse.removal(), "targets": {}}
    started = []
    try:
        for name in [t for t in ctx.targets if t in ("direct", "entra-proxy", "nginx")]:
            if name == "direct":
                t = Target("direct", up.port, [("Authorization", f"Bearer {token}")])
            elif name == "entra-proxy":
                t = start_entra_proxy(ctx, emu, "faithful", up.port, ctx.key_extra)
            else:
                t = start_nginx(ctx, emu, token, "faithful", up.port)
            if t.proc:
                started.append(t)
            wait_answers(ctx, t, SSE_BODY, 30, f"{name} (sse check)", path=SSE_PATH)
            rows = {}
            for kind, path, body, want in (
                    ("no usage asked", SSE_PATH, SSE_BODY, sse.body(False)),
                    ("usage asked", SSE_USAGE_PATH, SSE_USAGE_BODY, sse.body(True))):
                n0 = len(up.requests)
                r = h1.simple_sync("POST", t.port, path,
                                   t.headers + [("Content-Type", "application/json")],
                                   body.encode(), timeout=30)
                sent = up.requests[n0:]
                asked = bool(sent) and sse.asks_for_usage(sent[-1][1])
                bytes_in = len(sse.body(asked))
                row = {"status": r.status, "upstream_asked_for_usage": asked,
                       "bytes_in": bytes_in, "bytes_out": len(r.body),
                       "removed": bytes_in - len(r.body), "client_bytes_as_asked": r.body == want}
                must_ask = name == "entra-proxy" and ctx.key_kind == "tpm"
                row["ok"] = r.status == 200 and row["client_bytes_as_asked"] \
                    and (asked or not must_ask) \
                    and row["removed"] == (sse.removal() if asked and want == sse.body(False)
                                           else 0)
                rows[kind] = row
            out["targets"][name] = rows
            log(f"sse check {name:11s} " + "; ".join(
                f"{k}: {'ok' if v['ok'] else 'WRONG'} ({v['bytes_in']} in, {v['bytes_out']} out"
                f"{', asked for usage' if v['upstream_asked_for_usage'] else ''})"
                for k, v in rows.items()))
    finally:
        for t in started:
            ctx.procs.stop(t.proc)
        up.stop()
    bad = [f"{n} ({k})" for n, rows in out["targets"].items() for k, v in rows.items()
           if not v["ok"]]
    out["ok"] = not bad
    if bad:
        ctx.failures.append("sse check: wrong bytes from " + ", ".join(bad))
    return out


def generator_check(recs):
    """Whether the generator was measurably not the bottleneck: direct's median rate against
    the faster proxy's median rate, which it must reach GENERATOR_MARGIN times."""
    direct = recs.get("direct", {}).get("median", {}).get("rps")
    proxies = {n: r["median"]["rps"] for n, r in recs.items()
               if n != "direct" and r.get("median", {}).get("rps")}
    if not proxies:
        return {"valid": None, "why": "no proxy measured"}
    fastest = max(proxies, key=proxies.get)
    out = {"direct_rps": direct, "fastest_proxy": fastest, "fastest_proxy_rps": proxies[fastest],
           "required": GENERATOR_MARGIN}
    if not direct:
        out.update(valid=False, why="direct not measured: the generator was not checked")
        return out
    out["ratio"] = round(direct / proxies[fastest], 2)
    out["valid"] = out["ratio"] >= GENERATOR_MARGIN
    if not out["valid"]:
        out["why"] = (f"direct reached only {out['ratio']}× the faster proxy: the generator or "
                      "the upstream may have been the bottleneck")
    return out


def run_variant(ctx, variant, vconf):
    if ctx.cpu_only:
        vconf = dict(vconf, latency=False, curve=False)
    static = vconf.get("upstream") == "nginx-static"
    body, path = request_of(vconf)
    if static:
        log(f"variant {variant}: static nginx upstream ({ctx.upstream_workers} worker), "
            + (f"SSE {vconf['chunks']} chunks" if vconf["stream"] else "JSON"))
    else:
        log(f"variant {variant}: emulator latency {vconf['latency_ms']} ms, "
            f"{'SSE ' + str(vconf['stream_events']) + ' events' if vconf['stream'] else 'JSON'}")
    emu = Emulator(ctx, variant, vconf["latency_ms"], vconf["stream_events"],
                   vconf["stream_interval_ms"])
    up = None
    token = emu.mint()
    targets, recs = [], {}
    out = {"emulator": {k: v for k, v in vconf.items() if k not in ("body", "proxy_extra")},
           "request": {"path": path, "body": body}, "targets": recs}
    if vconf.get("chunks") and "sse_check" not in ctx.checks:
        ctx.checks["sse_check"] = sse_faithful_check(ctx, emu, token)
    try:
        # The identity stays the emulator's; the data plane goes to `up`.
        up = StaticUpstream(ctx, variant, ctx.upstream_workers) if static else emu
        for name in ctx.targets:
            if name == "litellm" and vconf.get("chunks"):
                log(f"{variant}: LiteLLM skipped (it calls its own deployment path, not the "
                    "static stream's)")
                continue
            t0 = emu.token_requests()
            if name == "direct":
                t = Target("direct", up.port, [("Authorization", f"Bearer {token}")])
                timeout = 10
            elif name == "entra-proxy" or name in ctx.also:
                extra = ctx.key_extra + (vconf.get("proxy_extra", "")
                                         if ctx.key_kind == "tpm" else "")
                t = start_entra_proxy(ctx, emu, variant, up.port, extra, name=name)
                timeout = 30
            elif name == "nginx":
                t = start_nginx(ctx, emu, token, variant, up.port)
                timeout = 20
            else:
                t = start_litellm(ctx, emu, token, variant, up.port)
                timeout = ctx.mode["litellm_start_timeout"]
            if t.proc:
                targets.append(t)  # stopped in `finally` even if it never answers
            try:
                wait_answers(ctx, t, body, timeout, f"{name} ({variant})", path=path)
                sample = sample_check(ctx, t, vconf)
                if ctx.mode["warmup_secs"]:
                    load(ctx, t, body, ctx.mode["throughput_conns"], ctx.mode["warmup_secs"],
                         path=path)
            except Failed as e:
                fail(ctx, recs, name, f"{variant}: {e}")
                continue
            if not t.proc:
                targets.append(t)
            recs[name] = {"reps": [], "token_calls_start": emu.token_requests() - t0,
                          "sample": sample}
        live = [t for t in targets if "failed" not in recs.get(t.name, {"failed": 1})]
        for rep in range(ctx.mode["reps"]):
            # The order turns with each repetition, so a drift in the machine's speed over the
            # run (the hypervisor, the CPU's clock) does not always favour the same target.
            k = rep % len(live) if live else 0
            for t in live[k:] + live[:k]:
                try:
                    measure_until_quiet(ctx, variant, vconf, t, emu, up, recs[t.name])
                except Failed as e:
                    fail(ctx, recs, t.name, f"{variant}: {e}")
                    live.remove(t)
        if ctx.syscalls and not vconf["stream"]:
            for t in live:
                if t.pid:
                    recs[t.name]["syscalls"] = count_syscalls(ctx, t, body, variant, path=path)
        if ctx.perf:
            for t in live:
                if t.name == "entra-proxy":
                    profile(ctx, t, body, variant, path=path)
        for t in live:
            if t.pid:
                recs[t.name]["peak_rss_kb"] = procs.hwm_kb(t.pid)
            recs[t.name]["median"] = summarize_variant(recs[t.name], vconf)
        out["generator_check"] = g = generator_check(recs)
        if g.get("valid") is False:
            log(f"{variant}: INVALID: {g['why']} (direct {g.get('direct_rps')}/s, "
                f"{g['fastest_proxy']} {g['fastest_proxy_rps']}/s)")
        elif g.get("valid"):
            log(f"{variant}: generator check passed: direct {g['direct_rps']:.0f}/s = "
                f"{g['ratio']}× {g['fastest_proxy']} ({g['fastest_proxy_rps']:.0f}/s)")
        return out
    finally:
        for t in targets:
            if t.proc:
                ctx.procs.stop(t.proc)
        if up is not None and up is not emu:
            up.stop()
        emu.stop()


# --- entra-proxy alone ------------------------------------------------------------------------


def proxy_startup(ctx):
    """Spawn → /healthz answers, spawn → /readyz 200, and idle RSS after readiness."""
    emu = Emulator(ctx, "startup")
    runs = []
    try:
        for i in range(ctx.mode["startup_reps"]):
            port = free_port()
            cfg = fill("proxy.toml.tmpl", os.path.join(ctx.out, f"entra-proxy-startup{i}.toml"),
                       {"PORT": port, "EMULATOR_PORT": emu.port, "UPSTREAM_PORT": emu.port,
                        "KEY_SHA256": ctx.key_sha256})
            t0 = time.perf_counter()
            proc = ctx.procs.spawn(f"entra-proxy-startup{i}", [ctx.bin, "serve", "--config", cfg],
                                   env=child_env(ctx.proxy_env))
            listening = ready = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None:
                if listening is None:
                    if http_get_quick(port, "/healthz") == 200:
                        listening = time.perf_counter() - t0
                    else:
                        time.sleep(0.001)
                        continue
                if http_get_quick(port, "/readyz") == 200:
                    ready = time.perf_counter() - t0
                    break
                time.sleep(0.002)
            if listening is None:
                raise Failed(f"entra-proxy never answered /healthz; see {ctx.out}/entra-proxy-startup{i}.log")
            time.sleep(1.0)
            run = {
                "listening_ms": round(listening * 1000, 2),
                "ready_ms": round(ready * 1000, 2) if ready else None,
                "idle_rss_kb": procs.rss_kb(proc.pid),
                "idle_hwm_kb": procs.hwm_kb(proc.pid),
            }
            runs.append(run)
            log(f"entra-proxy startup: /healthz after {run['listening_ms']} ms, /readyz after "
                f"{run['ready_ms']} ms, idle RSS {run['idle_rss_kb']} KiB")
            ctx.procs.stop(proc)
    finally:
        emu.stop()
    return {
        "runs": runs,
        "listening_ms": median([r["listening_ms"] for r in runs]),
        "ready_ms": median([r["ready_ms"] for r in runs]),
        "idle_rss_kb": median([r["idle_rss_kb"] for r in runs]),
    }


def listen_overflows():
    """TcpExt ListenOverflows + ListenDrops of this network namespace (/proc/net/netstat):
    connections a full accept queue turned away."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            row = dict(zip(head.split()[1:], vals.split()[1:]))
            return int(row.get("ListenOverflows", 0)) + int(row.get("ListenDrops", 0))
    return None


def open_streams(ctx):
    """N SSE streams held open at once through entra-proxy and nginx, the emulator dribbling one
    event a second on each (the gateway's shape: long answers, most of their time waiting for
    the model). RSS and CPU idle first, then with N open while they keep dribbling; memory per
    stream from the difference.

    Descriptors: the proxy holds two per stream (the client's connection and Azure's), in one
    process; nginx as many, over its workers; this client and the emulator one each. Their
    limit is RLIMIT_NOFILE, raised to its hard limit at start; where the hard limit is below
    what N streams need (and cannot be raised), N is lowered to what fits and the result says
    so. The client opens at most 100 connections at a time, below entra-proxy's listen backlog
    (128: std's and mio's default) and nginx's (4096, capped by net.core.somaxconn); the
    kernel's ListenOverflows over each run shows whether any connection was turned away."""
    m = ctx.mode
    want = ctx.streams
    # The proxy's own descriptors besides the streams' (listener, epoll, eventfds, log, the
    # identity's and the upstream pool's idle connections): a few dozen.
    margin = 64
    fit = (ctx.nofile - margin) // 2
    n = min(want, fit)
    interval_ms = 1000
    # Long enough to outlast opening, settling and holding: the streams are closed by us.
    events = int((m["streams_open_secs"] + m["streams_hold_secs"] + 30) * 1000 / interval_ms)
    out = {"streams": n, "requested": want, "nofile": ctx.nofile,
           "nofile_needed": 2 * want + margin, "interval_ms": interval_ms,
           "hold_secs": m["streams_hold_secs"], "somaxconn": read_int(
               "/proc/sys/net/core/somaxconn")}
    if n < want:
        out["limited"] = (f"{want} streams need {2 * want + margin} descriptors in the proxy's "
                          f"one process; the hard limit here is {ctx.nofile} and cannot be "
                          f"raised: measured with {n}")
        log(f"streams: {out['limited']}")
    emu = Emulator(ctx, "streams", 0, events, interval_ms)
    try:
        token = emu.mint()
        names = [x for x in ("entra-proxy", "nginx") if x in ctx.targets]
        for name in names:
            t = start_entra_proxy(ctx, emu, "streams", extra=ctx.key_extra) \
                if name == "entra-proxy" else start_nginx(ctx, emu, token, "streams")
            try:
                wait_answers(ctx, t, BODY, 30, f"{name} (streams)")
                time.sleep(1.0)
                idle_rss = procs.rss_kb(t.pid)
                idle_fds = procs.fd_count(t.pid)
                # Idle CPU from schedstat (nanoseconds): clock ticks cannot see it.
                c0, t0 = procs.cpu_ns(t.pid), time.monotonic()
                time.sleep(m["streams_idle_secs"])
                idle_cpu_pct = round(100 * (procs.cpu_ns(t.pid) - c0) / 1e9
                                     / (time.monotonic() - t0), 3)

                def sample(pid=t.pid):
                    return {"rss_kb": procs.rss_kb(pid), "hwm_kb": procs.hwm_kb(pid),
                            "cpu_s": procs.cpu_seconds(pid), "t": time.monotonic(),
                            "upstream_cpu_s": procs.cpu_seconds(emu.proc.pid),
                            "upstream_open_streams": emu.stats()["open_streams"]}

                request = h1.request_bytes(
                    "POST", PATH, t.port, t.headers + [("Content-Type", "application/json")],
                    STREAM_BODY.encode())
                ov0 = listen_overflows()
                res = streams.hold(t.port, request, n, sample, m["streams_hold_secs"],
                                   m["streams_open_secs"])
                ov1 = listen_overflows()
                time.sleep(m["streams_idle_secs"])
                res["rss_after_close_kb"] = procs.rss_kb(t.pid)
                a, b = res["first"], res["second"]
                secs = b["t"] - a["t"]
                cpu = b["cpu_s"] - a["cpu_s"]
                res.update({
                    "idle_rss_kb": idle_rss,
                    "idle_fds": idle_fds,
                    "idle_cpu_pct": idle_cpu_pct,
                    "rss_kb": max(a["rss_kb"], b["rss_kb"]),
                    "cpu_pct": round(100 * cpu / secs, 1) if secs > 0 else None,
                    "cpu_us_per_event": round(cpu * 1e6 / res["events_received"], 1)
                    if res["events_received"] else None,
                    "upstream_cpu_pct": round(100 * (b["upstream_cpu_s"] - a["upstream_cpu_s"])
                                              / secs, 1) if secs > 0 else None,
                    "kb_per_stream": round((max(a["rss_kb"], b["rss_kb"]) - idle_rss)
                                           / res["open"], 2) if res["open"] else None,
                    "events_expected_per_s": res["open"] * 1000 / interval_ms,
                    "listen_overflows": None if ov0 is None else ov1 - ov0,
                })
                out[name] = res
                log(f"{name}: {res['open']}/{n} streams open in {res['open_all_s']} s; RSS "
                    f"{res['rss_kb'] / 1024:.1f} MB (idle {idle_rss / 1024:.1f}), "
                    f"{res['kb_per_stream']} KiB per stream; CPU {res['cpu_pct']}% of a core "
                    f"({res['cpu_us_per_event']} us per event; idle {idle_cpu_pct}%); "
                    f"client got {res['events_per_s']}/s of {res['events_expected_per_s']:.0f}/s "
                    f"(its CPU {res['client_cpu_pct']}%); listen overflows "
                    f"{res['listen_overflows']}"
                    + (f"; errors {res['errors']} ({res['first_error']})" if res["errors"]
                       else ""))
                if res["open"] == 0:
                    raise Failed(f"{name} opened no stream: {res['first_error']}")
            finally:
                ctx.procs.stop(t.proc)
    finally:
        emu.stop()
    return out


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def token_churn(ctx, lifetime, secs):
    """Token acquisitions under saturation when tokens live only `lifetime` seconds."""
    emu = Emulator(ctx, f"churn{lifetime}")
    try:
        emu.control("POST", "/emulator/token-lifetime", {"lifetime_secs": lifetime})
        t = start_entra_proxy(ctx, emu, f"churn{lifetime}")
        try:
            t_before = emu.token_requests()
            wait_answers(ctx, t, BODY, 30, "entra-proxy (churn)")
            t_ready = emu.token_requests()
            started = time.monotonic()
            res = load(ctx, t, BODY, ctx.mode["throughput_conns"], secs)
            took = time.monotonic() - started
            t_after = emu.token_requests()
        finally:
            ctx.procs.stop(t.proc)
    finally:
        emu.stop()
    # refresh_at(): a quarter of the lifetime for tokens shorter than ~10 minutes; the first
    # refresh may come sooner (the first token was acquired before the load started).
    interval = lifetime / 4.0
    out = {
        "token_lifetime_secs": lifetime,
        "load_secs": secs,
        "requests": res["requests"],
        "errors": load_errors(res),
        "token_calls_startup": t_ready - t_before,
        "token_calls_under_load": t_after - t_ready,
        "expected_under_load": int(took // interval) + 1,
    }
    log(f"token churn: {out['token_calls_under_load']} acquisitions in {secs}s of load with "
        f"{lifetime}s tokens (one per refresh interval: at most {out['expected_under_load']}), "
        f"{out['requests']} requests, {out['errors']} errors")
    return out


# --- memory flatness --------------------------------------------------------------------------


def rss_flatness(ctx):
    """entra-proxy's RSS as requests add up: plain wrk at saturation against the fast upstream
    (the bench key as --key), in segments, RSS (VmRSS) read after each; reported at the first
    reading past each checkpoint (default 1M, 5M, 10M requests). Bounded by --rss-max-secs:
    checkpoints not reached by then are reported as not reached."""
    m = ctx.mode
    checkpoints = sorted(ctx.rss_checkpoints)
    seg = m["rss_segment_secs"]
    emu = Emulator(ctx, "rss")
    up = t = None
    out = {"checkpoints": checkpoints, "max_secs": ctx.rss_max_secs, "conns":
           m["throughput_conns"], "key": ctx.key_kind, "curve": [], "at": {}}
    try:
        up = StaticUpstream(ctx, "rss", ctx.upstream_workers)
        t = start_entra_proxy(ctx, emu, "rss", up.port, ctx.key_extra)
        wait_answers(ctx, t, BODY, 30, "entra-proxy (rss)")
        out["start_rss_kb"] = procs.rss_kb(t.pid)
        total, errors, rate = 0, 0, None
        started = time.monotonic()
        while len(out["at"]) < len(checkpoints):
            elapsed = time.monotonic() - started
            if elapsed >= ctx.rss_max_secs:
                break
            nxt = next(cp for cp in checkpoints if str(cp) not in out["at"])
            # The first segment is short: it measures the rate the next ones aim with.
            secs = seg if rate else min(seg, 2)
            if rate:
                # Stop near the next checkpoint rather than far past it.
                secs = max(1, min(seg, math.ceil((nxt - total) / rate)))
            secs = max(1, min(secs, int(ctx.rss_max_secs - elapsed) or 1))
            res = load(ctx, t, BODY, m["throughput_conns"], secs)
            check_load(ctx, t, "rss", res)
            total += res["requests"]
            errors += load_errors(res)
            rate = res["requests"] / max(1e-3, res["duration_us"] / 1e6)
            point = {"requests": total, "secs": round(time.monotonic() - started, 1),
                     "rss_kb": procs.rss_kb(t.pid)}
            out["curve"].append(point)
            crossed = [cp for cp in checkpoints if str(cp) not in out["at"] and total >= cp]
            for cp in crossed:
                out["at"][str(cp)] = point
            if crossed:
                log(f"rss: {total} requests after {point['secs']} s: RSS "
                    f"{point['rss_kb'] / 1024:.1f} MB")
        out.update(requests=total, errors=errors, took_secs=round(time.monotonic() - started, 1),
                   peak_rss_kb=procs.hwm_kb(t.pid))
        reached = [out["at"][str(cp)]["rss_kb"] for cp in checkpoints if str(cp) in out["at"]]
        if len(reached) >= 2:
            out["growth_kb"] = reached[-1] - reached[0]
        missing = [cp for cp in checkpoints if str(cp) not in out["at"]]
        if missing:
            out["not_reached"] = missing
            log(f"rss: {missing} not reached within {ctx.rss_max_secs} s ({total} requests)")
    finally:
        if t:
            ctx.procs.stop(t.proc)
        if up:
            up.stop()
        emu.stop()
    return out


# --- limits accounting ----------------------------------------------------------------------

# Limits on the bench key that never refuse: every request is admitted and charged.
KEY_LIMITS = """requests_per_minute = 4000000000
tokens_per_minute = 1000000000000
token_quota = 1000000000000000
token_quota_period = "month"
"""


class RedisServer:
    """A redis-server of the run's own: a free loopback port, a temporary directory, no
    persistence; stopped (by pid) at the end."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=ctx.out)
        self.proc = ctx.procs.spawn("redis", [
            ctx.redis, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"],
            env=child_env())
        deadline = time.monotonic() + 20
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"redis-server did not start; see {ctx.out}/redis.log")
            time.sleep(0.02)

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        self.ctx.procs.stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def commandstats(self):
        """Calls per command so far (`INFO commandstats`: commands run inside scripts count
        too), or None when Redis does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"INFO commandstats\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    head, _, rest = data.partition(b"\r\n")
                    if head.startswith(b"$") and len(rest) >= int(head[1:]):
                        break
        except OSError:
            return None
        calls = {}
        for line in data.decode(errors="replace").splitlines():
            # cmdstat_evalsha:calls=123,usec=...
            if line.startswith("cmdstat_") and ":calls=" in line:
                name, _, rest = line[len("cmdstat_"):].partition(":calls=")
                calls[name] = int(rest.split(",", 1)[0])
        return calls


def commands_per_request(before, after, requests):
    """Redis commands per proxied request between two `commandstats` samples: in all, and by
    command (`evalsha` is the round trips; the rest run inside the scripts)."""
    if before is None or after is None or requests <= 0:
        return None
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta.pop("info", None)
    by = {k: round(v / requests, 3) for k, v in sorted(delta.items()) if v > 0}
    return {"total": round(sum(delta.values()) / requests, 3), "by_command": by}


def limits_cost(ctx):
    """What per-key limits cost a request: entra-proxy against the fast upstream with no limits
    on its key, with limits counted in memory, and with limits counted in Redis. Throughput and
    CPU per request at saturation (the proxy's, and Redis's own), latency at a paced rate.
    The same wrk against the upstream directly, in every repetition, is the generator check."""
    m = ctx.mode
    emu = Emulator(ctx, "limits")
    up = redis = None
    setups = [("none", "")]
    setups.append(("memory", KEY_LIMITS))
    out = {"rate": m["limits_rate"], "setups": {}}
    targets = []
    try:
        up = StaticUpstream(ctx, "limits", ctx.upstream_workers)
        if ctx.redis:
            redis = RedisServer(ctx)
            out["redis_version"] = redis_version(ctx)
            setups.append(("redis", KEY_LIMITS + "\n[limits]\n"
                           f'redis_url = "redis://127.0.0.1:{redis.port}/0"\n'
                           'on_redis_error = "deny"\n'))
        else:
            out["skipped"] = "redis-server not installed: no Redis row"
            log("limits: redis-server not installed, no Redis row")
        for name, extra in setups:
            t = start_entra_proxy(ctx, emu, f"limits-{name}", up.port, extra, name=name)
            targets.append(t)
            wait_answers(ctx, t, BODY, 30, f"entra-proxy (limits: {name})")
            if m["warmup_secs"]:
                load(ctx, t, BODY, m["throughput_conns"], m["warmup_secs"])
            out["setups"][name] = {"reps": []}
        direct = Target("direct", up.port, [("Authorization", f"Bearer {emu.mint()}")])
        direct_rps = []
        for _ in range(m["reps"]):
            res = load(ctx, direct, BODY, m["throughput_conns"], m["throughput_secs"])
            check_load(ctx, direct, "limits direct throughput", res)
            direct_rps.append(summarize_load(res)["rps"])
            for t in targets:
                rep = {}
                counting = redis is not None and t.name == "redis"
                stats0 = redis.commandstats() if counting else None
                cpu0 = procs.cpu_seconds(t.pid)
                rcpu0 = procs.cpu_seconds(redis.proc.pid) if redis else None
                res = load(ctx, t, BODY, m["throughput_conns"], m["throughput_secs"])
                cpu1 = procs.cpu_seconds(t.pid)
                rcpu1 = procs.cpu_seconds(redis.proc.pid) if redis else None
                if counting:
                    # The last settlements go out within 50 ms of the last answer.
                    time.sleep(0.2)
                    rep["redis_commands_per_req"] = commands_per_request(
                        stats0, redis.commandstats(), res["requests"])
                check_load(ctx, t, f"limits {t.name} throughput", res)
                n = max(1, res["requests"])
                rep["throughput"] = summarize_load(res)
                rep["cpu_us_per_req"] = round((cpu1 - cpu0) / n * 1e6, 1)
                if redis and t.name == "redis":
                    rep["redis_cpu_us_per_req"] = round((rcpu1 - rcpu0) / n * 1e6, 1)
                rep["fixed_rate"] = paced(ctx, t, up, BODY, m["limits_rate"],
                                          f"limits {t.name} fixed rate")
                out["setups"][t.name]["reps"].append(rep)
                lat = rep["fixed_rate"]["latency_us"]
                cmds = rep.get("redis_commands_per_req")
                log(f"limits {t.name:7s} {rep['throughput']['rps']:>9.1f} req/s  cpu "
                    f"{rep['cpu_us_per_req']}us/req"
                    + (f" (+redis {rep['redis_cpu_us_per_req']}us/req)"
                       if "redis_cpu_us_per_req" in rep else "")
                    + (f"  redis {cmds['total']} cmds/req {cmds['by_command']}" if cmds else "")
                    + f"  p50 {lat['p50']}us p99 {lat['p99']}us @{m['limits_rate']}/s")
        for name, rec in out["setups"].items():
            reps = rec["reps"]
            rec["median"] = {
                "rps": median([r["throughput"]["rps"] for r in reps]),
                "cpu_us_per_req": median([r["cpu_us_per_req"] for r in reps]),
                "redis_cpu_us_per_req": median([r.get("redis_cpu_us_per_req") for r in reps]),
                "redis_commands_per_req": median([
                    (r.get("redis_commands_per_req") or {}).get("total") for r in reps]),
                "redis_evalsha_per_req": median([
                    (r.get("redis_commands_per_req") or {}).get("by_command", {}).get("evalsha")
                    for r in reps]),
                "p50_us": median([r["fixed_rate"]["latency_us"]["p50"] for r in reps]),
                "p99_us": median([r["fixed_rate"]["latency_us"]["p99"] for r in reps]),
                "errors": sum(r["throughput"]["errors"] + r["fixed_rate"]["errors"]
                              for r in reps),
            }
        out["generator_check"] = g = generator_check(
            dict({n: {"median": r["median"]} for n, r in out["setups"].items()},
                 direct={"median": {"rps": median(direct_rps)}}))
        if g.get("valid") is False:
            log(f"limits: INVALID: {g['why']}")
    finally:
        for t in targets:
            ctx.procs.stop(t.proc)
        if redis:
            redis.stop()
        if up:
            up.stop()
        emu.stop()
    return out


def redis_version(ctx):
    try:
        p = subprocess.run([ctx.redis, "--version"], capture_output=True, text=True, timeout=30)
        return p.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


# --- main -----------------------------------------------------------------------------------


class Ctx:
    pass


def parse_counts(text):
    """"1M,5M,10M" → [1000000, 5000000, 10000000]."""
    out = []
    for word in text.split(","):
        word = word.strip().lower()
        if not word:
            continue
        mult = {"k": 1_000, "m": 1_000_000}.get(word[-1], 1)
        out.append(int(float(word.rstrip("km")) * mult))
    return out


def versions(ctx):
    v = {"nproc": ctx.nproc, "kernel": platform.release(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    v["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def out(argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return None

    v["entra_proxy"] = out([ctx.bin, "--version"])
    v["azure_emulator"] = out([ctx.emulator, "--version"])
    v["load_generator"] = out([ctx.wrk, "-v"]) if ctx.wrk else "python asyncio fallback (loadgen.py)"
    if ctx.nginx:
        v["nginx"] = out([ctx.nginx, "-v"])
    if ctx.redis:
        v["redis"] = out([ctx.redis, "--version"])
    if ctx.litellm and "litellm" in ctx.targets:
        v["litellm"] = out([ctx.litellm, "--version"])
    return v


def main():
    ap = argparse.ArgumentParser(description="entra-proxy load benchmark (see benches/load.sh)")
    ap.add_argument("--mode", choices=sorted(MODES), default="full")
    ap.add_argument("--bin", required=True, help="the entra-proxy binary")
    ap.add_argument("--emulator", default=None,
                    help="the azure-emulator binary (default: next to --bin)")
    ap.add_argument("--out", required=True, help="output directory (target/bench)")
    ap.add_argument("--reps", type=int, help="repetitions (default: 3 full, 1 smoke)")
    ap.add_argument("--targets", default=None,
                    help="default: all four (smoke: all but LiteLLM, which takes ~15 s to start)")
    ap.add_argument("--variants", default=None,
                    help=f"of {list(VARIANTS)} (default: full {MODES['full']['variants']}, "
                         f"smoke {MODES['smoke']['variants']})")
    ap.add_argument("--gen-threads", type=int, default=None,
                    help="wrk threads in the throughput runs (default: one per CPU)")
    ap.add_argument("--key", choices=sorted(KEYS), default="tpm",
                    help="the bench key's limits: tpm (tokens_per_minute, never reached: every "
                         "answer metered, streams sent with include_usage) or none")
    ap.add_argument("--sample", type=int, default=None,
                    help="answers checked per target and variant (status and body)")
    ap.add_argument("--streams", type=int, default=None,
                    help="streams held open at once in the streams extra (default 10000; "
                         "smoke 50)")
    ap.add_argument("--rss-checkpoints", default=None, metavar="N,N,…",
                    help="rss extra: requests after which RSS is reported (default "
                         "1M,5M,10M; smoke 2k,5k,10k); k and M suffixes")
    ap.add_argument("--rss-max-secs", type=float, default=None,
                    help="rss extra: stop after this long even if checkpoints are left "
                         "(default 1200; smoke 10)")
    ap.add_argument("--proxy-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for entra-proxy (e.g. RUST_LOG=warn); recorded")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BIN",
                    help="one more entra-proxy target named NAME, from binary BIN (A/B of two "
                         "builds in one run, measured in turn with the others)")
    ap.add_argument("--also-env", action="append", default=[], metavar="NAME:VAR=VALUE",
                    help="extra environment for the --also target NAME")
    ap.add_argument("--max-steal", type=float, default=3.0, metavar="PCT",
                    help="measure a repetition again when the host stole more than PCT%% of the "
                         "CPUs during its throughput run (at most --reps more per target; "
                         "full mode only; 0 or less: never)")
    ap.add_argument("--perf", action="store_true",
                    help="perf record entra-proxy during one more saturation run per variant "
                         "(not counted in the results)")
    ap.add_argument("--cpu-only", action="store_true",
                    help="only the throughput runs (CPU per request and rate), no paced latency "
                         "or TTFB runs between them: for an A/B of builds (--also), whose "
                         "repetitions then run back to back")
    ap.add_argument("--skip-extras", action="store_true",
                    help="skip entra-proxy's startup, idle RSS, open streams, token churn and "
                         "limits accounting (same as --extras '')")
    ap.add_argument("--extras", default=None,
                    help=f"which of {EXTRAS} to measure after the variants (default: full "
                         f"{MODES['full']['extras']}, smoke {MODES['smoke']['extras']})")
    ap.add_argument("--litellm", default=None, help="the litellm executable (default: venv)")
    a = ap.parse_args()

    ctx = Ctx()
    ctx.mode = dict(MODES[a.mode])
    if a.reps:
        ctx.mode["reps"] = a.reps
    if a.sample is not None:
        ctx.mode["sample"] = a.sample
    ctx.mode_name = a.mode
    ctx.key_kind = a.key
    ctx.key_extra = KEYS[a.key]
    ctx.checks = {}
    ctx.streams = a.streams or ctx.mode["streams"]
    ctx.rss_checkpoints = parse_counts(a.rss_checkpoints) if a.rss_checkpoints \
        else ctx.mode["rss_checkpoints"]
    ctx.rss_max_secs = a.rss_max_secs or ctx.mode["rss_max_secs"]
    # Held streams take a descriptor each here and two in the proxy: the soft limit goes to the
    # hard one (as load.sh's ulimit does), which nothing here can raise.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if ctx.nofile == resource.RLIM_INFINITY:
        ctx.nofile = 1 << 20
    ctx.bin = os.path.abspath(a.bin)
    ctx.emulator = os.path.abspath(a.emulator or os.path.join(os.path.dirname(ctx.bin),
                                                               "azure-emulator"))
    results_dir = os.path.abspath(a.out)
    # Logs, configs and profiles of this run only; results.json stays in --out.
    ctx.out = os.path.join(results_dir, "run")
    shutil.rmtree(ctx.out, ignore_errors=True)
    os.makedirs(ctx.out, exist_ok=True)
    ctx.procs = procs.Procs(ctx.out)
    ctx.failures = []
    ctx.nproc = os.cpu_count() or 1
    # The proxy's default worker count (the CPUs it may run on); nginx gets as many workers.
    try:
        ctx.workers = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ctx.workers = ctx.nproc
    # The static upstream's nginx: one worker answers far more than two cores can proxy.
    ctx.upstream_workers = 1
    ctx.gen_threads = a.gen_threads or ctx.workers
    ctx.key = "ep-bench-" + secrets.token_urlsafe(24)
    ctx.key_sha256 = hashlib.sha256(ctx.key.encode()).hexdigest()
    ctx.litellm_key = "sk-bench-" + secrets.token_urlsafe(24)
    # LiteLLM should call Azure "with an api key"; the emulator accepts one only when
    # its CLI has --resource-key. Without it, LiteLLM sends a minted token (azure_ad_token).
    try:
        emu_help = subprocess.run([ctx.emulator, "--help"], capture_output=True,
                                  text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        emu_help = ""
    ctx.resource_key = ("bench-resource-" + secrets.token_hex(16)) \
        if "--resource-key" in emu_help else None
    # BENCH_LOADGEN=python forces the fallback generator (to test it where wrk exists).
    ctx.wrk = None if os.environ.get("BENCH_LOADGEN") == "python" else shutil.which("wrk")
    ctx.perf = shutil.which("perf") if a.perf else None
    ctx.cpu_only = a.cpu_only
    ctx.max_steal = a.max_steal if a.mode == "full" and a.max_steal > 0 else None
    ctx.redis = shutil.which("redis-server")
    # System calls per request: full mode only (one more saturation run per target).
    ctx.perf_stat = shutil.which("perf")
    ctx.strace = shutil.which("strace")
    ctx.syscalls = a.mode == "full" and bool(ctx.perf_stat or ctx.strace)
    ctx.proxy_env = dict(kv.split("=", 1) for kv in a.proxy_env if "=" in kv)
    ctx.also = {}
    for kv in a.also:
        name, _, binary = kv.partition("=")
        if not name or name in TARGET_ORDER:
            ap.error(f"--also {kv}: NAME must be new")
        ctx.also[name] = os.path.abspath(binary or a.bin)
    ctx.also_env = {}
    for kv in a.also_env:
        name, _, var = kv.partition(":")
        if name not in ctx.also or "=" not in var:
            ap.error(f"--also-env {kv}: NAME:VAR=VALUE for a NAME given with --also")
        k, _, v = var.partition("=")
        ctx.also_env.setdefault(name, {})[k] = v
    ctx.perf_data = []
    ctx.nginx = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx") or None
    venv_litellm = a.litellm or os.path.join(results_dir, "venv", "bin", "litellm")
    ctx.litellm = venv_litellm if os.access(venv_litellm, os.X_OK) else None

    skipped = {}
    if a.targets is None:
        a.targets = ",".join(t for t in TARGET_ORDER if a.mode == "full" or t != "litellm")
    wanted = [t for t in a.targets.split(",") if t]
    unknown = [t for t in wanted if t not in TARGET_ORDER]
    if unknown:
        ap.error(f"unknown target(s) {unknown}; known: {TARGET_ORDER}")
    ctx.targets = []
    for t in TARGET_ORDER:
        if t not in wanted:
            continue
        if t == "nginx" and not ctx.nginx:
            skipped[t] = "nginx not installed"
            continue
        if t == "litellm" and not ctx.litellm:
            skipped[t] = f"no LiteLLM at {venv_litellm}"
            continue
        ctx.targets.append(t)
        if t == "entra-proxy":
            ctx.targets += list(ctx.also)
    for t, why in skipped.items():
        log(f"skipping {t}: {why}")
    if not ctx.wrk:
        log("wrk not found: using the Python fallback load generator (numbers are only a "
            "pipeline check)")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    results = {
        "schema": 1,
        "mode": a.mode,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": versions(ctx),
        "settings": dict(ctx.mode, path=PATH, body=BODY, stream_body=STREAM_BODY,
                         key=ctx.key_kind, key_limits=ctx.key_extra.strip(),
                         generator_margin=GENERATOR_MARGIN, generator_threads=ctx.gen_threads,
                         streams=ctx.streams,
                         rss_checkpoints=ctx.rss_checkpoints, rss_max_secs=ctx.rss_max_secs,
                         nofile=ctx.nofile, targets=ctx.targets, skipped=skipped, proxy_env=ctx.proxy_env,
                         also=ctx.also, also_env=ctx.also_env, max_steal_pct=ctx.max_steal,
                         litellm_upstream_credential="api_key" if ctx.resource_key
                         else "azure_ad_token (minted; the emulator has no --resource-key)"),
        "variants": {},
        "checks": ctx.checks,
        "entra_proxy": {},
    }
    status = 0
    started = time.monotonic()
    if a.extras is None:
        a.extras = ",".join(ctx.mode["extras"])
    if a.variants is None:
        a.variants = ",".join(ctx.mode["variants"])
    extras = [] if a.skip_extras else [x for x in a.extras.split(",") if x]
    unknown = [x for x in extras if x not in EXTRAS]
    if unknown:
        ap.error(f"unknown extra(s) {unknown}; known: {EXTRAS}")
    try:
        for v in [x for x in a.variants.split(",") if x]:
            if v not in VARIANTS:
                raise Failed(f"unknown variant {v}; known: {sorted(VARIANTS)}")
            if VARIANTS[v].get("upstream") == "nginx-static" and not ctx.nginx:
                log(f"skipping variant {v}: its upstream is nginx, which is not installed")
                results["settings"].setdefault("skipped_variants", {})[v] = "nginx not installed"
                continue
            results["variants"][v] = run_variant(ctx, v, VARIANTS[v])
        if "entra-proxy" in ctx.targets:
            if "startup" in extras:
                results["entra_proxy"]["startup"] = proxy_startup(ctx)
            if "streams" in extras:
                results["entra_proxy"]["open_streams"] = open_streams(ctx)
            if "churn" in extras:
                results["entra_proxy"]["token_churn"] = [
                    token_churn(ctx, lifetime, secs) for lifetime, secs in ctx.mode["churn"]]
            if "limits" in extras:
                if ctx.nginx:
                    results["entra_proxy"]["limits"] = limits_cost(ctx)
                else:
                    log("skipping the limits benchmark: its upstream is nginx, not installed")
            if "rss" in extras:
                if ctx.nginx:
                    results["entra_proxy"]["rss"] = rss_flatness(ctx)
                else:
                    log("skipping the rss run: its upstream is nginx, not installed")
    except Failed as e:
        log(f"FAILED: {e}")
        results["failed"] = str(e)
        status = 1
    except KeyboardInterrupt as e:
        log(f"interrupted: {e}")
        results["failed"] = f"interrupted: {e}"
        status = 130
    except Exception as e:  # noqa: BLE001 - a bug in the harness: still write what we have
        import traceback
        traceback.print_exc()
        results["failed"] = f"harness error: {e!r}"
        status = 1
    finally:
        ctx.procs.stop_all()
    if ctx.perf_data:
        results["perf_top"] = perf_reports(ctx)
    if ctx.failures:
        results["failures"] = ctx.failures
        status = status or 1
    results["took_secs"] = round(time.monotonic() - started, 1)
    results["summary"] = report.derive(results)
    invalid = [v for v, rec in results["variants"].items()
               if rec.get("generator_check", {}).get("valid") is False]
    if invalid:
        log(f"INVALID (the generator check failed): {', '.join(invalid)}; their throughput and "
            "CPU are not a result")
        # A full run whose proxy-cost comparison (the variants with the static upstream: the
        # targets come from them) cannot be trusted is not a result: its own exit status. The
        # emulator's variants are bound by the emulator, by design: INVALID throughput there is
        # expected, and their latency and TTFB stand. A smoke run's status only says whether
        # every target answered, and answered right.
        if status == 0 and a.mode == "full" and any(
                VARIANTS[v].get("upstream") == "nginx-static" for v in invalid):
            status = 3
    path = os.path.join(results_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(report.markdown(results))
    log(f"results in {path} ({results['took_secs']} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
