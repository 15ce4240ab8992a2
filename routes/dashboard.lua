-- GET /v1/dashboard/:user: one call answered with the merged results of three upstream APIs,
-- fetched at once (the time taken is the slowest one's, not the sum). When one is down the others
-- are still returned, with the failure marked; only when all fail is the answer 502.
local gw = require "luagate"

local PARTS = { "profile", "orders", "recommendations" }

gw.get("/v1/dashboard/:user", function(req)
  local user = req.params.user
  if not user:match("^[%w_-]+$") then return 400, { error = "user ids are letters, digits, _ and -" } end

  local results, errors = gw.fetch_all {
    profile = { "users", "/users/" .. user },
    orders = { "orders", "/orders?user=" .. user },
    recommendations = { "recommendations", "/recommendations?user=" .. user },
  }

  local out, failed = { user = user, errors = {} }, 0
  for _, part in ipairs(PARTS) do
    local res = results[part]
    local body = res and res.status == 200 and res:json()
    if body then
      out[part] = body
    else
      failed = failed + 1
      out.errors[part] = errors[part] or ("upstream answered " .. res.status)
    end
  end
  out.partial = failed > 0
  if failed == #PARTS then return 502, out end
  return 200, out
end)
