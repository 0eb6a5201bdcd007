#!/usr/bin/env python3
"""The load benchmark: direct vs entra-proxy vs nginx vs LiteLLM, one machine, one run.

Started by benches/load.sh (which builds, installs in full mode, and puts this in a loopback-only
network namespace when it can). Standard library only.

For each upstream variant (instant, 50 ms latency, 20-event SSE stream: the emulator; fast: nginx
answering a static chat completion, in a process of its own) it starts the upstream, the targets
in front of it, and measures every target with the same request (same path, same body, same
concurrency), repetitions interleaved (rep 1: A B C D, rep 2: A B C D, …). The identity always
comes from the emulator; in the fast variant only the data plane goes to the static nginx.

- throughput: wrk -t1 -c<C> for <T> s, requests/s (saturation); process-tree CPU seconds over
  that run → CPU s per 10k requests;
- latency at a fixed rate: wrk paced by wrk.lua's delay() to <R> requests/s (non-streaming
  variants), p50/p90/p99 as wrk measures them (request written → response read), and the
  CPU time per request of the target's and of the upstream's threads over that run;
- latency against load (instant variant): the same at higher paced rates, each measured only
  while it is at most half the target's saturation throughput of that repetition (beyond
  that, a latency figure measures queueing, not the target);
- streaming variant: time to the first SSE body byte over <N> requests (sse_ttfb.py);
- per variant: peak RSS (VmHWM summed over the target's process tree) and calls to the
  emulator's token endpoints while the target was started and measured;
- full mode: system calls per request of each target's process tree (perf stat of
  raw_syscalls:sys_enter, else strace -c -f) over one more saturation run.

Then, for entra-proxy alone: spawn-to-/healthz time, spawn-to-/readyz time, idle RSS, RSS
with 1,000 SSE streams held open, token acquisitions under load with short-lived tokens, and
the cost of limits accounting (no limits, in memory, Redis) against the fast upstream.

Every child process dies with this one; every measurement is bounded in count and time.
Results: <out>/results.json and a Markdown table on stdout (report.py).
"""

import argparse
import hashlib
import json
import os
import platform
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
import sse_ttfb  # noqa: E402
import streams  # noqa: E402

PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
AUDIENCE = "https://cognitiveservices.azure.com"
MESSAGES = [{"role": "user", "content": "Say hello in five words."}]
BODY = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 32},
                  separators=(",", ":"))
STREAM_BODY = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 32,
                          "stream": True}, separators=(",", ":"))

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
        "ttfb_requests": 40,
        "ttfb_concurrency": 4,
        "streams": 1000,
        "startup_reps": 3,
        # (token lifetime s, load s): a normal refresh, and tokens shorter than the proxy's
        # 10 s expiry margin (entra-proxy's EXPIRY_SAFETY).
        "churn": [[40, 12], [8, 4]],
        "litellm_start_timeout": 180,
        "syscall_secs": 3,
        "limits_rate": 500,
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
        "ttfb_requests": 8,
        "ttfb_concurrency": 2,
        "streams": 50,
        "startup_reps": 1,
        "churn": [],
        "litellm_start_timeout": 120,
        "syscall_secs": 1,
        "limits_rate": 200,
    },
}

# Upstream variants: emulator flags, and whether the request streams.
VARIANTS = {
    "instant": {"latency_ms": 0, "stream_events": 20, "stream_interval_ms": 5, "stream": False,
                "curve": True},
    "latency50": {"latency_ms": 50, "stream_events": 20, "stream_interval_ms": 5, "stream": False},
    "streaming": {"latency_ms": 0, "stream_events": 20, "stream_interval_ms": 5, "stream": True},
    # nginx answering a static chat completion: the upstream costs next to nothing.
    "fast": {"latency_ms": 0, "stream_events": 20, "stream_interval_ms": 5, "stream": False,
             "upstream": "nginx-static"},
}

# The extras measured after the variants (entra-proxy alone, or its limits).
EXTRAS = ["startup", "streams", "churn", "limits"]

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
        conf = fill("upstream.conf.tmpl", os.path.join(prefix, "nginx.conf"),
                    {"PORT": self.port, "PREFIX": prefix, "WORKERS": workers})
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


def wait_answers(ctx, target, body, timeout, what):
    """Sends the benchmark request until it gets a 200; raises Failed after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if target.proc is not None and target.proc.poll() is not None:
            raise Failed(f"{what} exited with {target.proc.returncode}; see its log in {ctx.out}")
        try:
            r = h1.simple_sync("POST", target.port, PATH,
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
                 "PREFIX": prefix, "WORKERS": ctx.workers})
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


def load(ctx, target, body, conns, secs, rate=None):
    """One bounded load run; returns wrk.lua's JSON (or loadgen's, same shape)."""
    headers = target.headers
    if ctx.wrk:
        env = child_env({
            "BENCH_PATH": PATH,
            "BENCH_BODY": body,
            "BENCH_AUTH_NAME": headers[0][0],
            "BENCH_AUTH_VALUE": headers[0][1],
            "BENCH_RATE": str(rate or ""),
        })
        argv = [ctx.wrk, "-t1", f"-c{conns}", f"-d{secs}s", "--timeout", "10s",
                "-s", os.path.join(HERE, "wrk.lua"), f"http://127.0.0.1:{target.port}"]
        try:
            p = subprocess.run(argv, env=env, capture_output=True, text=True,
                               timeout=secs + 30)
        except subprocess.TimeoutExpired as e:
            raise Failed(f"wrk against {target.name} did not stop") from e
        for line in p.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                return json.loads(line[len("BENCH_JSON "):])
        raise Failed(f"wrk against {target.name} printed no result: {p.stdout[-500:]} {p.stderr[-500:]}")
    return loadgen.run(target.port, PATH, headers, body.encode(), conns, secs, rate)


def load_errors(res):
    return sum(res["errors"].values())


def summarize_load(res):
    secs = res["duration_us"] / 1e6 if res["duration_us"] else 0
    return {
        "requests": res["requests"],
        "secs": round(secs, 3),
        "rps": round(res["requests"] / secs, 1) if secs else 0,
        "errors": load_errors(res),
        "errors_by_kind": res["errors"],
        "latency_us": res["latency_us"],
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
    body = STREAM_BODY if vconf["stream"] else BODY
    m = ctx.mode
    rep = {}
    t0 = emu.token_requests()

    perf = None
    if ctx.perf and target.name == "entra-proxy" and not rec["reps"]:
        perf = start_perf(ctx, target, variant)
    cpu0 = procs.cpu_seconds(target.pid) if target.pid else None
    ecpu0 = procs.cpu_seconds(up.proc.pid)
    host0 = procs.host_ticks()
    res = load(ctx, target, body, m["throughput_conns"], m["throughput_secs"])
    host1 = procs.host_ticks()
    cpu1 = procs.cpu_seconds(target.pid) if target.pid else None
    ecpu1 = procs.cpu_seconds(up.proc.pid)
    if perf:
        stop_perf(ctx, perf)
    check_load(ctx, target, f"{variant} throughput", res)
    rep["throughput"] = summarize_load(res)
    n = max(1, res["requests"])
    if target.pid:
        rep["cpu_s_per_10k"] = round((cpu1 - cpu0) / n * 10000, 4)
    rep["upstream_cpu_s_per_10k"] = round((ecpu1 - ecpu0) / n * 10000, 4)
    ticks = host1[1] - host0[1]
    rep["steal_pct"] = round(100 * (host1[0] - host0[0]) / ticks, 1) if ticks > 0 else None

    if not vconf["stream"]:
        rep["fixed_rate"] = paced(ctx, target, up, body, m["rate"], f"{variant} fixed-rate")
        if vconf.get("curve"):
            rep["curve"] = measure_curve(ctx, target, up, body, rep["throughput"]["rps"])
    else:
        tt = sse_ttfb.measure(target.port, PATH, target.headers, body.encode(),
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
    if "fixed_rate" in rep:
        lat = rep["fixed_rate"]["latency_us"]
        line += f"  p50 {lat['p50']:.0f}us p99 {lat['p99']:.0f}us @{rep['fixed_rate']['rps']:.0f}/s"
    if "ttfb" in rep:
        line += f"  ttfb p50 {rep['ttfb']['ttfb_us']['p50']:.0f}us"
    if "cpu_s_per_10k" in rep:
        line += f"  cpu {rep['cpu_s_per_10k'] * 100:.1f}us/req"
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


def paced(ctx, target, up, body, rate, what):
    """One paced run: latency, and CPU time per request of the target and of the upstream
    process `up` (which shows what idle, cold CPUs cost each request at low rates)."""
    m = ctx.mode
    cpu0 = procs.cpu_ns(target.pid) if target.pid else None
    ecpu0 = procs.cpu_ns(up.proc.pid)
    res = load(ctx, target, body, m["rate_conns"], m["rate_secs"], rate=rate)
    cpu1 = procs.cpu_ns(target.pid) if target.pid else None
    ecpu1 = procs.cpu_ns(up.proc.pid)
    check_load(ctx, target, what, res)
    out = summarize_load(res)
    n = max(1, res["requests"])
    if target.pid:
        out["cpu_us_per_req"] = round((cpu1 - cpu0) / n / 1000, 1)
    out["upstream_cpu_us_per_req"] = round((ecpu1 - ecpu0) / n / 1000, 1)
    return out


def measure_curve(ctx, target, up, body, saturation_rps):
    """Fixed-rate latency at each of the mode's higher rates (below half of saturation)."""
    out = {}
    for rate in ctx.mode["curve_rates"]:
        if rate > saturation_rps / 2:
            out[str(rate)] = {"skipped": f"above half its saturation ({saturation_rps:.0f}/s)"}
            continue
        out[str(rate)] = paced(ctx, target, up, body, rate, f"fixed rate {rate}/s")
    return out


def start_perf(ctx, target, variant):
    """perf record of the proxy for the first throughput run of a variant (--perf)."""
    data = os.path.join(ctx.out, f"perf-{variant}.data")
    p = ctx.procs.spawn(f"perf-{variant}", [ctx.perf, "record", "-F", "999", "-g", "-p",
                                            str(target.pid), "-o", data], env=child_env())
    time.sleep(0.5)
    ctx.perf_data.append(data)
    return p


def stop_perf(ctx, p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    ctx.procs.stop(p)


def perf_reports(ctx):
    """Flat profiles (self time by symbol) of the perf.data files, as text next to them."""
    out = {}
    for data in ctx.perf_data:
        txt = data.replace(".data", ".txt")
        try:
            p = subprocess.run([ctx.perf, "report", "-i", data, "--stdio", "--no-children",
                                "--sort", "dso,symbol", "--percent-limit", "0.7", "-g", "none"],
                               capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            continue
        with open(txt, "w") as f:
            f.write(p.stdout)
        top = []
        for ln in p.stdout.splitlines():
            words = ln.split()
            if not words or ln.startswith("#"):
                continue
            while words and words[-1] == "-":
                words.pop()
            top.append(" ".join(words))
        out[os.path.basename(data)] = top[:25]
    return out


def count_syscalls(ctx, target, body, variant):
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
        res = load(ctx, target, body, ctx.mode["throughput_conns"], secs)
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


def summarize_variant(rec, stream):
    reps = rec["reps"]
    s = {
        "rps": median([r["throughput"]["rps"] for r in reps]),
        "errors": sum(r["throughput"]["errors"] + r.get("fixed_rate", {}).get("errors", 0)
                      + r.get("ttfb", {}).get("errors", 0)
                      + sum(c.get("errors", 0) for c in r.get("curve", {}).values())
                      for r in reps),
        "cpu_s_per_10k": median([r.get("cpu_s_per_10k") for r in reps]),
        "cpu_us_per_req": median([r["cpu_s_per_10k"] * 100 if r.get("cpu_s_per_10k") is not None
                                  else None for r in reps]),
        "syscalls_per_req": rec.get("syscalls", {}).get("per_request"),
        "switches_per_req": rec.get("syscalls", {}).get("switches_per_request"),
        "upstream_cpu_s_per_10k": median([r["upstream_cpu_s_per_10k"] for r in reps]),
        "steal_pct_max": max((r["steal_pct"] for r in reps if r.get("steal_pct") is not None),
                             default=None),
        "token_calls": rec["token_calls_start"]
        + sum(r["token_calls"] for r in reps + rec.get("discarded", [])),
        "discarded_reps": len(rec.get("discarded", [])),
        "peak_rss_kb": rec.get("peak_rss_kb"),
    }
    if not stream:
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


def run_variant(ctx, variant, vconf):
    static = vconf.get("upstream") == "nginx-static"
    if static:
        log(f"variant {variant}: static nginx upstream ({ctx.upstream_workers} worker), JSON")
    else:
        log(f"variant {variant}: emulator latency {vconf['latency_ms']} ms, "
            f"{'SSE ' + str(vconf['stream_events']) + ' events' if vconf['stream'] else 'JSON'}")
    emu = Emulator(ctx, variant, vconf["latency_ms"], vconf["stream_events"],
                   vconf["stream_interval_ms"])
    up = None
    body = STREAM_BODY if vconf["stream"] else BODY
    token = emu.mint()
    targets, recs = [], {}
    try:
        # The identity stays the emulator's; the data plane goes to `up`.
        up = StaticUpstream(ctx, variant, ctx.upstream_workers) if static else emu
        for name in ctx.targets:
            t0 = emu.token_requests()
            if name == "direct":
                t = Target("direct", up.port, [("Authorization", f"Bearer {token}")])
                timeout = 10
            elif name == "entra-proxy" or name in ctx.also:
                t = start_entra_proxy(ctx, emu, variant, up.port, name=name)
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
                wait_answers(ctx, t, body, timeout, f"{name} ({variant})")
                if ctx.mode["warmup_secs"]:
                    load(ctx, t, body, ctx.mode["throughput_conns"], ctx.mode["warmup_secs"])
            except Failed as e:
                fail(ctx, recs, name, f"{variant}: {e}")
                continue
            if not t.proc:
                targets.append(t)
            recs[name] = {"reps": [], "token_calls_start": emu.token_requests() - t0}
        live = [t for t in targets if "failed" not in recs.get(t.name, {"failed": 1})]
        for _ in range(ctx.mode["reps"]):
            for t in list(live):
                try:
                    measure_until_quiet(ctx, variant, vconf, t, emu, up, recs[t.name])
                except Failed as e:
                    fail(ctx, recs, t.name, f"{variant}: {e}")
                    live.remove(t)
        if ctx.syscalls and not vconf["stream"]:
            for t in live:
                if t.pid:
                    recs[t.name]["syscalls"] = count_syscalls(ctx, t, body, variant)
        for t in live:
            if t.pid:
                recs[t.name]["peak_rss_kb"] = procs.hwm_kb(t.pid)
            recs[t.name]["median"] = summarize_variant(recs[t.name], vconf["stream"])
        return {"emulator": {k: v for k, v in vconf.items()}, "targets": recs}
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


def open_streams(ctx):
    """RSS of each proxy with N SSE streams held open (slow upstream: 1 event a second)."""
    n = ctx.mode["streams"]
    emu = Emulator(ctx, "streams", 0, 20, 1000)
    out = {"streams": n}
    try:
        token = emu.mint()
        names = [x for x in ("entra-proxy", "nginx") if x in ctx.targets]
        for name in names:
            t = start_entra_proxy(ctx, emu, "streams") if name == "entra-proxy" \
                else start_nginx(ctx, emu, token, "streams")
            try:
                wait_answers(ctx, t, BODY, 30, f"{name} (streams)")
                before = procs.rss_kb(t.pid)

                def sample(pid=t.pid):
                    return {"rss_kb": procs.rss_kb(pid), "hwm_kb": procs.hwm_kb(pid),
                            "upstream_open_streams": emu.stats()["open_streams"]}

                res = streams.hold(t.port, PATH, t.headers, STREAM_BODY.encode(), n, sample,
                                   timeout=60)
                res["rss_before_kb"] = before
                out[name] = res
                log(f"{name}: {res['open']}/{n} streams open in {res['open_all_s']} s, RSS "
                    f"{res['sample']['rss_kb']} KiB (before {before}), upstream open "
                    f"{res['sample']['upstream_open_streams']}"
                    + (f", errors {res['errors']} ({res['first_error']})" if res["errors"] else ""))
                if res["open"] == 0:
                    raise Failed(f"{name} opened no stream: {res['first_error']}")
            finally:
                ctx.procs.stop(t.proc)
    finally:
        emu.stop()
    return out


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


def limits_cost(ctx):
    """What per-key limits cost a request: entra-proxy against the fast upstream with no limits
    on its key, with limits counted in memory, and with limits counted in Redis. Throughput and
    CPU per request at saturation (the proxy's, and Redis's own), latency at a paced rate."""
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
        for _ in range(m["reps"]):
            for t in targets:
                rep = {}
                cpu0 = procs.cpu_seconds(t.pid)
                rcpu0 = procs.cpu_seconds(redis.proc.pid) if redis else None
                res = load(ctx, t, BODY, m["throughput_conns"], m["throughput_secs"])
                cpu1 = procs.cpu_seconds(t.pid)
                rcpu1 = procs.cpu_seconds(redis.proc.pid) if redis else None
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
                log(f"limits {t.name:7s} {rep['throughput']['rps']:>9.1f} req/s  cpu "
                    f"{rep['cpu_us_per_req']}us/req"
                    + (f" (+redis {rep['redis_cpu_us_per_req']}us/req)"
                       if "redis_cpu_us_per_req" in rep else "")
                    + f"  p50 {lat['p50']}us p99 {lat['p99']}us @{m['limits_rate']}/s")
        for name, rec in out["setups"].items():
            reps = rec["reps"]
            rec["median"] = {
                "rps": median([r["throughput"]["rps"] for r in reps]),
                "cpu_us_per_req": median([r["cpu_us_per_req"] for r in reps]),
                "redis_cpu_us_per_req": median([r.get("redis_cpu_us_per_req") for r in reps]),
                "p50_us": median([r["fixed_rate"]["latency_us"]["p50"] for r in reps]),
                "p99_us": median([r["fixed_rate"]["latency_us"]["p99"] for r in reps]),
                "errors": sum(r["throughput"]["errors"] + r["fixed_rate"]["errors"]
                              for r in reps),
            }
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
    ap.add_argument("--variants", default=",".join(VARIANTS))
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
                    help="perf record entra-proxy during its first throughput run per variant")
    ap.add_argument("--skip-extras", action="store_true",
                    help="skip entra-proxy's startup, idle RSS, open streams, token churn and "
                         "limits accounting (same as --extras '')")
    ap.add_argument("--extras", default=",".join(EXTRAS),
                    help=f"which of {EXTRAS} to measure after the variants")
    ap.add_argument("--litellm", default=None, help="the litellm executable (default: venv)")
    a = ap.parse_args()

    ctx = Ctx()
    ctx.mode = dict(MODES[a.mode])
    if a.reps:
        ctx.mode["reps"] = a.reps
    ctx.mode_name = a.mode
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
                         targets=ctx.targets, skipped=skipped, proxy_env=ctx.proxy_env,
                         also=ctx.also, also_env=ctx.also_env, max_steal_pct=ctx.max_steal,
                         litellm_upstream_credential="api_key" if ctx.resource_key
                         else "azure_ad_token (minted; the emulator has no --resource-key)"),
        "variants": {},
        "entra_proxy": {},
    }
    status = 0
    started = time.monotonic()
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
    path = os.path.join(results_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(report.markdown(results))
    log(f"results in {path} ({results['took_secs']} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
