-- GET /v1/proxy?path=/some/path: forward a GET to the upstream named "api" in gateway.conf and
-- answer with its status, content type and body.
--
-- gw.fetch yields this handler's coroutine to the event loop until the upstream answers, so
-- thousands of these requests can wait at once without a thread each. The upstream's base URL,
-- credentials and timeouts come from gateway.conf, never from the client.
local gw = require "luagate"

gw.get("/v1/proxy", function(req)
  local path = req.query.path
  if not gw.is_safe_path(path) then
    -- Only paths on the configured host: no "//other.host", no "..", no control characters.
    return 400, { error = "query parameter 'path' must be an absolute path such as /users/1" }
  end

  local res, err = gw.fetch("api", path)
  if not res then
    return gw.upstream_error(err) -- 504 on timeout, 502 when refused or unreachable
  end

  -- res.headers holds every response header; the content type is also at hand as res.content_type.
  return res.status, res.body, { ["Content-Type"] = res.content_type or "application/octet-stream" }
end)
