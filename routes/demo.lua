-- A small demo API served by luagate itself under /demo, so that the default gateway.conf can
-- point its "api" upstream at this same process and /v1/proxy works with no other service.
-- It checks the basic-auth credentials that gateway.conf gives the "api" upstream.
local gw = require "luagate"

local USER, PASSWORD = "demo", "demo-secret"

local function authorised(req)
  local auth = req.headers.authorization
  local b64 = auth and auth:match("^Basic%s+(%S+)$")
  if not b64 then return false end
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local bits = b64:gsub("=", ""):gsub(".", function(c)
    local i = chars:find(c, 1, true)
    if not i then return "" end
    local n, s = i - 1, ""
    for b = 5, 0, -1 do s = s .. (math.floor(n / 2 ^ b) % 2) end
    return s
  end)
  local decoded = bits:gsub("%d%d%d%d%d%d%d%d", function(byte) return string.char(tonumber(byte, 2)) end)
  return decoded:sub(1, math.floor(#bits / 8)) == USER .. ":" .. PASSWORD
end

local function demo(method, path, handler)
  gw.route(method, path, function(req)
    if not authorised(req) then
      return 401, { error = "demo API: basic auth required" }, { ["WWW-Authenticate"] = 'Basic realm="demo"' }
    end
    return handler(req)
  end)
end

-- GET /demo/json: a fixed document.
demo("GET", "/demo/json", function()
  return 200, { ok = true, items = { 1, 2, 3 }, name = "demo" }
end)

-- GET /demo/slow?s=1: answers after s seconds (a slow upstream), without blocking anything else.
demo("GET", "/demo/slow", function(req)
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
demo("GET", "/demo/echo", echo)
demo("POST", "/demo/echo", echo)

-- GET /demo/status/:code: answers with that status.
demo("GET", "/demo/status/:code", function(req)
  local code = tonumber(req.params.code)
  if not code or code < 200 or code > 599 then return 400, { error = "code must be 200..599" } end
  return code, { status = code }
end)
