-- /v1/dashboard against three real stub upstreams on loopback.
local testing = require "luagate.testing"
local gw = require "luagate"

describe("GET /v1/dashboard/:user", function()
  local users, orders, recs
  local function slow(body) return function() gw.sleep(0.3) return 200, body end end

  setup(function()
    users = testing.stub { ["GET /users/:id"] = function(req) gw.sleep(0.3) return 200, { id = req.params.id } end }
    orders = testing.stub { ["GET /orders"] = slow { { id = 1 } } }
    recs = testing.stub { ["GET /recommendations"] = { status = 500, body = "boom" } }
  end)
  teardown(function() users.close() orders.close() recs.close() end)

  local function load(rec_url)
    testing.load("routes/dashboard.lua", { upstreams = {
      users = { url = users.url }, orders = { url = orders.url }, recommendations = { url = rec_url or recs.url },
    } })
  end

  it("merges the three answers, fetched at once", function()
    load()
    local t0 = gw.now()
    local res = testing.get("/v1/dashboard/7")
    assert.is_true(gw.now() - t0 < 0.55, "two 0.3 s upstreams should overlap")
    local body = res:json()
    assert.equal(200, res.status)
    assert.equal("7", body.profile.id)
    assert.same({ { id = 1 } }, body.orders)
    assert.equal("7", orders.requests[#orders.requests].query.user)
  end)

  it("returns the others when one upstream fails, with the failure marked", function()
    load()
    local body = testing.get("/v1/dashboard/7"):json()
    assert.is_true(body.partial)
    assert.equal("upstream answered 500", body.errors.recommendations)
    load(testing.closed_url)
    body = testing.get("/v1/dashboard/7"):json()
    assert.matches("connection refused", body.errors.recommendations)
    assert.is_table(body.profile)
  end)

  it("answers 502 when every upstream fails", function()
    testing.load("routes/dashboard.lua", { upstreams = {
      users = { url = testing.closed_url }, orders = { url = testing.closed_url }, recommendations = { url = testing.closed_url },
    } })
    assert.equal(502, testing.get("/v1/dashboard/7").status)
  end)

  it("refuses user ids that would change the upstream path", function()
    load()
    assert.equal(400, testing.get("/v1/dashboard/a%20b").status)
  end)
end)
