local json = require "luagate.json"

describe("json", function()
  it("round-trips values", function()
    local v = { a = { 1, 2, 3 }, b = "x", c = true }
    assert.same(v, json.decode(json.encode(v)))
  end)

  it("returns nil and an error for bad input instead of raising", function()
    local v, err = json.decode("[1,")
    assert.is_nil(v)
    assert.matches("invalid JSON", err)
    assert.is_nil((json.decode(nil)))
  end)

  it("encodes lists as arrays and maps as objects", function()
    assert.equal("[1,2]", json.encode { 1, 2 })
    assert.equal('{"a":1}', json.encode { a = 1 })
  end)

  it("raises on values JSON cannot hold (a programmer's mistake)", function()
    assert.has_error(function() json.encode { f = print } end)
  end)
end)
