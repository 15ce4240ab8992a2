-- GET /hello: the smallest route. A table body is sent as JSON.
local gw = require "luagate"

gw.get("/hello", function()
  return 200, { hello = "world" }
end)
