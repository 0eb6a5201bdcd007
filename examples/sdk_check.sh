#!/usr/bin/env sh
# Runs the Python OpenAI SDK examples (both AzureOpenAI and OpenAI(base_url=…/v1), plain and
# streamed; then responses, files, audio and realtime) against `entra-proxy demo` on loopback. Usage: examples/sdk_check.sh PYTHON BINARY
set -eu
PY=${1:?python with the openai package}
BIN=${2:?entra-proxy binary}
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
OUT=$(mktemp)
"$BIN" demo --listen "127.0.0.1:$PORT" >"$OUT" 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$OUT"' EXIT
for _ in $(seq 1 100); do
  grep -q '"api-key: ep-' "$OUT" && break
  sleep 0.1
done
KEY=$(grep -o '"api-key: ep-[A-Za-z0-9_-]*' "$OUT" | head -1 | sed 's/"api-key: //')
[ -n "$KEY" ] || { echo "sdk_check: the demo printed no key" >&2; exit 1; }
PROXY="http://127.0.0.1:$PORT" KEY="$KEY" timeout 60 "$PY" "$(dirname "$0")/openai_sdk.py"
PROXY="http://127.0.0.1:$PORT" KEY="$KEY" timeout 60 "$PY" "$(dirname "$0")/sdk_surfaces.py"
