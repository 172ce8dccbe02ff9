-- Shared by the scenario scripts (loaded with dofile). Each wrk thread counts the answers its
-- scenario did not expect in the global `bad`; done() adds them up over the threads and prints
-- one line, "BENCH_RESULT {json}", that bench/run.sh reads.

bad = 0
exhausted = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

-- Environment values the scenario needs; a missing one is a bug in run.sh.
function need_env(name)
  local v = os.getenv(name)
  if v == nil or v == "" then
    error("bench: " .. name .. " is not set")
  end
  return v
end

function done(summary, latency, requests)
  local unexpected, out_of_codes = 0, 0
  for _, t in ipairs(threads) do
    unexpected = unexpected + (t:get("bad") or 0)
    out_of_codes = out_of_codes + (t:get("exhausted") or 0)
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"mean_us":%.1f,"max_us":%d,"unexpected":%d,"status_errors":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"out_of_codes":%d}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, unexpected, e.status, e.connect, e.read, e.write, e.timeout, out_of_codes))
end
