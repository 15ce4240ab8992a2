-- /v1/proxy against a real stub upstream on loopback: real coroutine yields, real libcurl.
local testing = require "luagate.testing"
local gw = require "luagate"

describe("GET /v1/proxy", function()
  local stub

  setup(function()
    stub = testing.stub {
      ["GET /json"] = { status = 200, body = { ok = true } },
      ["GET /missing"] = { status = 404, body = "no such thing", headers = { ["Content-Type"] = "text/plain" } },
      ["GET /slow"] = function() gw.sleep(2) return 200, "late" end,
      ["GET /whoami"] = function(req)
        return 200, { auth = req.headers.authorization, request_id = req.headers["x-request-id"], q = req.query.q }
      end,
    }
    testing.load("routes/proxy.lua", { upstreams = {
      api = { url = stub.url, timeout = 0.5, auth = { user = "gw", password = "s3cret" } },
    } })
  end)

  teardown(function() stub.close() end)

  it("returns the upstream's status, content type and body", function()
    local res = testing.get("/v1/proxy?path=/json")
    assert.equal(200, res.status)
    assert.equal("application/json", res.headers["content-type"])
    assert.same({ ok = true }, res:json())
  end)

  it("passes an upstream error status through", function()
    local res = testing.get("/v1/proxy?path=/missing")
    assert.equal(404, res.status)
    assert.equal("text/plain", res.headers["content-type"])
    assert.equal("no such thing", res.body)
  end)

  it("sends the configured credentials, the request id and the upstream query", function()
    local res = testing.get("/v1/proxy?path=%2Fwhoami%3Fq%3Dhi", { id = "req-42" })
    local body = res:json()
    assert.equal("Basic Z3c6czNjcmV0", body.auth) -- base64("gw:s3cret")
    assert.equal("req-42", body.request_id)
    assert.equal("hi", body.q)
  end)

  it("answers 504 when the upstream is slower than its timeout", function()
    local res = testing.get("/v1/proxy?path=/slow")
    assert.equal(504, res.status)
    assert.equal("timeout", res:json().kind)
    assert.is_nil(res.body:find("127.0.0.1", 1, true), "the answer never shows the upstream's address")
  end)

  it("refuses paths that could leave the upstream's host", function()
    for _, p in ipairs { "//evil.example/x", "http://evil.example/", "/a/../b", "/a%2e%2e/b", "/a b", "" } do
      local res = testing.get("/v1/proxy?path=" .. require("luagate.request").escape(p))
      assert.equal(400, res.status, "path " .. p)
    end
    local before = #stub.requests
    testing.get("/v1/proxy")
    assert.equal(before, #stub.requests)
  end)
end)

describe("GET /v1/proxy with the upstream down", function()
  it("answers 502", function()
    testing.load("routes/proxy.lua", { upstreams = { api = { url = testing.closed_url } } })
    local res = testing.get("/v1/proxy?path=/json")
    assert.equal(502, res.status)
    assert.equal("connection refused", res:json().kind)
    assert.is_nil(res.body:find("127.0.0.1", 1, true), "the answer never shows the upstream's address")
  end)
end)
