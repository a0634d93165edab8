-- GET WRK_PATH (no token): /events (cached), /events/{slug} (live), /readyz (the ceiling).
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
require("common") -- done(): the JSON summary line
local path = os.getenv("WRK_PATH")

function request()
  return wrk.format("GET", path)
end
