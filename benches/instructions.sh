#!/usr/bin/env bash
# Instructions the proxy executes per proxied request, counted by callgrind: repeatable for the
# same binary and inputs whatever else the machine is doing, so two builds can be compared on a
# busy machine where timings cannot.
#
#   benches/instructions.sh [PROXY_BIN] [EMULATOR_BIN]
#
# Defaults: target/release/entra-proxy and target/release/azure-emulator (built when missing).
# Runs the proxy (one worker) under callgrind twice — SMALL then LARGE keep-alive requests with
# an api-key, through /v1/chat/completions to the emulator on 127.0.0.1 — and prints
# (instructions(LARGE) - instructions(SMALL)) / (LARGE - SMALL): start-up, token acquisition and
# shutdown cancel out (and counting starts only after start-up and a first request). The proxy logs at RUST_LOG (default info: one access line per request,
# as shipped). KEY_LIMITS="tokens_per_minute = 1000000000" (any [[keys]] lines) gives the key
# limits, so admission, the prompt estimate and the usage meter run on every request.
# CALLGRIND_KEEP=DIR keeps both callgrind outputs there, for callgrind_annotate (per-function
# counts: compare two builds function by function).
# Loopback only; needs valgrind (apt-get install valgrind).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROXY="${1:-$ROOT/target/release/entra-proxy}"
EMULATOR="${2:-$ROOT/target/release/azure-emulator}"
SMALL="${SMALL:-100}"
LARGE="${LARGE:-400}"
if [ ! -x "$PROXY" ] || [ ! -x "$EMULATOR" ]; then
  (cd "$ROOT" && cargo build --release --locked -p entra-proxy -p azure-emulator --bins)
fi
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind" >&2; exit 69; }

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 600); do
    python3 - "$1" <<'EOF' && return 0
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
EOF
    sleep 0.1
  done
  echo "instructions.sh: $1 did not answer" >&2
  exit 1
}

EMU_PORT="$(free_port)"
"$EMULATOR" --listen "127.0.0.1:$EMU_PORT" >"$WORK/emulator.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$EMU_PORT/emulator/stats"

KEY="bench-instructions-key"
SHA="$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)"

run() { # $1 = requests; prints the total instructions of the proxy process
  local n="$1" port out
  port="$(free_port)"
  out="$WORK/callgrind.$n"
  cat >"$WORK/proxy-$n.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
workers = 1
[azure]
emulator = "http://127.0.0.1:$EMU_PORT"
[identity]
kind = "managed-identity"
[[backends]]
name = "primary"
endpoint = "http://127.0.0.1:$EMU_PORT"
[[models]]
name = "gpt-4o"
backend = "primary"
deployment = "gpt-4o"
[[keys]]
name = "bench"
sha256 = "$SHA"
${KEY_LIMITS:-}
EOF
  # Counting starts after start-up and one warm-up request: start-up seeds the TLS stack's
  # random generator from CPU jitter, whose loops vary from run to run by millions of
  # instructions, and the first request builds what later ones reuse.
  RUST_LOG="${RUST_LOG:-info}" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out" \
    "$PROXY" serve --config "$WORK/proxy-$n.toml" >"$WORK/proxy-$n.log" 2>&1 &
  local pid=$!
  wait_http "http://127.0.0.1:$port/readyz"
  requests "$port" 1
  callgrind_control --instr=on "$pid" >/dev/null 2>&1
  requests "$port" "$n"
  kill -TERM "$pid"
  wait "$pid" || true
  if [ -n "${CALLGRIND_KEEP:-}" ]; then mkdir -p "$CALLGRIND_KEEP" && cp "$out" "$CALLGRIND_KEEP/"; fi
  awk '/^summary:|^totals:/ { print $2; exit }' "$out"
}

requests() { # $1 = port, $2 = how many, on one keep-alive connection
  python3 - "$1" "$2" "$KEY" <<'EOF'
import http.client, json, sys
port, n, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("POST", "/v1/chat/completions", body, {"api-key": key, "content-type": "application/json"})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"proxy answered {r.status}")
EOF
}

A="$(run "$SMALL")"
B="$(run "$LARGE")"
echo "instructions per proxied request: $(( (B - A) / (LARGE - SMALL) ))  ($PROXY; $SMALL→$LARGE requests: $A → $B)"
