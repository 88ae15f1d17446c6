-- wrk script for bench/gateway/run.py.
-- Env: BENCH_BODY_FILE (request body), BENCH_HEADERS ("Name: value" lines separated by "\n"),
--      BENCH_MAX_REQUESTS (stop each thread after that many responses; 0 = run for -d).
-- Prints one line "BENCHJSON {...}" with counts and latency percentiles in microseconds.
local body_file = os.getenv("BENCH_BODY_FILE")
local f = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  responses = 0
  non2xx = 0
  max_requests = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0") or 0
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if non2xx <= 3 then io.stderr:write("non-2xx " .. status .. ": " .. string.sub(body or "", 1, 300) .. "\n") end
  end
  if max_requests > 0 and responses >= max_requests then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local n2 = 0
  local resp = 0
  for _, t in ipairs(threads) do
    n2 = n2 + (t:get("non2xx") or 0)
    resp = resp + (t:get("responses") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"duration_us": %d, "requests": %d, "responses": %d, "bytes": %d, "non2xx": %d, '
    .. '"err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, "err_timeout": %d, '
    .. '"lat_min": %d, "lat_mean": %.1f, "lat_max": %d, "lat_stdev": %.1f, '
    .. '"p50": %d, "p90": %d, "p99": %d, "p999": %d}\n',
    summary.duration, summary.requests, resp, summary.bytes, n2,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
