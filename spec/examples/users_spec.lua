-- spec/examples/users_spec.lua, for examples/routes/users.lua (the example at the top of this README)
local testing = require "luagate.testing"

describe("GET /v1/users/:id", function()
  local api
  setup(function()
    api = testing.stub {
      ["GET /users/7"] = { status = 200, body = { id = 7, name = "Ada" } },
      ["GET /orders"] = function(req) return 200, { user = req.query.user, orders = {} } end,
    }
    testing.load("examples/routes/users.lua", { upstreams = {
      api = { url = api.url }, billing = { url = testing.closed_url },
    } })
  end)
  teardown(function() api.close() end)

  it("merges the user and their orders", function()
    local res = testing.get("/v1/users/7")
    assert.equal(200, res.status)
    assert.equal("Ada", res:json().user.name)
    assert.equal("/users/7", api.requests[1].path)
  end)

  it("answers 502 when the API is down, without the network", function()
    testing.mock_fetch {}   -- every fetch fails as refused
    assert.equal(502, testing.get("/v1/users/7").status)
    testing.unmock_fetch()
  end)
end)
