-- gw.redis against a real redis-server started for this file (testing.redis_server).
local testing = require "luagate.testing"
local gw = require "luagate"
local core = require "luagate.core"

local function run(fn, ...) return testing.run(fn, ...) end

describe("gw.redis", function()
  local srv
  setup(function()
    srv = testing.redis_server()
  end)
  teardown(function() srv.close() end)
  before_each(function()
    testing.load({}, { redis = { main = { url = srv.url .. "/3", timeout = 0.5 } } })
  end)

  it("maps replies to plain Lua values", function()
    local r = gw.redis("main")
    local got = { run(function()
      r:call("DEL", "k", "l", "n")
      return r:call("SET", "k", "v"), r:call("GET", "k"), r:call("INCRBY", "n", 41),
             r:call("RPUSH", "l", "a", 7, 2.5, 1e15, -12, ""), r:call("LRANGE", "l", 0, -1)
    end) }
    assert.same({ "OK", "v", 41, 6, { "a", "7", "2.5", "1000000000000000", "-12", "" } }, got)
    -- A nil reply is nil with no error; inside an array it is gw.redis.null (cjson's null).
    local missing, err = run(function() return r:call("GET", "nope") end)
    assert.is_nil(missing)
    assert.is_nil(err)
    local list = run(function() return r:call("MGET", "k", "nope", "k") end)
    assert.same({ "v", gw.redis.null, "v" }, list)
    assert.equal(gw.json.null, gw.redis.null)
    assert.equal('["v",null,"v"]', gw.json.encode(list))
    -- Binary-safe both ways.
    assert.equal("a\0b\r\n", run(function() r:call("SET", "bin", "a\0b\r\n") return r:call("GET", "bin") end))
  end)

  it("returns an error reply as nil, \"redis error: ...\"", function()
    local v, err = run(function() return gw.redis("main"):call("INCR", "k-not-a-number", "extra") end)
    assert.is_nil(v)
    assert.matches("^redis error: ERR wrong number of arguments", err)
    v, err = run(function()
      local r = gw.redis("main")
      r:call("SET", "s", "x")
      return r:call("INCR", "s")
    end)
    assert.is_nil(v)
    assert.matches("^redis error: ERR value is not an integer", err)
  end)

  it("selects the database of the url", function()
    local id = run(function() return gw.redis("main"):call("CLIENT", "INFO") end)
    assert.matches(" db=3 ", id)
  end)

  it("pipelines the commands of concurrent requests on one connection", function()
    local r = gw.redis("main")
    run(function() r:call("DEL", "c") end)
    -- 50 handlers at once, each INCR: one connection, every increment counted once.
    local clients_before = run(function() return r:call("INFO", "clients") end):match("connected_clients:(%d+)")
    local seen = {}
    local stub = testing.stub { ["GET /incr"] = function() return 200, tostring(r:call("INCR", "c")) end }
    run(function()
      local calls = {}
      for i = 1, 50 do calls[i] = { stub.url .. "/incr" } end
      local res = gw.fetch_all(calls)
      for i = 1, 50 do seen[#seen + 1] = tonumber(res[i].body) end
    end)
    stub.close()
    table.sort(seen)
    for i = 1, 50 do assert.equal(i, seen[i]) end
    local clients_after = run(function() return r:call("INFO", "clients") end):match("connected_clients:(%d+)")
    assert.equal(clients_before, clients_after)
  end)

  it("runs scripts with EVALSHA, and EVAL again after the server forgot them", function()
    local r = gw.redis("main")
    local script = "return { KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, redis.error_reply('OOPS nested') }"
    local v = run(function() return r:eval(script, { "key" }, { "arg", 1 }) end)
    assert.same({ "key", "arg", 2, { err = "OOPS nested" } }, v)
    run(function() return r:call("SCRIPT", "FLUSH") end)
    v = run(function() return r:eval(script, { "key" }, { "arg", 41 }) end)
    assert.same({ "key", "arg", 42, { err = "OOPS nested" } }, v)
    local stats = run(function() return r:call("INFO", "commandstats") end)
    assert.matches("cmdstat_evalsha:calls=2", stats)
    assert.matches("cmdstat_eval:calls=1", stats) -- once, after NOSCRIPT
    local _, err = run(function() return r:eval("return redis.call('NOPE')", {}, {}) end)
    assert.matches("^redis error: .*Unknown Redis command", err)
  end)

  it("refuses commands that would change the shared connection", function()
    local r = gw.redis("main")
    for _, cmd in ipairs { "SUBSCRIBE", "select", "MULTI", "Auth", "MONITOR", "HELLO" } do
      assert.has_error(function() run(function() return r:call(cmd, "x") end) end)
    end
    assert.has_error(function() run(function() return r:call("CLIENT", "REPLY", "OFF") end) end)
    assert.has_error(function() run(function() return r:call("SET", "k", {}) end) end)
    assert.has_error(function() gw.redis("nowhere") end)
    assert.has_error(function() r:call("PING") end) -- at a script's top level: cannot wait
  end)

  it("times out a slow command, keeps the connection, and drops the late reply", function()
    local r = gw.redis("main", { timeout = 0.1 })
    local t0 = gw.now()
    local v, err = run(function() return r:call("DEBUG", "SLEEP", "0.4") end)
    local took = gw.now() - t0
    assert.is_nil(v)
    assert.matches("^timeout: redis 'main' %(127%.0%.0%.1:%d+%) did not answer within 0.1 s", err)
    assert.is_true(took < 0.3, "took " .. took)
    local state, pending = r:info()
    assert.equal("ready", state)
    assert.equal(1, pending) -- the late reply is still owed
    -- The next command waits behind the sleep, then works on the same connection.
    assert.equal("PONG", run(function() return gw.redis("main"):call("PING") end))
    assert.same({ "ready", 0 }, { r:info() })
  end)

  it("detaches a command whose request went away", function()
    local r = gw.redis("main")
    testing.timeout = 0.1
    local ok = pcall(testing.run, function() return r:call("DEBUG", "SLEEP", "0.3") end)
    testing.timeout = 10
    assert.is_false(ok) -- the run gave up: its task and op were freed, the command detached
    assert.equal(1, select(2, r:info()))
    assert.equal("PONG", run(function() return r:call("PING") end))
    assert.equal(0, select(2, r:info()))
  end)
end)

describe("gw.redis with the server down or coming back", function()
  local srv
  setup(function() srv = testing.redis_server() end)
  teardown(function() srv.close() end)

  it("fails at once while down, and reconnects when it is back", function()
    testing.load({}, { redis = { main = { url = srv.url, timeout = 0.5 } } })
    local r = gw.redis("main")
    assert.equal("OK", run(function() return r:call("SET", "x", "1") end))
    srv.kill()
    -- The connection breaks: the next command learns it (reset or refused), then it fails at once.
    local _, err = run(function() return r:call("PING") end)
    assert.matches("^connection %a+: redis 'main'", err)
    local t0 = gw.now()
    for _ = 1, 20 do
      _, err = run(function() return r:call("PING") end)
      assert.matches("^connection refused: redis 'main' %(127%.0%.0%.1:%d+%)", err)
    end
    assert.is_true(gw.now() - t0 < 0.5, "failing fast")
    assert.equal("down", (r:info()))
    srv.start()
    local back
    for _ = 1, 60 do -- the pause between attempts is at most 1 s
      back = run(function() return r:call("PING") end)
      if back then break end
      run(gw.sleep, 0.05)
    end
    assert.equal("PONG", back)
  end)

  it("answers connection refused when nothing listens", function()
    testing.load({}, { redis = { none = { url = "redis://127.0.0.1:1", timeout = 0.5 } } })
    local t0 = gw.now()
    local v, err = run(function() return gw.redis("none"):call("PING") end)
    assert.is_nil(v)
    assert.matches("^connection refused: redis 'none' %(127%.0%.0%.1:1%)", err)
    assert.is_true(gw.now() - t0 < 0.2)
  end)

  it("gives up on a server that does not speak Redis", function()
    local web = testing.stub {} -- an HTTP server: it answers 400 to the command, and closes
    testing.load({}, { redis = { web = { url = "redis://127.0.0.1:" .. web.port, timeout = 0.5 } } })
    local v, err = run(function() return gw.redis("web"):call("PING") end)
    web.close()
    assert.is_nil(v)
    assert.matches("^connection reset: redis 'web' %(127%.0%.0%.1:%d+%): Protocol error", err)
  end)

  it("sends AUTH with the password, and fails when it is wrong", function()
    srv.stop()
    srv.start()
    testing.load({}, { redis = { main = { url = srv.url } } })
    run(function() return gw.redis("main"):call("CONFIG", "SET", "requirepass", "s3cret") end)
    testing.load({}, { redis = {
      good = { url = "redis://:s3cret@127.0.0.1:" .. srv.port .. "/1" },
      bad = { url = srv.url, password = "wrong" },
      none = { url = srv.url },
    } })
    assert.equal("PONG", run(function() return gw.redis("good"):call("PING") end))
    local _, err = run(function() return gw.redis("bad"):call("PING") end)
    assert.matches("^connection refused: redis 'bad' .*AUTH refused: WRONGPASS", err)
    _, err = run(function() return gw.redis("none"):call("PING") end)
    assert.matches("^redis error: NOAUTH", err)
    run(function() return gw.redis("good"):call("CONFIG", "SET", "requirepass", "") end)
  end)

  it("checks the redis config like the rest", function()
    local config = require "luagate.config"
    local conf = assert(config.check({ redis = { a = { url = "redis://u:p@localhost:6380/2" } } }, "x"))
    assert.same({ url = "redis://u:p@localhost:6380/2", timeout = 1, host = "127.0.0.1", port = 6380, db = 2,
                  user = "u", password = "p" }, conf.redis.a)
    for _, case in ipairs {
      { { a = { url = "http://x" } }, "redis.a.url: expected \"redis://host:port/db\"" },
      { { a = { url = "redis://redis.internal:6379" } }, "redis.a.url: expected an IP address or localhost" },
      { { a = { url = "redis://127.0.0.1", timeout = "1" } }, "redis.a.timeout: expected a number" },
      { { a = { url = "redis://127.0.0.1", db = 1 } }, "redis.a.db: unknown key" },
      { { a = {} }, "redis.a.url: required key is missing" },
    } do
      local ok, err = config.check({ redis = case[1] }, "gw.conf")
      assert.is_nil(ok)
      assert.truthy(err:find(case[2], 1, true), err)
    end
  end)
end)
