local config = require "luagate.config"

local function write(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

describe("config", function()
  it("fills defaults and resolves the routes directory next to the file", function()
    local path = write('listen = "127.0.0.1:9999"\nupstreams = { api = { url = "http://127.0.0.1:1/" } }\n')
    local conf = assert(config.load(path))
    os.remove(path)
    assert.same({ { host = "127.0.0.1", port = 9999 } }, conf.listen)
    assert.equal("http://127.0.0.1:1", conf.upstreams.api.url) -- trailing slash dropped
    assert.equal(30, conf.upstreams.api.timeout)
    assert.matches("/routes$", conf.routes)
  end)

  local cases = {
    { 'listen = "127.0.0.1:80"\nlisen = 1\n', ":2: lisen: unknown key" },
    { 'listen = 8080\n', ':1: listen: expected "host:port" or a list of them, got integer 8080' },
    { 'listen = { "127.0.0.1:1", "localhost:1" }\n', ":1: listen: localhost:1 is listed twice" },
    { 'listen = { "127.0.0.1:1", 2 }\n', ":1: listen: [2]: expected a string, got integer 2" },
    { 'lua_path = { "lib", 3 }\n', ":1: lua_path: [2]: expected a directory name, got integer 3" },
    { 'reload_timeout = 0\n', ":1: reload_timeout: must be at least 0.1" },
    { 'listen = "nowhere"\n', ':1: listen: expected "host:port"' },
    { 'upstreams = {\n  api = {\n    url = "http://x",\n    timeout = "5",\n  },\n}\n',
      ':4: upstreams.api.timeout: expected a number, got string "5"' },
    { 'upstreams = {\n  api = {\n    uri = "http://x",\n  },\n}\n', ":3: upstreams.api.uri: unknown key" },
    { 'upstreams = { api = { timeout = 1 } }\n', "upstreams.api.url: required key is missing" },
    { 'max_body_size = 1.5\n', ":1: max_body_size: expected an integer" },
    -- numbers C would take as 64-bit integers (found by fuzz_config: NaN reached a cast)
    { 'read_timeout = 6 % 0\n', ":1: read_timeout: expected a number from -2^53 to 2^53, got" },
    { 'shutdown_timeout = 1e300\n', ":1: shutdown_timeout: expected a number from -2^53 to 2^53, got" },
    { 'max_body_size = 1 / 0\n', ":1: max_body_size: expected an integer, got number" },
    { 'backlog = 1e10\n', ":1: backlog: must be at most 65535" },
    { 'log_level = "loud"\n', ":1: log_level: expected one of debug, error, info, warn" },
    { 'listen = os.getenv("X")\n', ":1: unknown name 'os'" },
    { 'listen = "a:1"\nlisten = \n', ":3:" },
    -- strings' methods are functions too: not in the sandbox
    { 'listen = ("127.0.0.1:8080"):lower()\n', ":1: strings have no methods in the config" },
    { 'x = ("x"):rep(1e9)\n', ":1: strings have no methods in the config" },
  }
  for _, case in ipairs(cases) do
    it("refuses " .. case[1]:gsub("\n", "\\n"), function()
      local path = write(case[1])
      local conf, err = config.load(path)
      os.remove(path)
      assert.is_nil(conf)
      assert.truthy(err:find(path, 1, true), err)
      assert.truthy(err:find(case[2], 1, true), "expected '" .. case[2] .. "' in: " .. err)
    end)
  end

  it("gives each upstream a table default of its own", function()
    local path = write('upstreams = { a = { url = "http://127.0.0.1:1" }, b = { url = "http://127.0.0.1:2" } }\n')
    local conf = assert(config.load(path))
    conf.upstreams.a.headers["X-Only-A"] = "1"
    assert.same({}, conf.upstreams.b.headers)
    assert.same({}, assert(config.load(path)).upstreams.a.headers) -- nor the next config
    os.remove(path)
  end)

  it("takes workers as a count or \"auto\"", function()
    for _, v in ipairs { '2', '"auto"' } do
      local path = write("workers = " .. v .. "\n")
      local conf = assert(config.load(path))
      os.remove(path)
      assert.equal(v == '2' and 2 or "auto", conf.workers)
    end
  end)

  it("takes several listen addresses, and resolves paths next to the config file", function()
    local path = write('listen = { "127.0.0.1:1", "[::1]:2" }\nlua_path = { "lib", "/abs" }\n'
                       .. 'pid = "run/gw.pid"\nerror_log = "/var/log/gw.log"\n')
    local conf = assert(config.load(path))
    os.remove(path)
    local dir = path:match("^(.*)/")
    assert.same({ { host = "127.0.0.1", port = 1 }, { host = "::1", port = 2 } }, conf.listen)
    assert.same({ dir .. "/lib", "/abs" }, conf.lua_path)
    assert.equal(dir .. "/run/gw.pid", conf.pid)
    assert.equal("/var/log/gw.log", conf.error_log)
    path = write("")
    assert.equal("stderr", assert(config.load(path)).error_log)
    os.remove(path)
  end)

  it("names a file it cannot open", function()
    local conf, err = config.load("/nonexistent/gateway.conf")
    assert.is_nil(conf)
    assert.matches("/nonexistent/gateway.conf: cannot open", err)
  end)
end)
