-- The whole purchase: reserve on one of 1000 ticket types, then complete that hold with its
-- owner's token. Responses arrive in any order across connections, so a reservation's owner is
-- read from the reservation itself (user_id).
package.path = package.path .. ";" .. os.getenv("BENCH_WRK_DIR") .. "/?.lua"
require("common")
local pending = {}

function init(args)
  load_tokens()
end

function request()
  local job = table.remove(pending)
  if job then
    return wrk.format("POST", "/bookings/complete/" .. job.id,
      {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. job.token},
      '{"payment_method": "CARD"}')
  end
  local tt = string.format("20000000-0000-4000-8000-%012d", math.random(1000))
  return wrk.format("POST", "/bookings/reserve",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token()},
    '{"ticket_type_id": "' .. tt .. '", "quantity": 1}')
end

function response(status, headers, body)
  if status == 201 and string.find(body, '"expires_at"', 1, true) then
    local id = string.match(body, '"id"%s*:%s*"([^"]+)"')
    local user = string.match(body, '"user_id"%s*:%s*"([^"]+)"')
    if id and user and token_of[user] then table.insert(pending, {token = token_of[user], id = id}) end
  end
end
