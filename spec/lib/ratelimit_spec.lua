-- gw.rate_limit: the local and shared policies, and the redis policy against a real redis-server
-- (testing.redis_server), up and down.
local testing = require "luagate.testing"
local gw = require "luagate"

-- A fresh app whose GET /x is behind the limiter made of opts (and GET /open is not limited).
local function limited(opts, redis)
  testing.load({}, { redis = redis, credentials = { api_keys = { alice = "ka", bob = "kb" } } })
  local mw = gw.rate_limit(opts)
  gw.get("/x", mw, function(req) return 200, { remaining = req.rate_limit and req.rate_limit.remaining } end)
  gw.get("/users/:id", mw, function() return 200, "user" end)
  gw.get("/keyed", gw.auth.api_key(), mw, function() return 200, "keyed" end)
  return mw
end

local function get(path, from, headers)
  return testing.get(path, { remote_addr = (from or "10.0.0.1") .. ":5000", headers = headers })
end

-- The statuses and RateLimit-Remaining values of n requests.
local function burst(n, path, from, headers)
  local statuses, remaining = {}, {}
  for i = 1, n do
    local res = get(path or "/x", from, headers)
    statuses[i], remaining[i] = res.status, tonumber(res.headers["ratelimit-remaining"])
  end
  return statuses, remaining
end

local function counts_like_a_fixed_window(opts, redis)
  limited(opts, redis)
  local statuses, remaining = burst(5)
  assert.same({ 200, 200, 200, 429, 429 }, statuses)
  assert.same({ 2, 1, 0, 0, 0 }, remaining)
  local res = get("/x")
  assert.equal("3", res.headers["ratelimit-limit"])
  assert.equal("1", res.headers["ratelimit-reset"]) -- under a second, rounded up
  assert.equal("1", res.headers["retry-after"])
  assert.same({ error = "too many requests", request_id = "spec-request" }, res:json())
  -- Another client has a window of its own; the handler sees the decision.
  local other = get("/x", "10.0.0.2")
  assert.equal(200, other.status)
  assert.same({ remaining = 2 }, other:json())
  testing.run(gw.sleep, 1.05) -- the window ends: the next request starts a new one
  statuses, remaining = burst(4)
  assert.same({ 200, 200, 200, 429 }, statuses)
  assert.same({ 2, 1, 0, 0 }, remaining)
end

describe("gw.rate_limit", function()
  it("counts fixed windows per client address in this worker (local)", function()
    counts_like_a_fixed_window { limit = 3, period = 1 }
  end)

  it("counts fixed windows in memory the workers share (shared)", function()
    counts_like_a_fixed_window { limit = 3, period = 1, policy = "shared", name = "spec-shared" }
  end)

  it("keeps a sliding log: at most limit requests in any period", function()
    limited { limit = 2, period = 1, algorithm = "sliding" }
    assert.same({ 200, 200, 429 }, (burst(3)))
    testing.run(gw.sleep, 0.5)
    assert.equal(429, get("/x").status) -- the first two are still within the last second
    testing.run(gw.sleep, 0.6)        -- they have left the window
    assert.same({ 200, 200, 429 }, (burst(3)))
  end)

  it("limits by header, consumer, route or a function", function()
    limited { limit = 1, period = 10, key = "header:X-Tenant" }
    assert.equal(200, get("/x", "10.0.0.1", { ["X-Tenant"] = "a" }).status)
    assert.equal(429, get("/x", "10.0.0.2", { ["X-Tenant"] = "a" }).status) -- same tenant, other address
    assert.equal(200, get("/x", "10.0.0.1", { ["X-Tenant"] = "b" }).status)
    assert.equal(200, get("/x", "10.0.0.1").status)                          -- no header: the address
    assert.equal(429, get("/x", "10.0.0.1").status)

    limited { limit = 1, period = 10, key = "consumer" }
    assert.equal(200, get("/keyed", "10.0.0.1", { ["X-API-Key"] = "ka" }).status)
    assert.equal(429, get("/keyed", "10.0.0.2", { ["X-API-Key"] = "ka" }).status)
    assert.equal(200, get("/keyed", "10.0.0.1", { ["X-API-Key"] = "kb" }).status)

    limited { limit = 2, period = 10, key = "route" }
    assert.same({ 200, 200, 429 }, { get("/users/1").status, get("/users/2", "10.0.0.9").status, get("/users/3").status })
    assert.equal(200, get("/x").status) -- another route

    limited { limit = 1, period = 10, key = function(req) return req.headers["x-vip"] == nil and "all" or nil end }
    assert.same({ 200, 429 }, { get("/x", "10.0.0.1").status, get("/x", "10.0.0.2").status })
    assert.same({ 200, 200 }, { get("/x", "10.0.0.1", { ["X-VIP"] = "1" }).status,
                                get("/x", "10.0.0.1", { ["X-VIP"] = "1" }).status }) -- exempt
  end)

  it("reports the limiter closest to refusing when there are several", function()
    testing.load({})
    gw.get("/x", gw.rate_limit { limit = 10, period = 60 }, gw.rate_limit { limit = 2, period = 1 },
           function() return 200 end)
    local res = get("/x")
    assert.same({ "2", "1" }, { res.headers["ratelimit-limit"], res.headers["ratelimit-remaining"] })
    get("/x")
    res = get("/x")
    assert.equal(429, res.status)
    assert.same({ "2", "0", "1" }, { res.headers["ratelimit-limit"], res.headers["ratelimit-remaining"],
                                     res.headers["retry-after"] })
  end)

  it("refuses wrong options where the limiter is made", function()
    for _, opts in ipairs {
      {}, { limit = 0, period = 1 }, { limit = 1.5, period = 1 }, { limit = 1, period = 0 },
      { limit = 1, period = 1, policy = "cluster" }, { limit = 1, period = 1, policy = "redis" },
      { limit = 1, period = 1, policy = "shared", algorithm = "sliding" }, { limit = 1, period = 1, key = "cookie" },
      { limit = 1, period = 1, fail = "maybe" }, { limit = 1, period = 1, policy = "redis", redis = "nowhere" },
    } do
      assert.has_error(function() gw.rate_limit(opts) end)
    end
  end)

  describe("with the redis policy", function()
    local srv
    setup(function() srv = testing.redis_server() end)
    teardown(function() srv.close() end)

    local function servers(timeout) return { main = { url = srv.url, timeout = timeout or 0.5 } } end

    it("counts fixed windows in Redis", function()
      counts_like_a_fixed_window({ limit = 3, period = 1, policy = "redis", redis = "main", name = "fixed" },
                                 servers())
      -- One script per decision, by its sha1; the window is the key's expiry in Redis.
      local stats = testing.run(function() return gw.redis("main"):call("INFO", "commandstats") end)
      assert.matches("cmdstat_evalsha:calls=11,", stats)
      local ttl = testing.run(function() return gw.redis("main"):call("PTTL", "luagate:ratelimit:fixed:ip:10.0.0.1") end)
      assert.is_true(ttl > 0 and ttl <= 1000, tostring(ttl))
    end)

    it("keeps a sliding log in Redis, on Redis's clock", function()
      limited({ limit = 2, period = 1, algorithm = "sliding", policy = "redis", redis = "main", name = "sliding" },
              servers())
      local statuses, remaining = burst(3)
      assert.same({ 200, 200, 429 }, statuses)
      assert.same({ 1, 0, 0 }, remaining)
      testing.run(gw.sleep, 0.5)
      assert.equal(429, get("/x").status)
      testing.run(gw.sleep, 0.6)
      assert.same({ 200, 200, 429 }, (burst(3)))
    end)

    it("fails open or closed, at once, when Redis is down", function()
      limited({ limit = 1, period = 10, policy = "redis", redis = "main", name = "down", fail = "open" }, servers())
      srv.kill()
      local t0 = gw.now()
      local statuses = burst(10)
      assert.same({ 200, 200, 200, 200, 200, 200, 200, 200, 200, 200 }, statuses) -- admitted, unlimited
      assert.is_nil(get("/x").headers["ratelimit-remaining"])                    -- and not pretended
      limited({ limit = 1, period = 10, policy = "redis", redis = "main", name = "down", fail = "closed" }, servers())
      local res = get("/x")
      assert.equal(503, res.status)
      assert.equal("1", res.headers["retry-after"])
      assert.is_true(gw.now() - t0 < 1, "no request waited")
      srv.start()
      local back
      for _ = 1, 60 do
        back = get("/x")
        if back.status ~= 503 then break end
        testing.run(gw.sleep, 0.05)
      end
      assert.equal(200, back.status)
      assert.equal(429, get("/x").status) -- limiting again
    end)

    it("fails within its timeout when Redis is slow", function()
      local conf = servers(2)
      conf.probe = { url = srv.url, timeout = 0.05 }
      limited({ limit = 5, period = 10, policy = "redis", redis = "main", name = "slow", fail = "closed",
                timeout = 0.1 }, conf)
      assert.equal(200, get("/x").status)
      os.execute(("redis-cli -p %d DEBUG SLEEP 0.8 >/dev/null &"):format(srv.port))
      for _ = 1, 100 do -- until Redis has gone to sleep (a PING on a connection of its own times out)
        if not testing.run(function() return gw.redis("probe"):call("PING") end) then break end
        testing.run(gw.sleep, 0.01)
      end
      local t0 = gw.now()
      local res = get("/x")
      local took = gw.now() - t0
      assert.equal(503, res.status)
      assert.is_true(took >= 0.09 and took < 0.3, "took " .. took)
      local back
      for _ = 1, 100 do
        back = get("/x")
        if back.status ~= 503 then break end
        testing.run(gw.sleep, 0.05)
      end
      -- Deciding again (429 when the decisions that timed out were counted as Redis woke up).
      assert.truthy(back.status == 200 or back.status == 429, back.status)
      assert.equal("5", back.headers["ratelimit-limit"])
    end)
  end)
end)
