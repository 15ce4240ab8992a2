-- gateway.conf: a Lua file of assignments (`listen = "127.0.0.1:8080"`), run in an empty sandbox,
-- then checked against the schema below. Every error names the file, the line and the key.
local M = {}

-- Numbers C takes as integers of 64 bits (sizes, and seconds times 1000): no NaN, no infinity,
-- nothing past 2^53, where a double stops counting every integer.
local MAX_NUMBER = 2 ^ 53
local function is_finite(v) return type(v) == "number" and v >= -MAX_NUMBER and v <= MAX_NUMBER end
local function is_int(v) return is_finite(v) and v == math.floor(v) end

local function type_name(v)
  if is_int(v) then return "integer " .. tostring(v) end
  if type(v) == "string" then return ("string %q"):format(v) end
  return type(v)
end

local function is_ipv4(h)
  local a, b, c, d = h:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return a and tonumber(a) < 256 and tonumber(b) < 256 and tonumber(c) < 256 and tonumber(d) < 256
end

-- "127.0.0.1:8080", "[::1]:8080", "localhost:8080", "*:8080" (every IPv4 address). Names other
-- than localhost are refused here rather than resolved: a listener should not depend on DNS.
local function check_listen(v)
  local host, port = v:match("^%[([%x:%.]+)%]:(%d+)$")
  if not host then host, port = v:match("^([^:%[%]]+):(%d+)$") end
  port = tonumber(port)
  if not host or not port or port > 65535 then
    return nil, 'expected "host:port", such as "127.0.0.1:8080" or "[::1]:8080"'
  end
  if host == "localhost" then host = "127.0.0.1" elseif host == "*" then host = "0.0.0.0" end
  if not is_ipv4(host) and not host:find(":", 1, true) then
    return nil, ("expected an IP address, localhost or * as the host, got %q"):format(host)
  end
  return { host = host, port = port }
end

-- listen = "host:port" or a list of them: each address gets one listening socket.
local function check_listens(v)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" or #v == 0 then
    return nil, 'expected "host:port" or a list of them, got ' .. type_name(v)
  end
  local out, seen = {}, {}
  for i, addr in ipairs(v) do
    if type(addr) ~= "string" then return nil, ("[%d]: expected a string, got %s"):format(i, type_name(addr)) end
    local a, err = check_listen(addr)
    if not a then return nil, err end
    local key = a.host .. ":" .. a.port
    if seen[key] then return nil, ("%s is listed twice"):format(addr) end
    seen[key], out[i] = true, a
  end
  if #out > 16 then return nil, "at most 16 addresses" end
  return out
end

-- metrics_listen = "host:port" (its own listener: /metrics, health, the status page) or "off".
local function check_metrics_listen(v)
  if type(v) ~= "string" then return nil, 'expected "host:port" or "off", got ' .. type_name(v) end
  if v == "off" then return { host = "", port = -1 } end
  return check_listen(v)
end

-- lua_path = "dir" or a list of directories (relative to the config file) for shared modules.
local function check_dirs(v)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then return nil, "expected a directory or a list of them, got " .. type_name(v) end
  local out = {}
  for i, d in ipairs(v) do
    if type(d) ~= "string" or d == "" or d:find(";", 1, true) then
      return nil, ("[%d]: expected a directory name, got %s"):format(i, type_name(d))
    end
    out[i] = d
  end
  return out
end

local function check_url(v)
  if not v:match("^https?://[^/%s]+") or v:match("%s") then
    return nil, 'expected an http:// or https:// URL, such as "http://127.0.0.1:9001"'
  end
  return v:gsub("/+$", "")
end

-- "redis://[user:password@]host[:port][/db]": host an IP address or localhost (a name would
-- be resolved on the loop, blocking it). Returns { host, port, db, user, password } or nil, err.
function M.parse_redis_url(v)
  local rest = v:match("^redis://(.*)$")
  if not rest or rest:match("%s") then
    return nil, 'expected "redis://host:port/db", such as "redis://127.0.0.1:6379/0"'
  end
  local parts, userinfo = {}, rest:match("^([^@/]*)@")
  if userinfo then
    rest = rest:sub(#userinfo + 2)
    local user, password = userinfo:match("^([^:]*):(.*)$")
    parts.user, parts.password = user ~= "" and user or nil, password or userinfo
  end
  local host, port, db = rest:match("^%[([%x:%.]+)%]:?(%d*)/?(%d*)$")
  if not host then host, port, db = rest:match("^([^:/%[%]]+):?(%d*)/?(%d*)$") end
  if not host then return nil, 'expected "redis://host:port/db", got ' .. ("%q"):format(v) end
  if host == "localhost" then host = "127.0.0.1" end
  if not is_ipv4(host) and not host:find(":", 1, true) then
    return nil, ("expected an IP address or localhost as the host (names are not resolved), got %q"):format(host)
  end
  parts.host, parts.port, parts.db = host, tonumber(port) or 6379, tonumber(db) or 0
  if parts.port < 1 or parts.port > 65535 then return nil, "the port must be from 1 to 65535" end
  return parts
end

local function check_redis_url(v)
  local parts, err = M.parse_redis_url(v)
  if not parts then return nil, err end
  return v
end

-- A checked redis entry, with the parts of its url added; its own password wins over the url's.
local function redis_parts(entry)
  local parts = M.parse_redis_url(entry.url)
  for k, v in pairs(parts) do
    if entry[k] == nil then entry[k] = v end
  end
  return entry
end

-- An IPv6 address: groups of up to 4 hex digits, "::" at most once, an IPv4 address at the end.
local function is_ipv6(s)
  local head, tail = s:match("^(.-)::(.*)$")
  local function groups(part)
    if part == "" then return 0 end
    local n = 0
    for g in (part .. ":"):gmatch("([^:]*):") do
      if not g:match("^%x%x?%x?%x?$") then
        if not (is_ipv4(g) and part:sub(-#g) == g) then return nil end
        n = n + 1 -- an IPv4 tail is two groups
      end
      n = n + 1
    end
    return n
  end
  if head then
    if tail:find("::", 1, true) then return false end
    local a, b = groups(head), groups(tail)
    return a ~= nil and b ~= nil and a + b <= 7
  end
  return groups(s) == 8
end

-- trusted_proxies = { "10.0.0.0/8", "127.0.0.1", "fd00::/8" }: the proxies in front of the
-- gateway whose X-Forwarded-For, -Proto and -Host are believed (appended to); anyone else's are
-- replaced by what the gateway sees.
local function check_networks(v)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then return nil, "expected a list of IP addresses or networks, got " .. type_name(v) end
  local out = {}
  for i, net in ipairs(v) do
    local ip, bits = tostring(net):match("^([^/]+)/?(%d*)$")
    local v4 = ip and is_ipv4(ip)
    local ok = ip and type(net) == "string" and (v4 or is_ipv6(ip))
    if ok and bits ~= "" then ok = tonumber(bits) <= (v4 and 32 or 128) end
    if not ok then
      return nil, ("[%d]: expected an IP address or network such as \"10.0.0.0/8\", got %s"):format(i, type_name(net))
    end
    out[i] = net
  end
  return out
end

-- workers = N | "auto" (one per CPU core): how many worker processes share the port.
local function check_workers(v)
  if v == "auto" or (is_int(v) and v >= 1 and v <= 256) then return v end
  return nil, 'expected an integer from 1 to 256 or "auto", got ' .. type_name(v)
end

-- A field: type, default, and an optional check returning a replacement value or nil, err.
local upstream_fields = {
  url = { type = "string", required = true, check = check_url },
  timeout = { type = "number", default = 30, min = 0.001, doc = "seconds for the whole transfer" },
  connect_timeout = { type = "number", default = 5, min = 0.001, doc = "seconds to connect" },
  headers = { type = "table", default = {}, map = { type = "string" } },
  auth = { type = "table", fields = {
    user = { type = "string" }, password = { type = "string" }, bearer = { type = "string" },
  } },
  read_timeout = { type = "number", default = 60, min = 0.001, doc = "seconds between two reads of its answer" },
  first_byte_timeout = { type = "number", min = 0.001, doc = "seconds from the request sent to the first byte of its answer" },
  keepalive = { type = "integer", min = 0, doc = "idle connections kept for it (0: none)" },
  retries = { type = "integer", default = 2, min = 0, max = 10, doc = "tries again after a refused connection" },
  client = { type = "string", enum = { native = 1, curl = 1 },
             doc = "native (the default for http://) or curl (libcurl; always for https://)" },
  max_response_body = { type = "integer", min = 0, doc = "bytes of a buffered answer (default: the gateway's)" },
  forwarded = { type = "boolean", default = true, doc = "send X-Forwarded-For, -Proto and -Host" },
}

local redis_fields = {
  url = { type = "string", required = true, check = check_redis_url },
  timeout = { type = "number", default = 1, min = 0.001, doc = "seconds to connect, and for each command" },
  password = { type = "string", doc = "sent with AUTH on connect" },
}

local top_fields = {
  listen = { default = "127.0.0.1:8080", check = check_listens },
  workers = { default = 1, check = check_workers },
  routes = { type = "string", default = "routes" },
  lua_path = { default = {}, check = check_dirs },
  pid = { type = "string", default = "luagate.pid" },
  error_log = { type = "string", default = "stderr" },
  reload_timeout = { type = "number", default = 10, min = 0.1 },
  keepalive_min_timeout = { type = "number", default = 1, min = 0 },
  log_level = { type = "string", default = "info", enum = { error = 1, warn = 1, info = 1, debug = 1 } },
  access_log = { type = "string", default = "stdout" }, -- "stdout", "off" or a file
  access_log_format = { type = "string", default = "combined", enum = { combined = 1, json = 1 } },
  metrics_listen = { default = "127.0.0.1:9145", check = check_metrics_listen },
  keepalive_timeout = { type = "number", default = 75, min = 0.001 },
  read_timeout = { type = "number", default = 60, min = 0.001 },
  header_timeout = { type = "number", default = 10, min = 0.001 },
  body_timeout = { type = "number", default = 60, min = 0.001 },
  handler_timeout = { type = "number", default = 60, min = 0.001 },
  shutdown_timeout = { type = "number", default = 30, min = 0 },
  max_header_size = { type = "integer", default = 16384, min = 256 },
  max_body_size = { type = "integer", default = 1048576, min = 0 },
  max_response_body = { type = "integer", default = 67108864, min = 0 },
  backlog = { type = "integer", default = 4096, min = 1, max = 65535 },
  max_connections = { type = "integer", default = 16384, min = 1 },
  trusted_proxies = { default = {}, check = check_networks },
  max_open_files = { type = "integer", default = 65536, min = 0 },
  max_buffered_size = { type = "integer", default = 268435456, min = 0 },
  upstream_keepalive = { type = "integer", default = 256, min = 1 },
  upstreams = { type = "table", default = {}, map = { type = "table", fields = upstream_fields } },
  redis = { type = "table", default = {}, map = { type = "table", fields = redis_fields, check = redis_parts } },
  credentials = { type = "table", default = {}, fields = {
    api_keys = { type = "table", default = {}, map = { type = "string" } }, -- consumer name -> key
    basic = { type = "table", default = {}, map = { type = "string" } },    -- user -> password
  } },
}

-- Where a key is written: top-level assignments are recorded as they run; nested keys are found
-- by scanning the source from their parent's line.
local function code_of(line)
  return (line:gsub("%-%-.*$", "")) -- comments do not count
end

local function line_of(src_lines, from, key)
  local pats = { "%f[%w_]" .. key .. "%s*=", '%[%s*"' .. key .. '"%s*%]%s*=' }
  for i = from or 1, #src_lines do
    local code = code_of(src_lines[i])
    for _, p in ipairs(pats) do
      if code:find(p) then return i end
    end
  end
  return from
end

-- A top-level assignment's line: LuaJIT reports where the statement ends, so look back from
-- there for where it starts.
local function assignment_line(src_lines, at, key)
  for i = at, 1, -1 do
    if code_of(src_lines[i] or ""):find("^%s*" .. key .. "%s*=") then return i end
  end
  return at
end

local check_value

-- A table default is copied for each use: one shared {} would let a change to one upstream's
-- headers reach every upstream that had none, and the schema too.
local function copy_default(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy_default(x) end
  return t
end

local function check_table(ctx, spec, value, path, line)
  local out = {}
  if spec.fields then
    for k, v in pairs(value) do
      local fspec = type(k) == "string" and spec.fields[k]
      local kline = line_of(ctx.lines, line, tostring(k))
      if not fspec then
        local known = {}
        for name in pairs(spec.fields) do known[#known + 1] = name end
        table.sort(known)
        return nil, ctx.err(kline, path .. "." .. tostring(k), "unknown key (known: " .. table.concat(known, ", ") .. ")")
      end
      local cv, err = check_value(ctx, fspec, v, path .. "." .. k, kline)
      if err then return nil, err end
      out[k] = cv
    end
    for k, fspec in pairs(spec.fields) do
      if out[k] == nil then
        if fspec.required then return nil, ctx.err(line, path .. "." .. k, "required key is missing") end
        out[k] = copy_default(fspec.default)
      end
    end
  elseif spec.map then
    for k, v in pairs(value) do
      if type(k) ~= "string" then
        return nil, ctx.err(line, path, "keys must be names, got " .. type(k))
      end
      local kline = line_of(ctx.lines, line, k)
      local cv, err = check_value(ctx, spec.map, v, path .. "." .. k, kline)
      if err then return nil, err end
      out[k] = cv
    end
  end
  return out
end

function check_value(ctx, spec, v, path, line)
  local t = spec.type
  if t == "integer" then
    if not is_int(v) then return nil, ctx.err(line, path, "expected an integer, got " .. type_name(v)) end
  elseif t and type(v) ~= t then
    return nil, ctx.err(line, path, "expected a " .. t .. ", got " .. type_name(v))
  elseif t == "number" and not is_finite(v) then
    return nil, ctx.err(line, path, ("expected a number from -2^53 to 2^53, got %s"):format(tostring(v)))
  end
  if spec.min and v < spec.min then
    return nil, ctx.err(line, path, ("must be at least %s, got %s"):format(spec.min, v))
  end
  if spec.max and v > spec.max then
    return nil, ctx.err(line, path, ("must be at most %s, got %s"):format(spec.max, v))
  end
  if spec.enum and not spec.enum[v] then
    local names = {}
    for name in pairs(spec.enum) do names[#names + 1] = name end
    table.sort(names)
    return nil, ctx.err(line, path, "expected one of " .. table.concat(names, ", ") .. ", got " .. type_name(v))
  end
  if t == "table" then
    local out, err = check_table(ctx, spec, v, path, line)
    if out and spec.check then out = spec.check(out) end -- adds what its checked fields imply
    return out, err
  end
  if spec.check then
    local cv, err = spec.check(v)
    if cv == nil then return nil, ctx.err(line, path, err) end
    return cv
  end
  return v
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- Check a table of settings (as a config file would assign them). `where` names the source.
function M.check(settings, where, lines, assigned_at)
  local ctx = { lines = lines or {} }
  function ctx.err(line, key, msg)
    return ("%s:%s: %s: %s"):format(where, line or "?", key, msg)
  end
  local conf = {}
  for k, v in pairs(settings) do
    local spec = top_fields[k]
    local line = assigned_at and assigned_at[k]
    if not spec then
      local known = {}
      for name in pairs(top_fields) do known[#known + 1] = name end
      table.sort(known)
      return nil, ctx.err(line, k, "unknown key (known: " .. table.concat(known, ", ") .. ")")
    end
    local cv, err = check_value(ctx, spec, v, k, line)
    if err then return nil, err end
    conf[k] = cv
  end
  for k, spec in pairs(top_fields) do
    if conf[k] == nil then
      local cv, err = check_value(ctx, spec, spec.default, k, nil)
      if err then return nil, err end
      conf[k] = cv
    end
  end
  return conf
end

-- Load and check a config file. Returns the config table, or nil and "file:line: key: problem".
function M.load(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, ("%s: cannot open: %s"):format(path, err) end
  local src = f:read("*a")
  f:close()
  local chunk, perr = loadstring(src, "@" .. path)
  if not chunk then return nil, perr end

  local lines = {}
  for l in (src .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  local settings, assigned_at = {}, {}
  local env = setmetatable({}, {
    __newindex = function(_, k, v)
      assigned_at[k] = assignment_line(lines, debug.getinfo(2, "l").currentline, tostring(k))
      settings[k] = v
    end,
    __index = function(_, k)
      if settings[k] ~= nil then return settings[k] end
      error(("unknown name '%s' (the config is a sandbox: only plain values)"):format(tostring(k)), 2)
    end,
  })
  setfenv(chunk, env)
  -- Strings reach the string library through their metatable, whatever the environment: shut
  -- that door to the config's own code while it runs (("x"):rep(1e9) would take a gigabyte).
  local strings = getmetatable("")
  local methods = strings.__index
  strings.__index = function(_, k)
    if getfenv(2) == env then error("strings have no methods in the config (a sandbox: only plain values)", 2) end
    return methods[k]
  end
  local ok, rerr = pcall(chunk)
  strings.__index = methods
  if not ok then return nil, tostring(rerr) end

  local conf, cerr = M.check(settings, path, lines, assigned_at)
  if not conf then return nil, cerr end
  -- Paths in the config are relative to the config file, not to where luagate was started.
  local function beside(p) return p:sub(1, 1) == "/" and p or dirname(path) .. "/" .. p end
  conf.routes = beside(conf.routes)
  conf.pid = beside(conf.pid)
  if conf.error_log ~= "stderr" then conf.error_log = beside(conf.error_log) end
  if conf.access_log ~= "stdout" and conf.access_log ~= "off" then conf.access_log = beside(conf.access_log) end
  for i, d in ipairs(conf.lua_path) do conf.lua_path[i] = beside(d) end
  conf.file = path
  return conf
end

return M
