-- Regressions of issue 11, point 6: each failed on the code before its fix.
local gw = require "luagate"
local testing = require "luagate.testing"

local function write_script(src)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  return path
end

describe("response headers under another spelling", function()
  before_each(function() testing.load({}, {}) end)

  it("an after middleware finds and replaces a header whatever its spelling", function()
    local seen
    local mw = { after = function(req, res)
      seen = res.headers["content-type"]
      res.headers["content-type"] = "application/xml"
      res.headers["x-a"] = "from-after"
    end }
    gw.get("/h", mw, function() return 200, "<a/>", { ["Content-Type"] = "text/html", ["X-A"] = "1" } end)
    local res = testing.get("/h")
    assert.equal("text/html", seen)
    assert.equal("application/xml", res.headers["content-type"])
    assert.equal("from-after", res.headers["x-a"])
    local n = 0
    for k in pairs(res.headers) do if k:lower() == "x-a" then n = n + 1 end end
    assert.equal(1, n)
  end)

  it("a global after middleware sees the handler's headers under any spelling", function()
    gw.use { after = function(req, res) res.headers["Cache-Control"] = res.headers["CACHE-CONTROL"] .. ", x" end }
    gw.get("/c", function() return 200, "x", { ["cache-control"] = "no-store" } end)
    assert.equal("no-store, x", testing.get("/c").headers["cache-control"])
  end)

  it("a handler's shared headers table is not changed by middleware", function()
    local shared = { ["X-Shared"] = "1" }
    gw.get("/s", { after = function(req, res) res.headers["x-shared"] = "changed" end },
           function() return 200, "x", shared end)
    assert.equal("changed", testing.get("/s").headers["x-shared"])
    assert.same({ ["X-Shared"] = "1" }, shared)
  end)

  it("a handler that sets one header under two spellings fails loudly", function()
    gw.get("/two", function() return 200, "x", { ["X-A"] = "1", ["x-a"] = "2" } end)
    assert.has_error(function() testing.get("/two") end)
    local ok, err = pcall(testing.get, "/two")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("set twice", 1, true))
  end)
end)

describe("gw.fetch with a wrong first argument", function()
  it("raises: a programmer's mistake is not a network failure", function()
    testing.load({}, {})
    for _, bad in ipairs { 42, true, {} } do
      local ok, err = pcall(testing.run, function() return gw.fetch(bad, "/x") end)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("expected an upstream name or a URL", 1, true), tostring(err))
    end
  end)
end)

describe("an invalid status from a handler", function()
  it("names the value and the route", function()
    testing.load({}, {})
    gw.get("/items/:id", function() return 99 end)
    gw.get("/big", function() return 600 end)
    local ok, err = pcall(testing.get, "/items/7")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("invalid status 99 for GET /items/7 (route /items/:id)", 1, true), tostring(err))
    ok, err = pcall(testing.get, "/big")
    assert.truthy(tostring(err):find("invalid status 600", 1, true), tostring(err))
  end)
end)

describe("mock_fetch and stub keys: one rule, without the query", function()
  after_each(function() testing.unmock_fetch() end)

  it("a mock keyed by path answers calls with a query, which is in call.query", function()
    testing.load({}, { upstreams = { api = { url = "http://api.invalid" } } })
    local calls = testing.mock_fetch { ["GET /orders"] = function(call) return { status = 200, body = call.query.user } end }
    local res = testing.run(function() return gw.fetch("api", "/orders?user=7") end)
    assert.equal("7", res.body)
    assert.equal("/orders?user=7", calls[1].path)
  end)

  it("the same key answers on a stub", function()
    local stub = testing.stub { ["GET /orders"] = function(req) return 200, req.query.user end }
    testing.load({}, { upstreams = { api = { url = stub.url } } })
    local res = testing.run(function() return gw.fetch("api", "/orders?user=8") end)
    stub.close()
    assert.equal("8", res.body)
  end)

  it("a key with a query is refused by both, saying so", function()
    local ok, err = pcall(testing.mock_fetch, { ["GET /orders?user=7"] = { status = 200 } })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("without a query", 1, true))
    ok, err = pcall(testing.stub, { ["GET /orders?user=7"] = { status = 200 } })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("without a query", 1, true))
  end)
end)

describe("a route registered twice", function()
  it("is refused at load time, naming both registrations", function()
    local a = write_script('local gw = require "luagate"\ngw.get("/dup", function() return 200, "a" end)\n')
    local b = write_script('local gw = require "luagate"\n\ngw.route("GET", "/dup", function() return 200, "b" end)\n')
    local ok, err = pcall(testing.load, { a, b })
    os.remove(a)
    os.remove(b)
    assert.is_false(ok)
    err = tostring(err)
    assert.truthy(err:find("route GET /dup is registered twice", 1, true), err)
    assert.truthy(err:find(a:match("[^/]+$") .. ":2", 1, true), err)
    assert.truthy(err:find(b:match("[^/]+$") .. ":3", 1, true), err)
  end)

  it("also as two spellings of one pattern, but not for another method", function()
    testing.load({}, {})
    gw.get("/users/:id", function() return 200 end)
    gw.post("/users/:name", function() return 201 end)
    assert.has_error(function() gw.get("/users/:name", function() return 200 end) end)
    assert.equal(201, testing.post("/users/3").status)
  end)
end)

describe("many header lines", function()
  it("are all sent, the upstream's and the call's, and the configured auth with them", function()
    local stub = testing.stub {
      ["GET /count"] = function(req)
        local n = 0
        for k in pairs(req.headers) do if k:match("^x%-[uc]%d+$") then n = n + 1 end end
        return 200, { n = n, auth = req.headers.authorization or "none" }
      end,
    }
    local mine, theirs = {}, {}
    for i = 1, 50 do mine["X-U" .. i] = tostring(i) end
    for i = 1, 40 do theirs["X-C" .. i] = tostring(i) end
    testing.load({}, { upstreams = { many = { url = stub.url, headers = mine, auth = { bearer = "T" } } } })
    local res = testing.run(function() return gw.fetch("many", "/count", { headers = theirs }) end)
    stub.close()
    assert.same({ n = 90, auth = "Bearer T" }, res:json()) -- 64 was the old cut, auth dropped first
  end)
end)
