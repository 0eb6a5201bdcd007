#!/usr/bin/env python3
"""Where entra-proxy's instructions go, counted by callgrind: the same for the same binary
however busy the machine is, so the meter's cost per streamed chunk can be compared between
builds where timings cannot.

    python3 benches/load/callgrind.py --bin target/dist/entra-proxy [--streams 100]
        [--requests 2000] [--key tpm|none] [--out target/bench/callgrind]

entra-proxy runs under `valgrind --tool=callgrind` (one serving thread) with the benchmark's key
(tokens_per_minute by default), its identity from the emulator and its data plane to the static
nginx of the load benchmark (upstream.conf.tmpl). Three phases, each counted alone (counters
zeroed before, dumped after, with callgrind_control):

- sse: N streamed requests of the sse variant, one after another on one connection: each a
  200-chunk stream that the proxy asked usage for and removes it from (sse.py); every answer is
  checked byte for byte;
- sse-usage: the same N where the client asked for usage itself (the stream passes unchanged);
- small: M small chat completions (the fast variant's request).

It prints instructions per request and per chunk, and the functions with the most instructions
(self, and inclusive) of each phase; the callgrind files stay in --out for callgrind_annotate or
kcachegrind. Loopback only (in a network namespace of its own when `unshare` allows it);
bounded: every wait has a deadline. Needs valgrind and nginx.
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import procs  # noqa: E402
import run  # noqa: E402
import sse  # noqa: E402


def in_netns():
    """Re-runs this script in a loopback-only network namespace (and PID namespace) once."""
    if os.environ.get("BENCH_NETNS") or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "sh", "-c",
                            "ip link set lo up"], capture_output=True)
    if probe.returncode != 0:
        return False
    env = dict(os.environ, BENCH_NETNS="1")
    argv = ["timeout", "--kill-after=15", "900", "unshare", "-n", "-p", "-f", "--mount-proc",
            "--kill-child=SIGTERM", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            sys.executable] + sys.argv
    sys.exit(subprocess.run(argv, env=env).returncode)


def callgrind_control(*args):
    return subprocess.run(["callgrind_control", *args], capture_output=True, text=True,
                          timeout=120)


def totals(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return None


def profile_of(path):
    """Self and inclusive instructions per function of a callgrind file (its own reader: the
    callgrind_annotate of some valgrind releases folds every thread into `clone`). Inclusive
    is self plus the cost of the calls a function makes; recursion counts more than once."""
    names, self_ir, incl_ir = {}, {}, {}
    fn = None
    in_call = False
    positions = 1  # "positions: line"; "instr line" with --dump-instr=yes
    with open(path) as f:
        for line in f:
            if line.startswith("positions:"):
                positions = len(line.split()) - 1
                continue
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    fn = m.group(1)
                else:
                    fn = line[3:].strip()
                    names[fn] = fn
                in_call = False
                continue
            if line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                continue
            if line.startswith("calls="):
                in_call = True
                continue
            if fn is None or not line[:1] in "0123456789+-*x":
                continue
            words = line.split()
            if len(words) < 1 + positions:
                continue
            ir = int(words[positions]) if len(words) > positions else 0
            if in_call:
                incl_ir[fn] = incl_ir.get(fn, 0) + ir
                in_call = False
            else:
                self_ir[fn] = self_ir.get(fn, 0) + ir
                incl_ir[fn] = incl_ir.get(fn, 0) + ir
    return ({names.get(k, k): v for k, v in self_ir.items()},
            {names.get(k, k): v for k, v in incl_ir.items()})


def top_of(costs, total, n):
    return [{"function": k, "ir": v, "pct": round(100 * v / total, 2) if total else None}
            for k, v in sorted(costs.items(), key=lambda kv: -kv[1])[:n]]


def drive(port, path, body, headers, n, want):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(n):
            c.request("POST", path, body, dict(headers, **{"Content-Type": "application/json"}))
            r = c.getresponse()
            data = r.read()
            if r.status != 200 or (want is not None and data != want):
                raise run.Failed(f"answer {r.status}, {len(data)} bytes: {data[:200]!r}")
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--emulator", default=None)
    ap.add_argument("--out", default="target/bench/callgrind")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--key", choices=sorted(run.KEYS), default="tpm")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if not shutil.which(tool):
            sys.exit(f"callgrind.py: needs {tool} (apt-get install valgrind)")
    in_netns()

    ctx = run.Ctx()
    ctx.bin = os.path.abspath(a.bin)
    ctx.emulator = os.path.abspath(a.emulator or os.path.join(os.path.dirname(ctx.bin),
                                                               "azure-emulator"))
    ctx.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    ctx.out = os.path.abspath(a.out)
    shutil.rmtree(ctx.out, ignore_errors=True)
    os.makedirs(ctx.out)
    ctx.procs = procs.Procs(ctx.out)
    ctx.key = "ep-bench-" + secrets.token_urlsafe(24)
    ctx.key_sha256 = hashlib.sha256(ctx.key.encode()).hexdigest()
    ctx.resource_key = None
    ctx.nofile = 4096
    result = {"bin": ctx.bin, "key": a.key, "streams": a.streams, "requests": a.requests,
              "chunks": sse.CHUNKS, "phases": {}}
    try:
        emu = run.Emulator(ctx, "callgrind")
        up = run.StaticUpstream(ctx, "callgrind")
        port = run.free_port()
        cfg = os.path.join(ctx.out, "entra-proxy.toml")
        run.fill("proxy.toml.tmpl", cfg, {"PORT": port, "EMULATOR_PORT": emu.port,
                                          "UPSTREAM_PORT": up.port,
                                          "KEY_SHA256": ctx.key_sha256})
        with open(cfg) as f:
            text = f.read().replace(f'listen = "127.0.0.1:{port}"\n',
                                    f'listen = "127.0.0.1:{port}"\nworkers = 1\n', 1)
        text += run.KEYS[a.key] + (run.SSE_PROXY_MODELS if a.key == "tpm" else "")
        with open(cfg, "w") as f:
            f.write(text)
        proxy = ctx.procs.spawn("entra-proxy-callgrind", [
            "valgrind", "--tool=callgrind", "--dump-instr=yes",
            f"--callgrind-out-file={ctx.out}/callgrind.out.%p", ctx.bin, "serve", "--config",
            cfg], env=run.child_env({"RUST_LOG": os.environ.get("RUST_LOG", "info")}))
        target = run.Target("entra-proxy", port, [("api-key", ctx.key)], proxy)
        run.wait_answers(ctx, target, run.BODY, 180, "entra-proxy under callgrind")
        headers = {"api-key": ctx.key}
        phases = [("sse", run.SSE_PATH, run.SSE_BODY, a.streams, sse.body(False)),
                  ("sse-usage", run.SSE_USAGE_PATH, run.SSE_USAGE_BODY, a.streams,
                   sse.body(True)),
                  ("small", run.PATH, run.BODY, a.requests, run.static_json())]
        for name, path, body, n, want in phases:
            drive(port, path, body, headers, 5, want)  # warm: pool connection, first stream
            callgrind_control("--zero", str(proxy.pid))
            t0 = time.monotonic()
            drive(port, path, body, headers, n, want)
            took = time.monotonic() - t0
            before = set(os.listdir(ctx.out))
            callgrind_control(f"--dump={name}", str(proxy.pid))
            deadline = time.monotonic() + 60
            dump = None
            while time.monotonic() < deadline and dump is None:
                new = [x for x in set(os.listdir(ctx.out)) - before
                       if x.startswith("callgrind.out")]
                dump = os.path.join(ctx.out, new[0]) if new else None
                time.sleep(0.2)
            if dump is None:
                raise run.Failed(f"callgrind wrote no dump for {name}")
            time.sleep(1.0)  # the dump is written while we look
            ir = totals(dump)
            phase = {"answers": n, "secs_under_callgrind": round(took, 1), "file": dump,
                     "instructions": ir, "per_answer": round(ir / n) if ir else None}
            if name.startswith("sse") and ir:
                phase["per_chunk"] = round(ir / (n * sse.CHUNKS))
            own, incl = profile_of(dump)
            phase["self"] = top_of(own, ir, a.top)
            phase["inclusive"] = top_of(incl, ir, a.top)
            result["phases"][name] = phase
    finally:
        ctx.procs.stop_all()
    with open(os.path.join(ctx.out, "callgrind.json"), "w") as f:
        json.dump(result, f, indent=2)
    for name, ph in result["phases"].items():
        print(f"## {name}: {ph['instructions']:,} instructions for {ph['answers']} answers: "
              f"{ph['per_answer']:,} per answer"
              + (f", {ph['per_chunk']:,} per chunk" if "per_chunk" in ph else ""))
        print()
        print("| self % | self instructions | function |")
        print("|---|---|---|")
        for r in ph["self"]:
            print(f"| {r['pct']:.1f} | {r['ir']:,} | `{r['function'][:110]}` |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
