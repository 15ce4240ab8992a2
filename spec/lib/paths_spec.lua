-- req.path as the server makes it (decoded, normalised: core/path.c through luagate.path), and
-- gw.is_safe_path, the check for paths sent to upstreams.
local gw = require "luagate"
local normalize = require("luagate.path").normalize
local testing = require "luagate.testing"

describe("req.path normalisation", function()
  it("decodes and resolves dot-segments (RFC 3986 5.2.4)", function()
    local cases = {
      ["/"] = "/", ["/a/b"] = "/a/b", ["/a/./b"] = "/a/b", ["/a/../b"] = "/b", ["/a/b/.."] = "/a/",
      ["/a/b/../"] = "/a/", ["/admin/./"] = "/admin/", ["/admin/."] = "/admin/", ["/./admin"] = "/admin",
      ["/files/%2e%2e/admin"] = "/admin", ["/files/%2E./admin"] = "/admin", ["/a/.%2e"] = "/",
      ["//admin"] = "/admin", ["/a//b///c"] = "/a/b/c", ["/a/"] = "/a/", ["/hell%6F"] = "/hello",
      ["/a%20b"] = "/a b", ["/caf%C3%A9"] = "/caf\195\169", ["/..a/b.."] = "/..a/b..", ["/.../x"] = "/.../x",
      ["*"] = "*",
    }
    for input, want in pairs(cases) do
      assert.equal(want, normalize(input), input)
    end
  end)

  it("refuses encoded slashes, NUL, malformed escapes and climbing above the root", function()
    local cases = {
      ["/files/..%2Fadmin"] = "encoded slash", ["/a%2fb"] = "encoded slash", ["/a%00"] = "NUL", ["/a\0b"] = "NUL",
      ["/a%zz"] = "malformed", ["/a%4"] = "malformed", ["/a%"] = "malformed", ["/a%u002e"] = "malformed",
      ["/.."] = "above the root", ["/a/../.."] = "above the root", ["/%2e%2e/x"] = "above the root",
      ["a/b"] = "start with '/'", [""] = "start with '/'",
    }
    for input, why in pairs(cases) do
      local p, err = normalize(input)
      assert.is_nil(p, input)
      assert.truthy(err:find(why, 1, true), input .. ": " .. tostring(err))
    end
  end)

  it("routes on the normalised path, so a rule on /admin cannot be walked around", function()
    testing.load({}, {})
    local guarded = 0
    gw.get("/admin", function(req)
      if req.headers["x-key"] ~= "k" then guarded = guarded + 1 return 403, "no" end
      return 200, "admin"
    end)
    gw.get("/files/*rest", function(req) return 200, "file " .. req.params.rest end)
    for _, target in ipairs { "/files/%2e%2e/admin", "/files/../admin", "/files/./../admin", "//admin",
                              "/admin/./../admin", "/x/..//admin" } do
      assert.equal(403, testing.get(target).status, target)
    end
    assert.equal(6, guarded)
    assert.equal(400, testing.get("/files/..%2Fadmin").status)
    assert.equal(400, testing.get("/files/%2e%2e/%2e%2e/admin").status)
    assert.equal("file a/b", testing.get("/files/a/./b").body)
  end)
end)

describe("gw.is_safe_path", function()
  it("takes plain paths on the upstream's host", function()
    for _, p in ipairs { "/", "/users/1", "/a-b_c.d~e", "/search?q=a+b&x=%41", "/caf%C3%A9", "/caf\195\169",
                         "/%F0%9F%98%80", "/a%2Fb", "/a%20b", "/e?q=%ff%00&r=%2f" } do
      assert.is_true(gw.is_safe_path(p), p)
    end
  end)

  it("refuses what could leave the host or climb", function()
    for _, p in ipairs { "//evil.example/x", "x/y", "", "/a/../b", "/..", "/a\\b", "/a b", "/a\r\nb", "/a#b",
                         "/%2e%2e/x", "/.%2E/x", "/%252e%252e/x", "/a%5cb", "/a%5Cb", "/a%0d%0aX-A:%20b",
                         "/a%00", "/a%09b" } do
      assert.is_false(gw.is_safe_path(p), p)
    end
    assert.is_false(gw.is_safe_path(nil))
    assert.is_false(gw.is_safe_path(42))
  end)

  it("refuses malformed and %u escapes", function()
    for _, p in ipairs { "/a%", "/a%4", "/a%zz", "/%u002e%u002e/x", "/%U002E", "/a%%41" } do
      assert.is_false(gw.is_safe_path(p), p)
    end
  end)

  it("refuses overlong and invalid UTF-8, encoded or raw", function()
    for _, p in ipairs { "/%c0%ae%c0%ae/x", "/%C0%AF", "/%e0%80%ae", "/%f0%80%80%ae", "/%c1%9c", "/\192\174",
                         "/%ed%a0%80", "/%f4%90%80%80", "/%ff", "/%80", "/%c3", "/caf\195" } do
      assert.is_false(gw.is_safe_path(p), p)
    end
  end)
end)
