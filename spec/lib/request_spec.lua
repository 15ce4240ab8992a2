local request = require "luagate.request"

describe("request", function()
  it("decodes the query, keeping repeated keys", function()
    local req = request.new("GET", "/p?a=1&b=hello+world&a=2&c=%2Fx%3Dy&flag")
    assert.equal("a=1&b=hello+world&a=2&c=%2Fx%3Dy&flag", req.raw_query)
    assert.same({ a = { "1", "2" }, b = "hello world", c = "/x=y", flag = "" }, req.query)
  end)

  it("decodes odd queries as the Lua decoder did: empty pairs, bad escapes, three values, %00", function()
    assert.same({}, request.decode_query(""))
    assert.same({ a = "", b = "2" }, request.decode_query("&&a&&b=2&"))
    assert.same({ x = "%zz%4", y = "100%" }, request.decode_query("x=%zz%4&y=100%25"))
    assert.same({ k = { "1", "2", "3" } }, request.decode_query("k=1&k=2&k=3"))
    assert.same({ ["a b"] = "=c=" }, request.decode_query("a+b==c="))
    assert.equal("a\0b", request.decode_query("n=a%00b").n)
    local long = ("v"):rep(2000)
    assert.equal(long .. " ", request.decode_query("big=" .. long .. "+").big)
  end)

  it("finds headers whatever their case", function()
    local req = request.new("GET", "/", { headers = { ["X-Thing"] = "v" } })
    assert.equal("v", req.headers["x-thing"])
    assert.equal("v", req.headers["X-THING"])
  end)

  it("parses a JSON body, or says why not", function()
    assert.same({ a = 1 }, request.new("POST", "/", { body = '{"a":1}' }):json())
    local v, err = request.new("POST", "/", { body = "{nope" }):json()
    assert.is_nil(v)
    assert.matches("invalid JSON", err)
  end)

  it("encodes queries that decode back to the same table", function()
    local t = { q = "a b&c", list = { "1", "2" } }
    assert.same(t, request.decode_query(request.encode_query(t)))
  end)
end)
