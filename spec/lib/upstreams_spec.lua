-- Changing upstreams at run time through gw.upstreams(): fetch prepares an upstream's header lines
-- and credentials once, and must not go on sending the old ones after a change.
local testing = require "luagate.testing"
local gw = require "luagate"

describe("gw.upstreams", function()
  local who
  setup(function()
    who = testing.stub { ["GET /who"] = function(req)
      return 200, { who = req.headers["x-who"] or "none", auth = req.headers.authorization or "none" }
    end }
  end)
  teardown(function()
    who.close()
    testing.load({}, {})
  end)
  before_each(function()
    testing.load({}, { upstreams = { api = { url = who.url, headers = { ["X-Who"] = "a" }, auth = { bearer = "A" } } } })
  end)

  local function ask(name)
    return testing.run(function()
      local res, err = gw.fetch(name or "api", "/who")
      if not res then return err end
      local v = res:json()
      return v.who .. " " .. v.auth
    end)
  end

  it("uses an upstream replaced through its table from the next fetch", function()
    assert.equal("a Bearer A", ask())
    gw.upstreams().api = { url = who.url, headers = { ["X-Who"] = "b" } }
    assert.equal("b none", ask())
  end)

  it("does not carry fetch's state over to a copy of an upstream", function()
    assert.equal("a Bearer A", ask())
    local copy = {}
    for k, v in pairs(gw.upstreams().api) do copy[k] = v end
    copy.headers, copy.auth = { ["X-Who"] = "c" }, { bearer = "C" }
    gw.upstreams().copy = copy
    assert.equal("c Bearer C", ask("copy"))
    assert.equal("a Bearer A", ask())
  end)

  it("keeps the upstream tables free of fetch's own fields", function()
    ask()
    for k in pairs(gw.upstreams().api) do assert.is_nil(k:find("^_"), "internal field " .. k) end
  end)

  it("sees new headers or auth set on a used upstream at the next fetch", function()
    local api = gw.upstreams().api
    assert.equal("a Bearer A", ask())
    api.headers = { ["X-Who"] = "b" }
    assert.equal("b Bearer A", ask())
    api.auth = { bearer = "B" }
    assert.equal("b Bearer B", ask())
    api.auth.bearer = "C" -- a refreshed token, in place
    assert.equal("b Bearer C", ask())
    api.auth = { user = "u", password = "p" }
    assert.equal("b Basic dTpw", ask())
    api.auth.password = "q"
    assert.equal("b Basic dTpx", ask())
    api.auth = nil
    assert.equal("b none", ask())
  end)

  it("replaces named upstreams with gw.upstreams{...}, checked like the config", function()
    assert.equal("a Bearer A", ask())
    local ups = gw.upstreams { api = { url = who.url .. "/", headers = { ["X-Who"] = "d" } }, other = { url = who.url } }
    assert.equal(gw.upstreams(), ups)
    assert.equal("d none", ask())
    assert.equal("none none", ask("other"))
    assert.equal(who.url, ups.api.url) -- trailing slash dropped, defaults filled in, as in the config
    assert.equal(2, ups.api.retries)
  end)

  it("changes nothing when gw.upstreams{...} is given a bad upstream", function()
    local before = gw.upstreams().api
    local ups, err = gw.upstreams { api = { url = who.url }, bad = { url = who.url, timeout = "5" } }
    assert.is_nil(ups)
    assert.equal('gw.upstreams: upstreams.bad.timeout: expected a number, got string "5"', err)
    assert.equal(before, gw.upstreams().api)
    assert.is_nil(gw.upstreams().bad)
    assert.is_nil(select(1, gw.upstreams { api = "http://x" }))
  end)
end)
