-- gw.rate_limit { limit = 100, period = 10, key = "ip", policy = "local" }: a middleware that admits
-- at most `limit` requests per key in each window of `period` seconds and answers the others 429.
--
-- Windows are fixed and start at a key's first request (algorithm "fixed"): exactly `limit`
-- requests are admitted in each, and RateLimit-Remaining counts down from limit - 1 to 0, one step
-- per admitted request. Or a sliding log (algorithm "sliding"): at most `limit` requests in any
-- `period` seconds. Every answer carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset
-- (seconds until the window ends; with "sliding": until the oldest counted request leaves it); a
-- 429 also carries Retry-After.
--
-- Policies: "local" counts in this worker's Lua tables; "shared" in memory all the workers of the
-- host share (core.limit_shared: lock-free, exact); "redis" in Redis, across hosts, with one script
-- per decision that counts and reads in one step on Redis's own clock. When a decision cannot be
-- made (Redis down or slower than `timeout`, the shared table full), `fail` says what happens:
-- "open" admits, "closed" answers 503; either way it is logged, at most one line per 10 s.
local core = require "luagate.core"
local redis = require "luagate.redis"

local M = {}

local now, ceil, floor, format, match = core.now, math.ceil, math.floor, string.format, string.match
local LOG_EVERY = 10 -- seconds between two log lines of one limiter's failures

-- Fixed window: count unless the window is full; a new key, or one whose window expired, starts
-- one (PEXPIRE: Redis times it). Returns { admitted, count, ms until the window ends }.
local REDIS_FIXED = [[
local key, limit, period = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local count, admitted = tonumber(redis.call('GET', key) or '0'), 0
if count < limit then
  count, admitted = redis.call('INCR', key), 1
end
local ttl = redis.call('PTTL', key)
if ttl < 0 then
  redis.call('PEXPIRE', key, period)
  ttl = period
end
return { admitted, count, ttl }
]]

-- Sliding log: the times (Redis's TIME, in microseconds) of the requests admitted in the last
-- period, in a sorted set. Returns { admitted, count, ms until the oldest leaves the window }.
local REDIS_SLIDING = [[
local key, limit, period = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now - period * 1000))
local count, admitted = redis.call('ZCARD', key), 0
if count < limit then
  local at = string.format('%.0f', now)
  redis.call('ZADD', key, at, at .. ':' .. count)
  count, admitted = count + 1, 1
end
redis.call('PEXPIRE', key, period)
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local reset = period
if oldest[2] then reset = math.ceil((tonumber(oldest[2]) + period * 1000 - now) / 1000) end
return { admitted, count, reset }
]]

---------------------------------------------------------------------------------------------------
-- Counting: each returns decide(key) -> admitted, count, seconds to reset | nil, err

-- Keys of this worker, in two generations of `period` each: a key is written to the current one
-- at every decision; when a generation ends, the one before it is dropped whole, as every key in
-- it was last written over a period ago, so its window or log has ended. No sweep, no timer:
-- memory holds the keys of the last two periods.
local function generations(period)
  local cur, prev, rotate_at = {}, {}, 0
  return function(t)
    if t >= rotate_at then
      cur, prev = {}, (t < rotate_at + period) and cur or {}
      rotate_at = t + period
    end
    return cur, prev
  end
end

local function local_fixed(limit, period)
  local current = generations(period)
  return function(key)
    local t = now()
    local cur, prev = current(t)
    local w = cur[key] or prev[key] -- { end, count }
    if not w or w[1] <= t then w = { t + period, 0 } end
    cur[key] = w
    if w[2] >= limit then return false, w[2], w[1] - t end
    w[2] = w[2] + 1
    return true, w[2], w[1] - t
  end
end

local function local_sliding(limit, period)
  local current = generations(period)
  return function(key)
    local t = now()
    local cur, prev = current(t)
    local log = cur[key] or prev[key] or { first = 1, last = 0 } -- [i] = time admitted
    cur[key] = log
    while log.first <= log.last and log[log.first] <= t - period do
      log[log.first], log.first = nil, log.first + 1
    end
    local count = log.last - log.first + 1
    local admitted = count < limit
    if admitted then
      log.last, count = log.last + 1, count + 1
      log[log.last] = t
    end
    return admitted, count, log[log.first] + period - t
  end
end

local function shared_fixed(limit, period, name)
  local take = core.limit_shared
  return function(key) return take(name, key, limit, period) end
end

local function redis_counter(script, limit, period, name, server, timeout)
  local client = redis.client(server, timeout and { timeout = timeout })
  local period_ms, prefix = floor(period * 1000 + 0.5), "luagate:ratelimit:" .. name .. ":"
  local args = { limit, period_ms }
  return function(key)
    local r, err = client:eval(script, { prefix .. key }, args)
    if not r then return nil, err end
    return r[1] == 1, r[2], r[3] / 1000
  end
end

---------------------------------------------------------------------------------------------------
-- Keys

-- "ip:<address>" for a remote_addr ("127.0.0.1:53312"), remembered: a keep-alive connection asks
-- with the same string each time. Forgotten whole when it holds too many.
local ip_keys, nip_keys = {}, 0

local function ip_key(req)
  local addr = req.remote_addr or ""
  local key = ip_keys[addr]
  if key then return key end
  key = "ip:" .. (match(addr, "^(.*):%d+$") or addr)
  if nip_keys >= 10000 then ip_keys, nip_keys = {}, 0 end
  ip_keys[addr], nip_keys = key, nip_keys + 1
  return key
end

-- Header values: the strings of small numbers, made once.
local numerals = setmetatable({}, { __index = function(t, n)
  local text = format("%d", n)
  if n < 65536 then t[n] = text end
  return text
end })

local function key_function(key)
  if key == nil or key == "ip" then
    return ip_key
  elseif key == "consumer" or key == "route" then
    local prefix = key .. ":"
    return function(req)
      local v = req[key]
      if v == nil then return ip_key(req) end
      return prefix .. tostring(v)
    end
  elseif type(key) == "string" and match(key, "^header:.") then
    local name = key:sub(8):lower()
    return function(req)
      local v = req.headers[name]
      if v == nil then return ip_key(req) end
      return "header:" .. v
    end
  elseif type(key) == "function" then
    return function(req)
      local v = key(req)
      if v == nil then return nil end
      return "fn:" .. tostring(v)
    end
  end
  error('rate_limit: key is "ip", "consumer", "route", "header:<name>" or a function(req)', 3)
end

---------------------------------------------------------------------------------------------------
-- The middleware

local function check(opts)
  if type(opts) ~= "table" then error("rate_limit: expected a table of options", 3) end
  local limit, period = opts.limit, opts.period
  if type(limit) ~= "number" or limit < 1 or limit ~= floor(limit) or limit > 16777215 then
    error("rate_limit: limit must be an integer from 1 to 16777215", 3)
  end
  if type(period) ~= "number" or period < 0.001 then error("rate_limit: period must be seconds >= 0.001", 3) end
  local policy, algorithm = opts.policy or "local", opts.algorithm or "fixed"
  if policy ~= "local" and policy ~= "shared" and policy ~= "redis" then
    error('rate_limit: policy is "local", "shared" or "redis"', 3)
  end
  if algorithm ~= "fixed" and algorithm ~= "sliding" then error('rate_limit: algorithm is "fixed" or "sliding"', 3) end
  if policy == "shared" and algorithm ~= "fixed" then error('rate_limit: policy "shared" counts fixed windows only', 3) end
  if policy == "redis" and type(opts.redis) ~= "string" then
    error('rate_limit: policy "redis" needs redis = "<name of a server in the config>"', 3)
  end
  if opts.fail ~= nil and opts.fail ~= "open" and opts.fail ~= "closed" then
    error('rate_limit: fail is "open" or "closed"', 3)
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout <= 0) then
    error("rate_limit: timeout must be seconds > 0", 3)
  end
  if opts.name ~= nil and (type(opts.name) ~= "string" or opts.name == "") then
    error("rate_limit: name must be a non-empty string", 3)
  end
  return limit, period, policy, algorithm
end

-- The limiter's name where none is given: the script's file name and line, the same in every
-- worker and on every host that runs the same scripts.
local function default_name()
  local info = debug.getinfo(3, "Sl") or {} -- default_name, new, the script
  local file = match(info.source or "", "([^/]+)$") or "?"
  return file .. ":" .. tostring(info.currentline or 0)
end

local function headers_of(rl, h)
  h["RateLimit-Limit"] = numerals[rl.limit]
  h["RateLimit-Remaining"] = numerals[rl.remaining]
  h["RateLimit-Reset"] = numerals[rl.reset]
  return h
end

--- The middleware (a { before, after } table) for opts: see the top of this file and docs/api.md.
function M.new(opts)
  local limit, period, policy, algorithm = check(opts)
  local name = opts.name or default_name()
  local decide
  if policy == "local" then
    decide = (algorithm == "fixed" and local_fixed or local_sliding)(limit, period)
  elseif policy == "shared" then
    decide = shared_fixed(limit, period, name)
  else
    decide = redis_counter(algorithm == "fixed" and REDIS_FIXED or REDIS_SLIDING, limit, period, name, opts.redis,
                           opts.timeout)
  end
  local key_of, closed = key_function(opts.key), opts.fail == "closed"
  local last_log, unlogged = -LOG_EVERY, 0

  local function cannot_decide(err)
    local t = now()
    if t - last_log < LOG_EVERY then
      unlogged = unlogged + 1
      return
    end
    core.log("warn", format("rate limit '%s': cannot decide (%s): failing %s%s", name, tostring(err),
                            closed and "closed (503)" or "open (admitted)",
                            unlogged > 0 and format("; %d more since the last line", unlogged) or ""))
    last_log, unlogged = t, 0
  end

  return {
    before = function(req)
      local key = key_of(req)
      if key == nil then return end
      local admitted, count, reset = decide(key)
      if admitted == nil then
        cannot_decide(count)
        if closed then
          return 503, { error = "rate limit unavailable", request_id = req.id }, { ["Retry-After"] = "1" }
        end
        return
      end
      local remaining, seconds = limit - count, ceil(reset)
      local own = { limit = limit, remaining = remaining < 0 and 0 or remaining, reset = seconds < 1 and 1 or seconds }
      -- With several limiters, the headers are those of the one closest to refusing.
      if not admitted or not req.rate_limit or own.remaining < req.rate_limit.remaining then
        req.rate_limit = own
      end
      if not admitted then
        local h = headers_of(own, {})
        h["Retry-After"] = numerals[own.reset]
        return 429, { error = "too many requests", request_id = req.id }, h
      end
    end,
    after = function(req, res)
      local rl = req.rate_limit
      if rl then headers_of(rl, res.headers) end
    end,
  }
end

return M
