-- wrk script for the paced (latency) runs of benches/load.sh: one POST with the benchmark's body
-- and one credential header, paced to a fixed request rate, and a JSON summary on stdout.
-- delay() is Lua called before every request: fine below saturation, which is where latency is
-- measured; the throughput runs use throughput.lua, which calls no Lua per request.
--
-- Environment (set by benches/load/run.py):
--   BENCH_PATH        request path and query
--   BENCH_BODY        request body (JSON)
--   BENCH_AUTH_NAME   credential header name ("api-key" or "Authorization")
--   BENCH_AUTH_VALUE  credential header value
--   BENCH_RATE        requests per second for this wrk thread (fixed-rate mode)
--
-- Fixed-rate mode: wrk calls delay() after each response, before that connection sends its
-- next request. The script keeps one schedule per thread (t0, t0 + 1/rate, t0 + 2/rate, …)
-- and returns the milliseconds until the next free slot, so requests leave at the set rate
-- whatever the latency, as long as enough connections are open (-c > rate × latency). When the
-- target falls behind, the schedule restarts from "now" (no catch-up burst). wrk measures
-- latency from the request's first byte written to the response's last byte read; the pacing
-- delay is not counted.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local auth_name = os.getenv("BENCH_AUTH_NAME")
if auth_name and auth_name ~= "" then
  wrk.headers[auth_name] = os.getenv("BENCH_AUTH_VALUE") or ""
end

local rate = tonumber(os.getenv("BENCH_RATE") or "")
if rate and rate > 0 then
  local period = 1000.0 / rate
  local next_slot = nil
  function delay()
    local now = now_ms()
    if next_slot == nil then
      next_slot = now
    end
    next_slot = next_slot + period
    if next_slot < now then
      next_slot = now
    end
    return math.floor(next_slot - now + 0.5)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9))
  io.write("BENCH_JSON " .. out .. "\n")
end
