-- The hot reserve (as reserve.lua) by users who think between clicks: wrk waits delay() ms
-- before each request on a connection, uniform 0..THINK_MAX_MS (default 10000, mean 5 s).
-- wrk starts a request's clock when it is written, so the think time is not in the latency.
-- An open-ish loop: each connection is one user; offered rate ~ connections / (mean think + latency).
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
require("common")
local body
local think_max = tonumber(os.getenv("THINK_MAX_MS") or "10000")

function init(args)
  load_tokens()
  body = '{"ticket_type_id": "' .. os.getenv("HOT_TICKET_TYPE") .. '", "quantity": 1}'
end

-- No think time (THINK_MAX_MS=0): no delay() at all, so wrk sends the next request at once.
if think_max > 0 then
  function delay()
    return math.random(0, think_max)
  end
end

function request()
  return wrk.format("POST", "/bookings/reserve",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token()}, body)
end

-- Answers by status (a 503 is a shed request), summed over wrk's threads in done().
local threads = {}
statuses = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local report = done
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%d', status, n)
  end
  io.write('{"statuses":{', table.concat(parts, ","), "}}\n")
  report(summary, latency, requests)
end
