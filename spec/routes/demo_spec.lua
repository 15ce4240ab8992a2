local testing = require "luagate.testing"

describe("the demo upstream (/demo)", function()
  local auth = { authorization = "Basic ZGVtbzpkZW1vLXNlY3JldA==" } -- demo:demo-secret
  setup(function() testing.load("routes/demo.lua") end)

  it("requires the configured basic-auth credentials", function()
    assert.equal(401, testing.get("/demo/json").status)
    assert.equal(401, testing.get("/demo/json", { headers = { authorization = "Basic ZGVtbzp3cm9uZw==" } }).status)
    assert.equal(200, testing.get("/demo/json", { headers = auth }).status)
  end)

  it("serves a fixed document, a status of choice and an echo", function()
    assert.same({ ok = true, items = { 1, 2, 3 }, name = "demo" }, testing.get("/demo/json", { headers = auth }):json())
    assert.equal(418, testing.get("/demo/status/418", { headers = auth }).status)
    local echo = testing.post("/demo/echo?x=1", { headers = auth, body = "hi" }):json()
    assert.same({ "POST", "hi", "1" }, { echo.method, echo.body, echo.query.x })
  end)

  it("answers /demo/slow after the time asked", function()
    local t0 = require("luagate").now()
    assert.equal(200, testing.get("/demo/slow?s=0.2", { headers = auth }).status)
    assert.is_true(require("luagate").now() - t0 >= 0.19)
  end)
end)
