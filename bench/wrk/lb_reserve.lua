-- reserve.lua (POST /bookings/reserve, 1 seat of HOT_TICKET_TYPE) that also counts the answers by
-- status, for bench/lbcompare.py: wrk itself only says "non-2xx". Each thread counts in its own
-- table; done() (main thread) adds them up and prints one JSON line after common.lua's.
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
require("common")
local body
local threads = {}
statuses = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  load_tokens()
  body = '{"ticket_type_id": "' .. os.getenv("HOT_TICKET_TYPE") .. '", "quantity": 1}'
end

function request()
  return wrk.format("POST", "/bookings/reserve",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token()}, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local common_done = done

function done(summary, latency, requests)
  common_done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%.0f', status, n)
  end
  io.write('{"wrk_statuses":{', table.concat(parts, ","), "}}\n")
end
