-- /v1/proxy?path=/some/path: forward the request to the upstream named "api" in gateway.conf and
-- send its answer on: status, headers and body. GET, HEAD, DELETE, and POST, PUT and PATCH with
-- their bodies.
--
-- gw.fetch yields this handler's coroutine to the event loop until the upstream's answer begins,
-- so thousands of these requests can wait at once without a thread each. With stream = true it
-- returns at the answer's head; returning the response itself as the body sends the body on to
-- the client as it arrives, whatever its size, in bounded memory: a slow client slows the upstream
-- down instead of filling the gateway. A request body goes the other way just as it arrives
-- ({ body = "stream" } and body = req). The upstream's base URL, credentials and timeouts come
-- from gateway.conf, never from the client.
local gw = require "luagate"

local METHODS = { "GET", "HEAD", "DELETE", "POST", "PUT", "PATCH" }
local STREAM = { stream = true }

gw.route(METHODS, "/v1/proxy", { body = "stream" }, function(req)
  local path = req.query.path
  if not gw.is_safe_path(path) then
    -- Only paths on the configured host: no "//other.host", no "..", no control characters.
    return 400, { error = "query parameter 'path' must be an absolute path such as /users/1" }
  end

  local opts = STREAM
  if req.method ~= "GET" then
    opts = { stream = true, method = req.method, body = req,
             headers = { ["Content-Type"] = req.headers["content-type"] } }
  end
  local res, err = gw.fetch("api", path, opts)
  if not res then
    return gw.upstream_error(err) -- 504 on timeout, 502 when refused or unreachable
  end

  -- The upstream's status, headers (hop-by-hop ones are never passed on) and body.
  return res.status, res
end)
