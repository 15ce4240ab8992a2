-- Route options ({ body = "stream", timeout = 5 }) and a list of methods, as gw.route takes them.
local testing = require "luagate.testing"
local gw = require "luagate"

describe("route options", function()
  before_each(function() testing.load({}) end)

  it("refuses an unknown option, a body mode that is not one, and a timeout that is not above 0", function()
    assert.has_error(function() gw.get("/a", { bodyy = "stream" }, function() end) end,
                     "unknown route option 'bodyy' (known: body, timeout)")
    assert.has_error(function() gw.post("/a", { body = "streamed" }, function() end) end)
    for _, t in ipairs { 0, -1, "5", 0 / 0 } do
      assert.has_error(function() gw.get("/t" .. tostring(t), { timeout = t }, function() end) end,
                       "route option timeout: seconds for the handler to begin its answer, a number above 0")
    end
  end)

  it("registers a list of methods on one path, each once", function()
    gw.route({ "GET", "post" }, "/both", function(req) return 200, req.method end)
    assert.equal("GET", testing.get("/both").body)
    assert.equal("POST", testing.post("/both").body)
    assert.equal(405, testing.request("PUT", "/both").status)
  end)

  it("takes options then middleware then the handler", function()
    local seen = {}
    gw.get("/mw", { timeout = 3 }, function(req) seen[#seen + 1] = "before" end, function() return 200, "ok" end)
    assert.equal("ok", testing.get("/mw").body)
    assert.same({ "before" }, seen)
  end)
end)
