#!/usr/bin/env bash
# Load benchmark: direct vs entra-proxy vs nginx vs LiteLLM, one machine, one run, against a
# fast upstream (nginx serving a static chat completion, or a static 200-chunk stream) and the
# emulator. A benchmark that cannot flatter: plain wrk for throughput, checked in every run
# against the upstream directly (direct must reach 2x the faster proxy's rate, or the variant is
# INVALID and its throughput is no result); latency from separate paced runs; answers checked
# apart from the load; CPU per request from /proc of the target's processes only.
#
#   benches/load.sh            full run (~25 min, plus the dist build): 3 repetitions; installs
#                              nginx-light, wrk and redis-server (apt) and LiteLLM (venv under
#                              target/bench/) when missing; exit 0, 1 (a target failed or
#                              answered wrong) or 3 (a variant with the static upstream failed
#                              the generator check: the run is no result)
#   benches/load.sh --smoke    seconds: 1 repetition, ~1 s per measurement, variants fast, sse
#                              and sse-usage, 50 held streams, a short rss run; installs nothing,
#                              skips nginx / LiteLLM when absent; exit 0 when every target
#                              answered, and answered right, non-zero otherwise
#
# Options (after the mode): --reps N, --targets direct,entra-proxy,nginx,litellm,
#   --variants fast,sse,sse-usage,instant,latency50,streaming (fast: static JSON from nginx;
#   sse: a static 200-chunk stream, which entra-proxy asks usage for and removes it from;
#   sse-usage: the client asks for usage itself; the others: the emulator),
#   --extras startup,streams,churn,limits,rss (after the variants: entra-proxy's start-up; N
#   streams held open through entra-proxy and nginx; token refresh under load; limits accounting
#   none / memory / Redis; rss: RSS after 1M, 5M, 10M requests — not in the default full run,
#   ~8 min at 20k req/s), --skip-extras (none of them),
#   --key tpm|none (entra-proxy's key: tokens_per_minute, the default, or no limits),
#   --gen-threads N (wrk threads in the throughput runs; default one per CPU),
#   --sample N (answers checked per target and variant), --streams N (default 10000; the proxy
#   needs 2 descriptors per stream: with a lower hard `ulimit -n` it holds what fits and says
#   so), --rss-checkpoints 1M,5M,10M, --rss-max-secs S (default 1200),
#   --proxy-env NAME=VALUE (extra environment for entra-proxy, e.g. RUST_LOG=warn),
#   --also NAME=BIN (one more entra-proxy target from another build, for an A/B in one run,
#   reported repetition by repetition with a sign test; --also-env NAME:VAR=VALUE gives it its
#   own environment, e.g. LD_PRELOAD=...), --cpu-only (throughput runs only, back to back: the
#   tightest A/B of CPU per request),
#   --perf (perf profile of entra-proxy in one more saturation run per variant, not counted),
#   --no-install, --no-netns,
#   --no-build (use target/dist/entra-proxy and target/dist/azure-emulator as they are),
#   --max-steal PCT (full mode: measure a repetition again when the hypervisor took more than
#   PCT% of the CPUs during its throughput run, default 3; 0 never),
#   --out DIR (instead of target/bench; LiteLLM's venv stays in target/bench/venv).
#
# Binaries: ENTRA_PROXY_BIN=PATH and AZURE_EMULATOR_BIN=PATH use those as they are (no build);
# the emulator defaults to the azure-emulator next to the entra-proxy binary. Without them,
# both are built with the dist profile, entra-proxy as the container image builds it.
#
# Output: target/bench/results.json, a Markdown table on stdout, logs of every process under
# target/bench/run/. Everything runs on 127.0.0.1; when `unshare` allows it the run happens in a
# fresh network namespace with only loopback (and a PID namespace: nothing outlives it). The
# whole run is bounded: 300 s in smoke mode, 2400 s in full mode (plus --rss-max-secs with rss).
# No timed assertions: targets are reported met or not, never asserted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/bench"
MODE=full
INSTALL=1
NETNS=1
BUILD=1
PASS=()
RSS_MAX=1200

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke ;;
    --full) MODE=full ;;
    --no-install) INSTALL=0 ;;
    --no-netns) NETNS=0 ;;
    --no-build) BUILD=0 ;;
    --reps|--targets|--variants|--proxy-env|--extras|--also|--also-env|--max-steal|--key|--sample|--streams|--rss-checkpoints|--gen-threads)
      [ $# -ge 2 ] || { echo "load.sh: $1 needs a value" >&2; exit 64; }
      PASS+=("$1" "$2"); shift ;;
    --rss-max-secs)
      [ $# -ge 2 ] || { echo "load.sh: $1 needs a value" >&2; exit 64; }
      RSS_MAX="${2:-1200}"; PASS+=("$1" "$2"); shift ;;
    --skip-extras|--perf|--cpu-only) PASS+=("$1") ;;
    --out) [ $# -ge 2 ] || { echo "load.sh: --out needs a value" >&2; exit 64; }
      OUT="$(mkdir -p "$2" && cd "$2" && pwd)"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$ROOT/benches/load.sh"; exit 0 ;;
    *) echo "load.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
  shift
done
[ "$MODE" = smoke ] && INSTALL=0

mkdir -p "$OUT"
say() { echo "[load.sh] $*" >&2; }

RUN_PID=""
cleanup() {
  # Only what this script started: the run (its namespace takes its children along).
  if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill -TERM "$RUN_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$RUN_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- tools (full mode only installs) -----------------------------------------------------------
if [ "$INSTALL" = 1 ]; then
  apt_pkgs=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_pkgs+=(nginx-light)
  command -v wrk >/dev/null 2>&1 || apt_pkgs+=(wrk)
  command -v redis-server >/dev/null 2>&1 || apt_pkgs+=(redis-server)
  if [ ${#apt_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing ${apt_pkgs[*]} (apt)"
      timeout 600 apt-get update -qq || say "apt-get update failed; trying the install anyway"
      DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${apt_pkgs[@]}" >&2 \
        || say "could not install ${apt_pkgs[*]}; those targets / wrk are skipped"
    else
      say "not root or no apt-get: ${apt_pkgs[*]} not installed"
    fi
  fi
  VENV="$ROOT/target/bench/venv"
  if [ ! -x "$VENV/bin/litellm" ]; then
    say "installing LiteLLM into $VENV (pip; a few minutes)"
    mkdir -p "$ROOT/target/bench"
    { timeout 300 python3 -m venv "$VENV" \
      && timeout 1200 "$VENV/bin/pip" install -q 'litellm[proxy]' >"$ROOT/target/bench/pip.log" 2>&1; } \
      || say "LiteLLM install failed (see target/bench/pip.log); LiteLLM is skipped"
  fi
fi

# --- the binaries ------------------------------------------------------------------------------
# The profile the container image ships (Cargo.toml: profile.dist); entra-proxy without default
# features, as in the image (no demo, no emulator inside); the emulator is its own binary.
BIN="${ENTRA_PROXY_BIN:-$ROOT/target/dist/entra-proxy}"
EMU_BIN="${AZURE_EMULATOR_BIN:-$(dirname "$BIN")/azure-emulator}"
if [ "$BUILD" = 1 ]; then
  pkgs=()
  [ -n "${ENTRA_PROXY_BIN:-}" ] || pkgs+=(-p entra-proxy)
  [ -n "${ENTRA_PROXY_BIN:-}" ] || [ -n "${AZURE_EMULATOR_BIN:-}" ] || pkgs+=(-p azure-emulator)
  if [ ${#pkgs[@]} -gt 0 ]; then
    say "cargo build --profile dist --no-default-features ${pkgs[*]}"
    timeout 1800 cargo build --profile dist --locked --quiet --no-default-features "${pkgs[@]}"
  fi
fi
[ -x "$BIN" ] || { say "no entra-proxy binary at $BIN"; exit 1; }
[ -x "$EMU_BIN" ] || {
  say "no azure-emulator binary at $EMU_BIN (cargo build -p azure-emulator, or set AZURE_EMULATOR_BIN)"
  exit 1
}

# N held streams need 2N descriptors in the proxy (the client's connection and Azure's), N in
# the emulator and N in the client: the soft limit goes up to the hard one. Raising the hard
# limit needs privileges (and a place that allows it); run.py holds what fits and says so.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true

PY=python3
RUN=("$PY" "$ROOT/benches/load/run.py" --mode "$MODE" --bin "$BIN" --emulator "$EMU_BIN"
     --out "$OUT"
     --litellm "$ROOT/target/bench/venv/bin/litellm" ${PASS[@]+"${PASS[@]}"})
# The whole run stops by itself: 300 s in smoke mode, 2400 s in full mode, and the rss extra's
# own bound on top when it is asked for (its default 1200 s).
if [ "$MODE" = smoke ]; then LIMIT=300; else LIMIT=2400; fi
prev=""
for arg in ${PASS[@]+"${PASS[@]}"}; do
  if [ "$prev" = --extras ] && [[ ",$arg," == *,rss,* ]]; then
    LIMIT=$((LIMIT + ${RSS_MAX%.*} + 120))
  fi
  prev="$arg"
done

# Loopback-only network namespace (and a PID namespace, so nothing outlives the run) when the
# kernel lets us; otherwise the same run on the host, still on 127.0.0.1 only.
if [ "$NETNS" = 1 ] && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
   && unshare -n -p -f --mount-proc sh -c 'ip link set lo up' >/dev/null 2>&1; then
  say "running in a loopback-only network namespace (mode $MODE, at most ${LIMIT}s)"
  timeout --kill-after=15 "$LIMIT" unshare -n -p -f --mount-proc --kill-child=SIGTERM \
    sh -c 'ip link set lo up && exec "$@"' sh "${RUN[@]}" &
else
  say "running on the host's loopback (mode $MODE, at most ${LIMIT}s)"
  timeout --kill-after=15 "$LIMIT" "${RUN[@]}" &
fi
RUN_PID=$!
set +e
wait "$RUN_PID"
STATUS=$?
set -e
RUN_PID=""
exit "$STATUS"
