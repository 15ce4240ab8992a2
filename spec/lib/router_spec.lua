local router = require "luagate.router"

describe("router", function()
  local r, h1, h2, h3, h4
  before_each(function()
    r = router.new()
    h1, h2, h3, h4 = function() end, function() end, function() end, function() end
    r:add("GET", "/users", h1)
    r:add("GET", "/users/:id", h2)
    r:add("DELETE", "/users/:id", h3)
    r:add("GET", "/files/*rest", h4)
  end)

  it("matches static paths", function()
    local h, params = r:match("GET", "/users")
    assert.equal(h1, h)
    assert.same({}, params)
  end)

  it("captures path parameters", function()
    local h, params, pattern = r:match("GET", "/users/42")
    assert.equal(h2, h)
    assert.same({ id = "42" }, params)
    assert.equal("/users/:id", pattern)  -- what req.route holds: a label that never grows with paths
    assert.equal(h3, (r:match("DELETE", "/users/42")))
  end)

  it("captures the rest of the path with *name", function()
    local h, params = r:match("GET", "/files/a/b/c.txt")
    assert.equal(h4, h)
    assert.equal("a/b/c.txt", params.rest)
  end)

  it("serves HEAD with the GET handler", function()
    assert.equal(h1, (r:match("HEAD", "/users")))
  end)

  it("tells a wrong method (405 and Allow) from an unknown path (404)", function()
    local h, params, allow = r:match("POST", "/users/1")
    assert.is_nil(h)
    assert.is_nil(params)
    assert.equal("DELETE, GET, HEAD", allow)
    h, params, allow = r:match("GET", "/nope")
    assert.is_nil(h)
    assert.is_nil(allow)
  end)

  it("does not let a parameter span segments, nor treat Lua pattern characters specially", function()
    assert.is_nil((r:match("GET", "/users/1/2")))
    r:add("GET", "/a.b/:x", h1)
    assert.is_nil((r:match("GET", "/aXb/1")))
    assert.equal(h1, (r:match("GET", "/a.b/1")))
  end)

  it("rejects malformed routes when they are added", function()
    assert.has_error(function() r:add("GET", "no-slash", h1) end)
    assert.has_error(function() r:add("GET", "/x/*rest/more", h1) end)
    assert.has_error(function() r:add("GET", "/x", "not a function") end)
  end)
end)
