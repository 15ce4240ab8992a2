-- The example at the top of the README: one upstream call, then two more at once.
-- Needs upstreams "api" and "billing" in the config; its spec is spec/examples/users_spec.lua.
local gw = require "luagate"

gw.get("/v1/users/:id", function(req)
  local user, err = gw.fetch("api", "/users/" .. req.params.id, { timeout = 2 })
  if not user then return gw.upstream_error(err) end        -- 504 on timeout, 502 otherwise
  local res = gw.fetch_all { orders = { "api", "/orders?user=" .. req.params.id },
                             balance = { "billing", "/balance" } }  -- concurrently
  return 200, { user = user:json(), orders = res.orders and res.orders:json() }
end)
