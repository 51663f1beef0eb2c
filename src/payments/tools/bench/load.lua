-- wrk's script for `payments bench`: wrk --script=load.lua URL -- TARGET PREFIX ACCOUNTS
-- One new key per request, so that every request is a first payment (or a first write).
local target, prefix, accounts
local counter = 0
local threads = 0
local headers = {["content-type"] = "application/json"}

-- wrk calls setup in its main Lua state, once per thread, so this count numbers the threads.
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

-- wrk calls init in each thread's own Lua state with the arguments after `--`.
function init(args)
  target, prefix, accounts = args[1], args[2], tonumber(args[3])
end

function request()
  counter = counter + 1
  local key = prefix .. "-" .. thread_id .. "-" .. counter
  if target == "payments" then
    local body = '{"accountId": "acct-' .. (counter % accounts) .. '", "amount": 1}'
    return wrk.format("POST", "/payments/" .. key .. "/makePayment", headers, body)
  elseif target == "minimal" then
    return wrk.format("POST", "/minimal/" .. key .. "/touch")
  end
  return wrk.format("GET", "/restate/health")
end

-- The line runner.py looks for: the marker, then the figures as JSON.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d,'
      .. ' "p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
