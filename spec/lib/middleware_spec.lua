local testing = require "luagate.testing"
local gw = require "luagate"

describe("middleware", function()
  before_each(function()
    testing.load({}, { credentials = { api_keys = { alice = "k-alice" }, basic = { bob = "pw" } } })
  end)

  it("runs before hooks in order and lets one answer for the handler", function()
    local seen = {}
    gw.use(function() seen[#seen + 1] = "global" end)
    local deny = function(req) if req.headers["x-deny"] then return 403, { error = "denied" } end end
    gw.get("/x", function() seen[#seen + 1] = "route" end, deny, function() return 200, "ok" end)
    assert.equal("ok", testing.get("/x").body)
    assert.same({ "global", "route" }, seen)
    local res = testing.get("/x", { headers = { ["X-Deny"] = "1" } })
    assert.equal(403, res.status)
    assert.equal("denied", res:json().error)
  end)

  it("lets after hooks change any answer, 404s included", function()
    gw.use { after = function(_, res) res.headers["X-Served-By"] = "luagate" end }
    gw.get("/t", { after = function(_, res) res.body.extra = true end }, function() return 200, { a = 1 } end)
    local res = testing.get("/t")
    assert.same({ a = 1, extra = true }, res:json())
    assert.equal("luagate", res.headers["x-served-by"])
    assert.equal("luagate", testing.get("/nope").headers["x-served-by"])
  end)

  it("api_key checks the config's keys and names the consumer", function()
    gw.get("/k", gw.auth.api_key(), function(req) return 200, { consumer = req.consumer } end)
    assert.equal(401, testing.get("/k").status)
    assert.equal(401, testing.get("/k", { headers = { ["X-API-Key"] = "wrong" } }).status)
    local res = testing.get("/k", { headers = { ["X-API-Key"] = "k-alice" } })
    assert.equal(200, res.status)
    assert.equal("alice", res:json().consumer)
  end)

  it("api_key can take the key from a query parameter and from keys given in the script", function()
    gw.get("/q", gw.auth.api_key { query = "apikey", keys = { svc = "s3" } }, function(req) return 200, req.consumer end)
    assert.equal("svc", testing.get("/q?apikey=s3").body)
    assert.equal(401, testing.get("/q?apikey=k-alice").status)
  end)

  it("basic checks the config's users and challenges with the realm", function()
    gw.get("/b", gw.auth.basic { realm = "admin" }, function(req) return 200, req.consumer end)
    local res = testing.get("/b")
    assert.equal(401, res.status)
    assert.equal('Basic realm="admin"', res.headers["www-authenticate"])
    assert.equal(401, testing.get("/b", { headers = { authorization = "Basic Ym9iOm5vcGU=" } }).status) -- bob:nope
    assert.equal("bob", testing.get("/b", { headers = { authorization = "Basic Ym9iOnB3" } }).body)  -- bob:pw
  end)

  it("cors answers preflights and marks answers for allowed origins", function()
    gw.use(gw.cors { origins = { "https://app.example" }, headers = { "Content-Type" }, max_age = 60 })
    gw.get("/c", function() return 200, "ok" end)
    local pre = testing.request("OPTIONS", "/c", { headers = {
      Origin = "https://app.example", ["Access-Control-Request-Method"] = "GET" } })
    assert.equal(204, pre.status)
    assert.equal("https://app.example", pre.headers["access-control-allow-origin"])
    assert.equal("Content-Type", pre.headers["access-control-allow-headers"])
    assert.equal("60", pre.headers["access-control-max-age"])
    assert.equal("Origin", pre.headers.vary)
    local res = testing.get("/c", { headers = { Origin = "https://app.example" } })
    assert.equal("https://app.example", res.headers["access-control-allow-origin"])
    assert.is_nil(testing.get("/c", { headers = { Origin = "https://evil.example" } }).headers["access-control-allow-origin"])
    assert.equal(403, testing.request("OPTIONS", "/c", { headers = {
      Origin = "https://evil.example", ["Access-Control-Request-Method"] = "GET" } }).status)
  end)

  it("refuses things that are not middleware when the route is added", function()
    assert.has_error(function() gw.get("/bad", 42, function() end) end)
  end)
end)
