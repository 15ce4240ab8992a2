-- luagate.testing.mock_fetch: a canned answer must look, through the public API, exactly like the
-- same answer from a real upstream, or a spec passes against the mock and the route fails live.
local testing = require "luagate.testing"
local gw = require "luagate"

-- What a handler can see of a response.
local function seen(res)
  local value, err = res:json()
  return {
    status = res.status, body = res.body, content_type = res.content_type,
    thing = res.headers["x-thing"], cookies = res.headers["set-cookie"], json = value, json_err = err ~= nil,
  }
end

describe("mock_fetch answers", function()
  local stub
  local canned = {
    ["GET /obj"] = { status = 201, body = { ok = true }, headers = { ["X-Thing"] = "a" } },
    ["GET /text"] = { status = 404, body = "gone", headers = { ["Content-Type"] = "text/plain", ["Set-Cookie"] = { "a=1", "b=2" } } },
  }
  setup(function()
    stub = testing.stub(canned)
    testing.load({}, { upstreams = { api = { url = stub.url, headers = { ["X-Up"] = "1" }, auth = { bearer = "T" } } } })
  end)
  teardown(function() stub.close() end)
  after_each(function() testing.unmock_fetch() end)

  local function fetch_both(path)
    local real = testing.run(function() return assert(gw.fetch("api", path)) end)
    testing.mock_fetch(canned)
    local mocked = testing.run(function() return assert(gw.fetch("api", path)) end)
    testing.unmock_fetch()
    return real, mocked
  end

  it("are what a real upstream gives for the same canned answer", function()
    for _, path in ipairs { "/obj", "/text" } do
      local real, mocked = fetch_both(path)
      assert.same(seen(real), seen(mocked))
      assert.equal(getmetatable(real), getmetatable(mocked))
    end
  end)

  it("have lower-case header names, a repeated header as a list", function()
    testing.mock_fetch { ["GET /h"] = { headers = { ["X-Mixed-Case"] = "v", ["SET-COOKIE"] = { "a=1", "b=2" }, ["X-N"] = 5 } } }
    local res = testing.run(function() return gw.fetch("api", "/h") end)
    assert.equal(200, res.status)
    assert.equal("", res.body)
    assert.same({ ["x-mixed-case"] = "v", ["set-cookie"] = { "a=1", "b=2" }, ["x-n"] = "5" }, res.headers)
    assert.is_nil(res.content_type) -- as from an upstream that sends none
  end)

  it("take their content type from a header in any spelling", function()
    testing.mock_fetch { ["GET /csv"] = { body = "a,b", headers = { ["CONTENT-type"] = "text/csv" } } }
    local res = testing.run(function() return gw.fetch("api", "/csv") end)
    assert.equal("text/csv", res.content_type)
    assert.equal("text/csv", res.headers["content-type"])
  end)

  it("send a table body as JSON with its content type, from a function too", function()
    testing.mock_fetch {
      ["GET /f"] = function(call) return { status = 200, body = { path = call.path } } end,
      ["GET /typed"] = { body = { n = 1 }, headers = { ["Content-Type"] = "application/vnd.x+json" } },
    }
    local res, typed = testing.run(function() return gw.fetch("api", "/f"), gw.fetch("api", "/typed") end)
    assert.equal("application/json", res.content_type)
    assert.equal("application/json", res.headers["content-type"])
    assert.same({ path = "/f" }, res:json())
    assert.equal("application/vnd.x+json", typed.content_type) -- the spec's own type wins
    assert.same({ n = 1 }, typed:json())
  end)

  it("fail with the mock's own error, or as refused when nothing is canned", function()
    testing.mock_fetch { ["GET /t"] = function() return nil, "timeout: canned" end }
    local r1, e1 = testing.run(function() return gw.fetch("api", "/t") end)
    local r2, e2 = testing.run(function() return gw.fetch("api", "/none") end)
    assert.is_nil(r1)
    assert.equal("timeout: canned", e1)
    assert.is_nil(r2)
    assert.matches("^connection refused", e2)
  end)

  it("give the mock its own copy of the request's header lines", function()
    local who = testing.stub { ["GET /who"] = function(req)
      return 200, { up = req.headers["x-up"], evil = req.headers["x-evil"], auth = req.headers.authorization }
    end }
    testing.load({}, { upstreams = { api = { url = who.url, headers = { ["X-Up"] = "1" }, auth = { bearer = "T" } } } })
    local got = {}
    testing.mock_fetch { ["GET /who"] = function(call)
      got[#got + 1] = table.concat(call.headers, "|")
      call.headers[#call.headers + 1] = "X-Evil: 1" -- a careless mock: this must not reach the upstream
      call.headers[1] = "X-Up: changed"
      return { status = 200 }
    end }
    testing.run(function() return gw.fetch("api", "/who"), gw.fetch("api", "/who") end)
    testing.unmock_fetch()
    local res = testing.run(function() return gw.fetch("api", "/who") end)
    who.close()
    assert.same({ up = "1", auth = "Bearer T" }, res:json())
    assert.same({ "X-Up: 1|Authorization: Bearer T", "X-Up: 1|Authorization: Bearer T" }, got)
    testing.load({}, { upstreams = { api = { url = stub.url, headers = { ["X-Up"] = "1" }, auth = { bearer = "T" } } } })
  end)
end)
