-- A latency probe beside a crowd (bench/crowd_probe.py): the hot reserve, one connection per wrk
-- thread (-t N -c N), so each thread's request() and response() alternate and the latency of
-- every answer can be split by status (served 201 vs shed 503), which wrk's own histogram cannot.
-- Think time as in reserve_think.lua (THINK_MAX_MS). Clock: clock_gettime through LuaJIT's ffi.
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
require("common")
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } timespec_t;
  int clock_gettime(int clk_id, timespec_t *tp);
]]
local ts = ffi.new("timespec_t")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local body
local think_max = tonumber(os.getenv("THINK_MAX_MS") or "10000")
local sent_at = nil
samples = {}  -- "status latency_ms" strings, read by done() through thread:get

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
  sent_at = now_ms()
  return wrk.format("POST", "/bookings/reserve",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token()}, body)
end

function response(status, headers, body)
  if sent_at then
    samples[#samples + 1] = status .. " " .. string.format("%.2f", now_ms() - sent_at)
    sent_at = nil
  end
end

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for _, s in ipairs(t:get("samples")) do
      io.write("sample ", s, "\n")
    end
  end
end
