-- The concurrency verbs against a real stub upstream on loopback.
local testing = require "luagate.testing"
local gw = require "luagate"

describe("fetch", function()
  local stub
  setup(function()
    stub = testing.stub {
      ["GET /after/:ms"] = function(req)
        gw.sleep(tonumber(req.params.ms) / 1000)
        return 200, { waited = tonumber(req.params.ms) }
      end,
      ["POST /echo"] = function(req) return 200, req.body, { ["Content-Type"] = req.headers["content-type"] } end,
      ["GET /cookies"] = function() return 200, "", { ["Set-Cookie"] = { "a=1", "b=2" } } end,
      ["GET /fail"] = { status = 503 },
    }
    testing.load({}, { upstreams = { api = { url = stub.url } } })
  end)
  teardown(function() stub.close() end)

  it("fetch_all waits for the slowest, not the sum", function()
    local t0 = gw.now()
    local res, errs = testing.run(function()
      return gw.fetch_all {
        a = { "api", "/after/300" }, b = { "api", "/after/300" }, c = { "api", "/after/300" },
        bad = { "api", "//elsewhere" },
      }
    end)
    local took = gw.now() - t0
    assert.equal(300, res.a:json().waited)
    assert.equal(300, res.c:json().waited)
    assert.matches("bad path", errs.bad)
    assert.is_true(took < 0.8, "three 0.3 s calls took " .. took .. " s")
  end)

  it("fetch_any returns the first good answer and cancels the rest", function()
    local t0 = gw.now()
    local res, key = testing.run(function()
      return gw.fetch_any { slow = { "api", "/after/2000" }, fail = { "api", "/fail" }, fast = { "api", "/after/50" } }
    end)
    assert.equal("fast", key)
    assert.equal(50, res:json().waited)
    assert.is_true(gw.now() - t0 < 1.5)
    assert.equal(0, testing.stats().upstream_active) -- the slow one was cancelled
  end)

  it("fetch by URL with a method, a JSON body and a per-call timeout", function()
    local res = testing.run(function()
      return gw.fetch(stub.url .. "/echo", { method = "POST", body = { n = 1 } })
    end)
    assert.equal(200, res.status)
    assert.same({ n = 1 }, res:json())
    local ok, err = testing.run(function() return gw.fetch("api", "/after/1000", { timeout = 0.1 }) end)
    assert.is_nil(ok)
    assert.matches("^timeout", err)
  end)

  it("sends each call's own method and body on reused connections and handles", function()
    local seen = {}
    local any = testing.stub {
      ["GET /m"] = function(req) seen[#seen + 1] = "GET " .. req.body return 200, "g" end,
      ["POST /m"] = function(req) seen[#seen + 1] = "POST " .. req.body return 200, "p" end,
      ["PUT /m"] = function(req) seen[#seen + 1] = "PUT " .. req.body return 200, "u" end,
      ["DELETE /m"] = function(req) seen[#seen + 1] = "DELETE " .. req.body return 200, "d" end,
    }
    local statuses = testing.run(function()
      local out = {}
      for _, call in ipairs {
        { method = "POST", body = "a" }, {}, { method = "HEAD" }, { method = "DELETE" },
        { method = "PUT", body = "b" }, {}, { method = "get" },
      } do
        local res, err = gw.fetch(any.url .. "/m", call)
        out[#out + 1] = res and (res.status .. ":" .. res.body) or err
      end
      return out
    end)
    any.close()
    assert.same({ "POST a", "GET ", "GET ", "DELETE ", "PUT b", "GET ", "GET " }, seen)
    assert.same({ "200:p", "200:g", "200:", "200:d", "200:u", "200:g", "200:g" }, statuses)
  end)

  it("retries a refused connection (the request was never sent), as the upstream says", function()
    testing.load({}, { upstreams = { down = { url = testing.closed_url, retries = 2 }, once = { url = testing.closed_url, retries = 0 } } })
    local t0 = gw.now()
    local res, err = testing.run(function() return gw.fetch("down", "/x") end)
    local took = gw.now() - t0
    assert.is_nil(res)
    assert.matches("^connection refused", err)
    assert.is_true(took >= 0.095, "two retries wait 20 + 80 ms, took " .. took)
    t0 = gw.now()
    local _, errs = testing.run(function() return gw.fetch_all { a = { "once", "/x" }, b = { "down", "/x", { retries = 1 } } } end)
    took = gw.now() - t0
    assert.matches("^connection refused", errs.a)
    assert.matches("^connection refused", errs.b)
    assert.is_true(took >= 0.019 and took < 0.09, "one retry waits 20 ms, took " .. took)
    testing.load({}, { upstreams = { api = { url = stub.url } } })
  end)

  it("keeps repeated response headers as a list", function()
    local res = testing.run(function() return gw.fetch("api", "/cookies") end)
    assert.same({ "a=1", "b=2" }, res.headers["set-cookie"])
  end)

  it("reuses upstream connections (keep-alive)", function()
    testing.run(function() return gw.fetch("api", "/after/0") end)
    local before = testing.stats().upstream_connections_opened
    for _ = 1, 5 do testing.run(function() return gw.fetch("api", "/after/0") end) end
    assert.equal(before, testing.stats().upstream_connections_opened)
  end)

  it("keeps at most an upstream's keepalive idle connections for it", function()
    local function slow() gw.sleep(0.05) return 200, "ok" end
    local s1, s2, s3 = testing.stub { ["GET /s"] = slow }, testing.stub { ["GET /s"] = slow }, testing.stub { ["GET /s"] = slow }
    testing.load({}, { upstreams = { many = { url = s1.url }, one = { url = s2.url, keepalive = 1 },
                                     none = { url = s3.url, keepalive = 0 } } })
    local function opened_by(calls)
      local before = testing.stats().upstream_connections_opened
      testing.run(function() return gw.fetch_all(calls) end)
      return testing.stats().upstream_connections_opened - before
    end
    local function three(name) return { { name, "/s" }, { name, "/s" }, { name, "/s" } } end
    assert.equal(3, opened_by(three("many")))
    assert.equal(0, opened_by(three("many"))) -- all three were kept
    assert.equal(3, opened_by(three("one")))
    assert.equal(2, opened_by(three("one")))  -- one was kept
    assert.equal(1, opened_by { { "none", "/s" } })
    assert.equal(1, opened_by { { "none", "/s" } }) -- none was kept
    s1.close() s2.close() s3.close()
    testing.load({}, { upstreams = { api = { url = stub.url } } })
  end)

  it("lets a call's own auth replace the upstream's, never add to it", function()
    local who = testing.stub { ["GET /who"] = function(req) return 200, req.headers.authorization or "none" end }
    testing.load({}, { upstreams = { b = { url = who.url, auth = { bearer = "UPSTREAM" } } } })
    local got = testing.run(function()
      local out = {}
      for _, auth in ipairs { false, { bearer = "CALL" }, { user = "u", password = "p" }, {} } do
        out[#out + 1] = gw.fetch("b", "/who", auth and { auth = auth } or nil).body
      end
      return out
    end)
    who.close()
    assert.same({ "Bearer UPSTREAM", "Bearer CALL", "Basic dTpw", "none" }, got)
    testing.load({}, { upstreams = { api = { url = stub.url } } })
  end)

  it("refuses header values with CR or LF", function()
    local res, err = testing.run(function()
      return gw.fetch("api", "/after/0", { headers = { ["X-Evil"] = "a\r\nInjected: 1" } })
    end)
    assert.is_nil(res)
    assert.matches("CR or LF", err)
  end)

  it("fails with a clear error outside a handler", function()
    assert.has_error(function() gw.fetch("api", "/after/0") end)
    local ok, err = pcall(gw.fetch, "api", "/after/0")
    assert.is_false(ok)
    assert.matches("only inside a request handler", err)
  end)

  it("fails with a clear error inside a C call such as a string.gsub callback", function()
    local ok, err = pcall(testing.run, function()
      return ("x"):gsub("x", function() return gw.fetch("api", "/after/0") end)
    end)
    assert.is_false(ok)
    assert.matches("C function is on the call stack", err)
  end)

  it("sleeps without blocking: two sleeps in parallel fetches overlap", function()
    local t0 = gw.now()
    testing.run(function() gw.sleep(0.1) end)
    assert.is_true(gw.now() - t0 >= 0.09)
  end)
end)

describe("mock_fetch", function()
  after_each(function() testing.unmock_fetch() end)

  it("answers the proxy route from canned responses, through a real yield", function()
    testing.load("routes/proxy.lua", { upstreams = { api = { url = "http://api.invalid" } } })
    local calls = testing.mock_fetch { ["GET /json"] = { status = 201, body = { canned = true } } }
    local res = testing.get("/v1/proxy?path=/json")
    assert.equal(201, res.status)
    assert.same({ canned = true }, res:json())
    assert.equal("http://api.invalid/json", calls[1].url)
  end)

  it("fails unknown calls like a refused connection", function()
    testing.load("routes/proxy.lua", { upstreams = { api = { url = "http://api.invalid" } } })
    testing.mock_fetch {}
    assert.equal(502, testing.get("/v1/proxy?path=/other").status)
  end)
end)

describe("gw.upstream_error", function()
  it("answers by the kind of failure, and never names the upstream", function()
    local cases = {
      ["timeout: 10.1.2.3:8080 sent no answer within 2 s"] = { 504, "upstream timed out" },
      ["gateway busy: over max_buffered_size"] = { 503, "gateway busy" },
      ["too many open files: connect to 10.1.2.3:8080"] = { 503, "gateway busy" },
      ["connection refused: 10.1.2.3:8080"] = { 502, "bad gateway" },
      ["bad response: status 700 from 10.1.2.3:8080"] = { 502, "bad gateway" },
    }
    for err, want in pairs(cases) do
      local status, body = gw.upstream_error(err)
      assert.equal(want[1], status, err)
      assert.equal(want[2], body.error, err)
      assert.equal(err:match("^[^:]+"), body.kind)
      for _, v in pairs(body) do assert.not_matches("10.1.2.3", tostring(v), 1, true) end
    end
  end)
end)
