-- gw.redis: the Redis servers named in gateway.conf's `redis`, on the same loop as everything else.
--
--   local r = gw.redis("main")
--   local n, err = r:call("INCR", "hits")                      -- yields like fetch
--   local v, err = r:eval("return redis.call('GET', KEYS[1])", { "k" }, {})
--
-- One pipelined connection per server and worker, opened on first use; commands of all requests
-- share it. A call returns the value, or nil, err with err starting with its kind: "timeout:",
-- "connection refused:" (down: no wait), "connection reset:" or "redis error:" (the server's
-- error reply). A nil reply is nil with no error.
local core = require "luagate.core"

local WAIT, yield, upper, find = core.WAIT, coroutine.yield, string.upper, string.find
local redis_call, redis_open, redis_close = core.redis_call, core.redis_open, core.redis_close

local M = {}

-- Commands that would change the shared connection for every other request on it (its database,
-- its identity, its protocol, replies that stop coming) or that need it to themselves.
local refused = {}
for _, c in ipairs { "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
                     "MONITOR", "SELECT", "AUTH", "HELLO", "QUIT", "RESET", "MULTI", "EXEC", "DISCARD", "WATCH",
                     "UNWATCH" } do
  refused[c] = true
end

local configured, clients = {}, {} -- name -> checked config entry; name -> its client
local shas = {}                      -- script -> sha1, as SCRIPT LOAD gave it (the same on every server)

local Client = {}
Client.__index = Client

--- Send one command; returns its reply as Lua values, or nil, err.
function Client:call(cmd, ...)
  if type(cmd) ~= "string" then error("redis: call(command, ...): the command is a string", 2) end
  local u = upper(cmd)
  if refused[u] or (u == "CLIENT" and upper(tostring((...))) == "REPLY") then
    error(("redis: %s is not available on a connection every request shares (use eval for atomic work)"):format(u), 2)
  end
  local id, err = redis_call(self.conn, self.timeout, cmd, ...)
  if not id then return nil, err end
  local _, ok, v = yield(WAIT)
  if ok then return v end
  return nil, v
end

local function script_args(head, keys, args)
  local n = #head
  for i = 1, #keys do head[n + i] = keys[i] end
  n = n + #keys
  for i = 1, #args do head[n + i] = args[i] end
  return unpack(head, 1, n + #args)
end

--- Run a Lua script on the server: EVALSHA with its sha1 (loaded once per worker), EVAL when the
--- server no longer has it (a restart, SCRIPT FLUSH). keys and args are lists.
function Client:eval(script, keys, args)
  if type(script) ~= "string" then error("redis: eval(script, keys, args): the script is a string", 2) end
  keys, args = keys or {}, args or {}
  local sha = shas[script]
  if not sha then
    local loaded, err = self:call("SCRIPT", "LOAD", script)
    if not loaded then return nil, err end
    sha, shas[script] = loaded, loaded
  end
  local v, err = self:call("EVALSHA", script_args({ sha, #keys }, keys, args))
  if v == nil and err and find(err, "^redis error: NOSCRIPT") then
    v, err = self:call("EVAL", script_args({ script, #keys }, keys, args))
  end
  return v, err
end

--- The connection's state ("idle", "connecting", "ready", "down") and how many commands wait.
function Client:info()
  return core.redis_info(self.conn)
end

--- The client of the server `name`; opts.timeout (seconds) gives one whose commands have that
--- timeout instead of the server's, on the same connection. Raises for an unknown name.
function M.client(name, opts)
  local c = clients[name]
  if not c then
    local conf = configured[name]
    if not conf then error(("gw.redis: no redis '%s' in the config"):format(tostring(name)), 3) end
    c = setmetatable({
      name = name, timeout = conf.timeout,
      conn = redis_open(name, conf.host, conf.port, conf.user, conf.password, conf.db, conf.timeout),
    }, Client)
    clients[name] = c
  end
  if opts and opts.timeout then
    if type(opts.timeout) ~= "number" or opts.timeout <= 0 then error("gw.redis: timeout must be a number > 0", 3) end
    return setmetatable({ name = name, timeout = opts.timeout, conn = c.conn }, Client)
  end
  return c
end

--- Take the servers of a checked config (name -> entry), closing the clients of the previous one.
function M.configure(servers)
  for _, c in pairs(clients) do redis_close(c.conn) end
  configured, clients = servers or {}, {}
end

return M
