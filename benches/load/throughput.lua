-- wrk script for the throughput runs of benches/load.sh: one static POST (the benchmark's body
-- and one credential header), built once; no request(), response() or delay() function, so wrk
-- calls no Lua per request or per response and runs as plain wrk does. done() prints a JSON
-- summary once, at the end.
--
-- Environment (set by benches/load/run.py):
--   BENCH_PATH        request path and query
--   BENCH_BODY        request body (JSON)
--   BENCH_AUTH_NAME   credential header name ("api-key" or "Authorization")
--   BENCH_AUTH_VALUE  credential header value

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local auth_name = os.getenv("BENCH_AUTH_NAME")
if auth_name and auth_name ~= "" then
  wrk.headers[auth_name] = os.getenv("BENCH_AUTH_VALUE") or ""
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
