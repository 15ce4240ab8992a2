-- A small demo API served by luagate itself under /demo, so that the default gateway.conf can
-- point its upstreams at this same process and the shipped routes work with no other service.
-- Every /demo route asks for the basic-auth credentials gateway.conf gives those upstreams: the
-- per-route middleware gw.auth.basic answers 401 before the handler runs otherwise.
local gw = require "luagate"

local auth = gw.auth.basic { realm = "demo", users = { demo = "demo-secret" } }

-- GET /demo/json: a fixed document.
gw.get("/demo/json", auth, function()
  return 200, { ok = true, items = { 1, 2, 3 }, name = "demo" }
end)

-- GET /demo/slow?s=1: answers after s seconds (a slow upstream), without blocking anything else.
gw.get("/demo/slow", auth, function(req)
  local s = tonumber(req.query.s) or 1
  gw.sleep(math.min(math.max(s, 0), 60))
  return 200, { ok = true, slow = true, seconds = s }
end)

-- GET|POST /demo/echo: what the demo API received (shows the request id passed on by fetch).
local function echo(req)
  return 200, {
    method = req.method, path = req.path, query = req.query, body = req.body,
    request_id = req.headers["x-request-id"],
  }
end
gw.get("/demo/echo", auth, echo)
gw.post("/demo/echo", auth, echo)

-- GET /demo/status/:code: answers with that status.
gw.get("/demo/status/:code", auth, function(req)
  local code = tonumber(req.params.code)
  if not code or code < 200 or code > 599 then return 400, { error = "code must be 200..599" } end
  return code, { status = code }
end)

-- Three small "services" for the aggregation route (/v1/dashboard): a profile, orders, and
-- recommendations, each a little slow so that fetching them at once visibly pays.
gw.get("/demo/users/:id", auth, function(req)
  gw.sleep(0.05)
  return 200, { id = req.params.id, name = "User " .. req.params.id }
end)

gw.get("/demo/orders", auth, function(req)
  gw.sleep(0.05)
  return 200, { { id = 1, user = req.query.user, total = 42.5 }, { id = 2, user = req.query.user, total = 7 } }
end)

gw.get("/demo/recommendations", auth, function(req)
  gw.sleep(0.05)
  return 200, { { sku = "lua-book", score = 0.9 }, { sku = "c-book", score = 0.8 } }
end)
