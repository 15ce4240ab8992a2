local testing = require "luagate.testing"

describe("GET /hello", function()
  setup(function() testing.load("routes/hello.lua") end)

  it("answers with a JSON greeting", function()
    local res = testing.get("/hello")
    assert.equal(200, res.status)
    assert.equal("application/json", res.headers["Content-Type"])
    assert.same({ hello = "world" }, res:json())
  end)

  it("answers HEAD like GET", function()
    assert.equal(200, testing.request("HEAD", "/hello").status)
  end)

  it("refuses other methods with 405 and Allow", function()
    local res = testing.post("/hello")
    assert.equal(405, res.status)
    assert.equal("GET, HEAD", res.headers.allow)
  end)
end)
