-- POST /bookings/reserve on one hot ticket type (HOT_TICKET_TYPE), quantity 1.
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
require("common")
local body

function init(args)
  load_tokens()
  body = '{"ticket_type_id": "' .. os.getenv("HOT_TICKET_TYPE") .. '", "quantity": 1}'
end

function request()
  return wrk.format("POST", "/bookings/reserve",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token()}, body)
end
