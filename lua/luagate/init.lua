-- luagate: the API route scripts use.
--
--   local gw = require "luagate"
--   gw.get("/users/:id", function(req)
--     local res, err = gw.fetch("api", "/users/" .. req.params.id, { timeout = 2 })
--     if not res then return gw.upstream_error(err) end
--     return res.status, res:json()
--   end)
--
-- Handlers run in a coroutine of their own. fetch, fetch_all, fetch_any and sleep yield it to the
-- event loop and are resumed when the upstream answers: they may be called from a handler (and
-- from any Lua function it calls), but not from a script's top level, nor from inside a C call
-- such as a string.gsub or table.sort callback; there they fail with an error saying so.
local core = require "luagate.core"
local config = require "luagate.config"
local json = require "luagate.json"
local request = require "luagate.request"
local router = require "luagate.router"
local middleware = require "luagate.middleware"
local redis = require "luagate.redis"
local ratelimit = require "luagate.ratelimit"
local metrics = require "luagate.metrics"

local M = { version = core.version, json = json, metrics = metrics }

local WAIT, yield, running = core.WAIT, coroutine.yield, coroutine.running
local JSON_TYPE, TEXT_TYPE = "application/json", "text/plain; charset=utf-8"

-- The state of this worker's app: its routes and its upstreams (from gateway.conf).
local app = { router = router.new(), upstreams = {}, befores = {}, afters = {}, logs = {}, nroutes = 0 }

-- The log phase: each global middleware's log(req, info), once the answer is out (or cut, or its
-- client left), from the loop: info = { status, bytes_sent, duration, upstreams = { { name, status
-- | error, time }, ... } }. An error in one is logged; the others still run.
function app.run_logs(req, info)
  for i = 1, #app.logs do
    local ok, err = pcall(app.logs[i], req, info)
    if not ok then core.log("error", "log phase: " .. tostring(err)) end
  end
end
local request_mt = request.mt
local canned = setmetatable({}, { __mode = "k" })  -- coroutine -> { op id -> {res, err} } (specs)
local chain -- defined with the middleware, below

---------------------------------------------------------------------------------------------------
-- Routes

local THIS_FILE = debug.getinfo(1, "S").source

-- "script:line" of the route script that called into this file, for errors naming a registration.
local function caller_location()
  for level = 3, 12 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.source ~= THIS_FILE and info.what ~= "C" then return info.short_src .. ":" .. info.currentline end
  end
  return "?"
end

local ROUTE_OPTIONS = { body = true, timeout = true }

-- A table of route options ({ body = "stream", timeout = 5 }), or nil when t is something else
-- (middleware).
local function route_options(t)
  if type(t) ~= "table" or getmetatable(t) or t.before ~= nil or t.after ~= nil then return nil end
  for k in pairs(t) do
    if not ROUTE_OPTIONS[k] then error(("unknown route option '%s' (known: body, timeout)"):format(tostring(k)), 4) end
  end
  if t.body ~= nil and t.body ~= "stream" and t.body ~= "buffer" then
    error('route option body: "stream" (read it in pieces) or "buffer" (the default)', 4)
  end
  if t.timeout ~= nil and (type(t.timeout) ~= "number" or not (t.timeout > 0)) then
    error("route option timeout: seconds for the handler to begin its answer, a number above 0", 4)
  end
  return t
end

--- Register handler(req) for method (or a list of methods) and path. Paths may hold ":name"
--- segments and a final "*name"; their values are in req.params. The handler returns status,
--- body, headers. Route options may follow the path ({ body = "stream" }: the handler reads the
--- request body in pieces with req:read(), or sends it on with fetch's body = req), then
--- middleware: gw.post(path, opts, mw1, mw2, handler). A method and path registered twice is an
--- error naming both registrations.
function M.route(method, path, ...)
  local args, n = { ... }, select("#", ...)
  local opts = n > 1 and route_options(args[1]) or nil
  local first = opts and 2 or 1
  local handler = args[n]
  if n > first then handler = chain(args, first, n - 1, handler) end
  local where = caller_location()
  local rid = core.route_id(path) -- the label of its metrics and log lines: the pattern, never the path
  for _, m in ipairs(type(method) == "table" and method or { method }) do -- a list: each of them
    app.router:add(m:upper(), path, handler, opts, where, rid)
    app.nroutes = app.nroutes + 1 -- counted per script for `luagate -t`
  end
end
for _, m in ipairs { "get", "post", "put", "patch", "delete", "options", "head" } do
  local method = m:upper()
  M[m] = function(path, ...) return M.route(method, path, ...) end
end

---------------------------------------------------------------------------------------------------
-- Middleware: a table { before = function(req), after = function(req, res) } (a plain function
-- is a `before`). before may answer for the handler by returning status, body, headers (an auth
-- check answering 401); after may change res.status, res.body (a table is still a table here)
-- and res.headers, for every answer, including those of other middleware.

local function as_middleware(mw)
  if type(mw) == "function" then return { before = mw } end
  if type(mw) ~= "table" or (mw.before == nil and mw.after == nil and mw.log == nil) then
    error("middleware is a function(req) or a table { before =, after =, log = }", 3)
  end
  return mw
end

-- res.headers for after middleware: any spelling finds a header, and setting one under another
-- spelling replaces it, so that a header is never sent twice (Content-Type and content-type).
local response_headers_mt = {
  __index = function(t, k)
    if type(k) ~= "string" then return nil end
    local lk = k:lower()
    for name, v in next, t do
      if type(name) == "string" and name:lower() == lk then return v end
    end
  end,
  __newindex = function(t, k, v) -- k is not in t under this spelling
    if type(k) == "string" then
      local lk = k:lower()
      for name in next, t do
        if type(name) == "string" and name:lower() == lk then rawset(t, name, nil) break end
      end
    end
    rawset(t, k, v)
  end,
}

-- A copy of the handler's headers (which may be a table it returns for every request) that
-- middleware may change.
local function response_headers(headers)
  local h = setmetatable({}, response_headers_mt)
  if headers then for k, v in pairs(headers) do h[k] = v end end
  return h
end

local function run_after(afters, req, status, body, headers)
  local res = { status = status or 200, body = body, headers = response_headers(headers) }
  for i = #afters, 1, -1 do afters[i](req, res) end
  return res.status, res.body, res.headers
end

-- The handler wrapped in the middleware list[from..to]: befores in order, afters in reverse.
function chain(list, from, to, handler)
  local befores, afters = {}, {}
  for i = from, to do
    local mw = as_middleware(list[i])
    if mw.before then befores[#befores + 1] = mw.before end
    if mw.after then afters[#afters + 1] = mw.after end
  end
  return function(req)
    local status, body, headers
    for i = 1, #befores do
      status, body, headers = befores[i](req)
      if status ~= nil then break end
    end
    if status == nil then status, body, headers = handler(req) end
    if afters[1] then status, body, headers = run_after(afters, req, status, body, headers) end
    return status, body, headers
  end
end

local function credentials() return app.credentials or {} end

--- Shipped middleware: gw.cors(opts), gw.auth.api_key(opts), gw.auth.basic(opts).
M.cors = middleware.cors
M.auth = {
  api_key = function(opts) return middleware.auth.api_key(opts, credentials) end,
  basic = function(opts) return middleware.auth.basic(opts, credentials) end,
}

--- gw.rate_limit { limit =, period =, key =, policy =, ... }: at most limit requests per key and
--- period, 429 beyond (luagate/ratelimit.lua).
M.rate_limit = ratelimit.new

--- Apply middleware to every request, in the order given, before routing: a global before runs
--- even when no route matches (so CORS can answer a preflight), a global after sees every answer.
function M.use(mw)
  mw = as_middleware(mw)
  if mw.before then app.befores[#app.befores + 1] = mw.before end
  if mw.after then app.afters[#app.afters + 1] = mw.after end
  if mw.log then
    app.logs[#app.logs + 1] = mw.log
    core.log_phase(app.run_logs)
  end
end

---------------------------------------------------------------------------------------------------
-- Responses

local function is_content_type(k)
  return k == "Content-Type" or k == "content-type" or (#k == 12 and k:lower() == "content-type")
end

-- Headers as the server takes them: name -> string or list of strings, Content-Type apart.
-- The common answers (no headers but a Content-Type) make no new table.
local function normalise_headers(headers)
  local out, ctype, seen
  for k, v in pairs(headers) do
    if type(k) ~= "string" then error("response header names must be strings", 3) end
    if next(headers, k) ~= nil or seen then -- more than one header: is this one there twice?
      seen = seen or {}
      local lk = k:lower()
      if seen[lk] then
        error(("response header '%s' is set twice, as '%s' and '%s'"):format(lk, seen[lk], k), 3)
      end
      seen[lk] = k
    end
    local tv = type(v)
    if tv == "table" then
      local list = {}
      for i, x in ipairs(v) do list[i] = tostring(x) end
      v = list
    elseif tv ~= "string" then
      v = tostring(v)
    end
    if is_content_type(k) then
      ctype = type(v) == "table" and v[1] or v
    else
      out = out or {}
      out[k] = v
    end
  end
  return out, ctype
end

-- The handler's (status, body, headers) as the server takes them: status, body string,
-- content type, headers table. A table body is sent as JSON.
local function finish(req, status, body, headers)
  if status == nil then status = 200 end
  if type(status) ~= "number" then
    error(("a handler returns status, body, headers: got a %s for the status"):format(type(status)), 2)
  end
  if status < 200 or status > 599 or status % 1 ~= 0 then
    error(("invalid status %s for %s %s (route %s): a final status is an integer from 200 to 599")
          :format(tostring(status), req.method, req.path, tostring(req.route or "none")), 2)
  end
  local ctype
  local tb = type(body)
  if tb == "table" then
    body, ctype = json.encode(body), JSON_TYPE
  elseif body == nil then
    body = ""
  elseif tb ~= "string" then
    body = tostring(body)
  end
  if headers ~= nil then
    local hct
    headers, hct = normalise_headers(headers)
    ctype = hct or ctype
  end
  if not ctype and body ~= "" then ctype = TEXT_TYPE end
  return status, body, ctype, headers
end

--- status, body, headers for a redirect to url (302 unless given).
function M.redirect(url, status)
  return status or 302, "", { location = url }
end

-- Failures of the gateway's own resources, not the upstream's: the client may try again soon.
local BUSY_KINDS = { ["gateway busy"] = true, ["too many open files"] = true }

--- The answer to give when fetch failed: 504 for a timeout, 503 when the gateway itself ran short
--- (memory budget, descriptors), 502 for anything else. The body says the kind of failure and the
--- request id, never the upstream's address or the client library's text (those are in err, for
--- the log).
function M.upstream_error(err)
  local kind = tostring(err):match("^([%w ]+):") or "upstream error"
  local status, error = 502, "bad gateway"
  if kind == "timeout" then status, error = 504, "upstream timed out"
  elseif BUSY_KINDS[kind] then status, error = 503, "gateway busy" end
  return status, { error = error, kind = kind, request_id = core.request_id() }
end

---------------------------------------------------------------------------------------------------
-- Fetch

--- true when path is a path on the upstream's host: it starts with one "/", and holds no "..",
--- backslash, "#", whitespace or control characters that could lead elsewhere; no malformed escape
--- ("%u002e", a lone "%") and no encoded "%" or "." (a second decoding upstream could make a ".."
--- of them). Its path part (before "?") once percent-decoded holds no "..", backslash or control
--- character either, and is valid UTF-8: no overlong forms such as "%c0%ae", which lenient
--- decoders take for ".". One pass in C: every proxied call checks it, often twice.
M.is_safe_path = core.safe_path
local find = string.find

local function header_lines(lines, headers)
  for k, v in pairs(headers) do
    if type(v) == "table" then
      for _, x in ipairs(v) do lines[#lines + 1] = k .. ": " .. tostring(x) end
    else
      lines[#lines + 1] = k .. ": " .. tostring(v)
    end
  end
end

local NO_OPTS = {}

-- The C side of an upstream (its parsed URL, headers and auth rendered once, deadlines, client),
-- made at its first fetch and again when it is given other settings. Kept apart, keyed by the
-- upstream table itself (weakly), so that a replaced or copied upstream never gets another's, and
-- the tables gw.upstreams() returns hold only what was set. Connections belong to the upstream's
-- name, not to this: a change of settings keeps them (unless the address changed).
local prepared = setmetatable({}, { __mode = "k" })

local function prepare_upstream(name, up)
  local lines, auth = {}, up.auth
  header_lines(lines, up.headers or NO_OPTS)
  local userpwd = auth and auth.user and (auth.user .. ":" .. (auth.password or "")) or nil
  local handle, err = core.upstream(name, up.url, lines, userpwd, auth and auth.bearer, up.connect_timeout,
    up.timeout, up.read_timeout, up.keepalive, up.retries, up.client, up.max_response_body or app.max_response_body,
    up.first_byte_timeout, up.forwarded ~= false)
  if not handle then return nil, err end
  local p = { handle = handle, lines = lines, url = up.url, headers = up.headers, auth = auth, id = core.upstream_id(name),
              bearer = auth and auth.bearer, user = auth and auth.user, password = auth and auth.password }
  prepared[up] = p
  return p
end

-- up's prepared state, made again when it was given other headers, auth or URL since (a new table
-- for its headers or auth, a new token, user or password): a few comparisons, with no allocation,
-- per fetch. Entries changed inside its headers table, and its other settings changed in place,
-- are not seen: gw.upstreams { name = {...} } replaces an upstream whole (see gw.upstreams).
local function prepared_for(name, up)
  local p = prepared[up]
  if p and p.url == up.url and p.headers == up.headers then
    local auth = up.auth
    if p.auth == auth and (not auth or (p.bearer == auth.bearer and p.user == auth.user
                                        and p.password == auth.password)) then
      return p
    end
  end
  return prepare_upstream(name, up)
end

-- Start one call: target is an upstream name (then path is its path) or a full URL.
local function start(target, path, opts)
  local up, prep
  if type(target) ~= "string" then -- a programmer's mistake, not a failure of the network
    error("fetch: expected an upstream name or a URL, got " .. type(target), 3)
  end
  if find(target, "://", 1, true) then
    opts = path
  else
    up = app.upstreams[target]
    if not up then return nil, ("unknown upstream '%s'"):format(target) end
    if not M.is_safe_path(path) then
      return nil, ("bad path for upstream '%s': %s"):format(target, tostring(path))
    end
    local err
    prep, err = prepared_for(target, up)
    if not prep then return nil, err end
  end
  opts = opts or NO_OPTS
  if type(opts) ~= "table" then error("fetch: options are a table, got " .. type(opts), 3) end
  local body, lines = opts.body, nil
  -- The request's own body: as it is when it is here whole, else sent on as it arrives.
  if getmetatable(body) == request_mt then body = body.body or true end
  if opts.headers or type(body) == "table" then
    lines = {}
    if opts.headers then header_lines(lines, opts.headers) end
    if type(body) == "table" then
      body = json.encode(body)
      lines[#lines + 1] = "Content-Type: application/json"
    end
  end
  local method = opts.method and opts.method:upper() or (body and "POST" or "GET")
  local auth = opts.auth
  local userpwd = auth and auth.user and (auth.user .. ":" .. (auth.password or "")) or nil
  if app.mock then
    -- A spec's canned answer: still a real op (a zero-length sleep), so the handler yields as it
    -- would on the network, but the result is the canned one. The mock gets a copy of the header
    -- lines, the upstream's and the call's, so that a mock that changes them changes nothing else.
    local all = {}
    if prep then for i = 1, #prep.lines do all[i] = prep.lines[i] end end
    local bearer = auth and auth.bearer or (not auth and prep and prep.bearer)
    if bearer then all[#all + 1] = "Authorization: Bearer " .. bearer end
    if lines then for i = 1, #lines do all[#all + 1] = lines[i] end end
    local res, err = app.mock { method = method, url = up and (up.url .. path) or target,
                                upstream = up and target, path = up and path, headers = all,
                                body = body, timeout = opts.timeout or (up and up.timeout) or 30 }
    local id = core.sleep(0)
    local co = running()
    canned[co] = canned[co] or {}
    canned[co][id] = { res, err or (not res and "no canned response for " .. method .. " " .. (up and (up.url .. path) or target)) or nil }
    return id
  end
  return core.fetch(prep and prep.handle, method, up and path or target, lines, body, opts.stream,
                    opts.timeout, opts.connect_timeout, opts.retries, auth ~= nil, userpwd, auth and auth.bearer,
                    prep and prep.id or 0)
end

-- A response: { status, body, content_type, headers, :json() }. headers is parsed from the raw
-- header block when first asked for: most handlers only pass status, body and content type on.
-- A streamed one (fetch with stream = true) has no body yet: :read() gives it in pieces, and
-- returning the response itself as a handler's body sends it on to the client as it arrives.
local Response = {}
--- The response body parsed as JSON: value | nil, err
function Response.json(res) return json.decode(res.body) end

--- The next piece of a streamed body: chunk | nil at the end | nil, err. For a buffered
--- response, its whole body once.
function Response.read(res)
  local id = rawget(res, "_stream")
  if not id then
    if rawget(res, "_read") then return nil end
    rawset(res, "_read", true)
    return res.body ~= "" and res.body or nil
  end
  core.read(id)
  local _, chunk, err = yield(WAIT)
  return chunk, err
end

--- The rest of a streamed body as one string: body | nil, err (over max bytes: "response too large").
function Response.read_all(res, max)
  max = max or app.max_response_body or 64 * 1024 * 1024
  local parts, n = {}, 0
  while true do
    local chunk, err = Response.read(res)
    if not chunk then
      if err then return nil, err end
      return table.concat(parts)
    end
    n = n + #chunk
    if n > max then
      Response.close(res)
      return nil, ("response too large: over %d bytes"):format(max)
    end
    parts[#parts + 1] = chunk
  end
end

--- Stop a streamed response: the rest of its body is not read (its connection is closed).
function Response.close(res)
  local id = rawget(res, "_stream")
  if id then core.close_stream(id) end
end

local parse_headers = core.parse_headers
local response_mt = {
  __index = function(res, k)
    if k == "headers" then
      local h = parse_headers(rawget(res, "_head") or "")
      rawset(res, "headers", h)
      return h
    end
    return Response[k]
  end,
}

local function new_response(status, body, head, content_type)
  return setmetatable({ status = status, body = body, content_type = content_type, _head = head }, response_mt)
end

local function new_stream_response(status, id, head, content_type)
  return setmetatable({ status = status, content_type = content_type, _head = head, _stream = id }, response_mt)
end

-- A spec's canned { status, body, headers } as the response a real upstream would give for it:
-- made from a header block like the one an upstream sends, so that the same parser lower-cases
-- the names and lists a repeated header; a table body is JSON, with its type unless one is given.
local function canned_response(r)
  local body, headers, typed = r.body, r.headers or NO_OPTS, false
  if type(body) == "table" then body = json.encode(body)
  elseif body == nil then body = ""
  elseif type(body) ~= "string" then body = tostring(body) end
  for k in pairs(headers) do typed = typed or (type(k) == "string" and is_content_type(k)) end
  local status = r.status or 200
  local lines = { "HTTP/1.1 " .. status }
  header_lines(lines, headers)
  if type(r.body) == "table" and not typed then lines[#lines + 1] = "Content-Type: " .. JSON_TYPE end
  local head = table.concat(lines, "\r\n") .. "\r\n\r\n"
  local ctype = parse_headers(head)["content-type"]
  if type(ctype) == "table" then ctype = ctype[#ctype] end -- the last one wins, as upstreams read it
  return new_response(status, body, head, ctype)
end

-- Wait for the next op of this coroutine: id, response or nil, err.
local function await()
  local id, status, body, head, ctype = yield(WAIT)
  if app.mock then
    local c = canned[running()]
    local r = c and c[id]
    if r then
      c[id] = nil
      if not r[1] then return id, nil, r[2] end
      return id, canned_response(r[1])
    end
  end
  if not status then return id, nil, body end
  if type(body) == "number" then return id, new_stream_response(status, body, head, ctype) end
  return id, new_response(status, body, head, ctype)
end

--- Fetch from an upstream: fetch("api", "/users/1", opts) or fetch("http://host/x", opts).
--- opts: method, headers, body (a table is sent as JSON; a handler's req sends its body on, as it
--- arrives), timeout and connect_timeout (seconds), auth = { user =, password = } or { bearer = },
--- retries (after a refused connection), stream (true: return at the head, read the body later).
--- Returns a response { status, body, content_type, headers, :json(), :read() } or nil, err
--- ("timeout: ...", "connection refused: ...").
function M.fetch(target, path, opts)
  local id, err = start(target, path, opts)
  if not id then return nil, err end
  local _, res, ferr = await()
  return res, ferr
end

local function start_spec(spec)
  if type(spec) ~= "table" then return nil, "each request is a table { target, path, opts }" end
  local target = spec[1]
  if type(target) == "string" and find(target, "://", 1, true) then return start(target, spec[2]) end
  return start(target, spec[2], spec[3])
end

-- Run calls (key -> { target, path, opts }) at once. Without first_good: wait for all, return
-- results, errors. With it: return the first response with a status below 500 and its key,
-- cancelling the rest, or nil, errors.
local function run_calls(calls, first_good)
  local results, errors, pending, waiting = {}, {}, {}, 0
  for k in pairs(calls) do
    local id, err = start_spec(calls[k])
    if id then pending[id], waiting = k, waiting + 1
    else errors[k] = err end
  end
  while waiting > 0 do
    local id, res, err = await()
    local k = pending[id]
    if k ~= nil then
      pending[id], waiting = nil, waiting - 1
      if not res then
        errors[k] = err
      elseif not first_good then
        results[k] = res
      elseif res.status < 500 then
        for other in pairs(pending) do core.cancel(other) end
        return res, k
      else
        errors[k] = "status " .. res.status
      end
    end
  end
  if first_good then return nil, errors end
  return results, errors
end

--- Run several fetches at once and wait for all: the time taken is the slowest call's, not the sum.
--- requests: a table of { target, path, opts } (an array, or keyed by name).
--- Returns results, errors: two tables with the same keys as requests; results[k] is the
--- response, or nil with errors[k] saying why.
function M.fetch_all(requests)
  return run_calls(requests, false)
end

--- Run several fetches at once and return the first response with a status below 500, with its
--- key; the others are cancelled. nil, errors when none succeeded.
function M.fetch_any(requests)
  return run_calls(requests, true)
end

--- Wait without blocking the server: seconds may be fractional (0.05 is 50 ms).
function M.sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 then error("sleep: expected seconds >= 0", 2) end
  core.sleep(seconds)
  yield(WAIT)
end

---------------------------------------------------------------------------------------------------
-- Redis: gw.redis(name [, { timeout = s }]) -> client with :call(cmd, ...) and :eval(script, keys,
-- args) (see luagate/redis.lua); gw.redis.null is a nil inside an array reply.

M.redis = setmetatable({ null = core.redis_null }, { __call = function(_, name, opts) return redis.client(name, opts) end })

---------------------------------------------------------------------------------------------------
-- Logging and time

--- Write to the error log: log(message) at info, or log(level, message) with level one of
--- "error", "warn", "info", "debug". The current request's id is added.
function M.log(level, msg)
  if msg == nil then level, msg = "info", level end
  core.log(level, tostring(msg))
end

--- Seconds since an arbitrary point, with millisecond resolution (the loop's clock).
M.now = core.now

--- The W3C trace of the request being handled: { trace_id, span_id, parent_id (the client's span,
--- or nil when the trace started here), sampled, traceparent (this request's span) }, or nil
--- outside a request.
function M.trace()
  local trace_id, span_id, parent_id, sampled, traceparent = core.trace()
  if not trace_id then return nil end
  return { trace_id = trace_id, span_id = span_id, parent_id = parent_id or nil, sampled = sampled,
           traceparent = traceparent }
end

--- This worker's counters: { handlers (running or waiting, this one included), upstream_active
--- (transfers in flight), upstream_connections_opened (since start) }.
M.stats = core.stats

---------------------------------------------------------------------------------------------------
-- The server's side: dispatching requests, loading route scripts

-- Where the router leaves the id of the route it matched, for the request's metrics and log line:
-- an FFI store, which the JIT compiles into the router's trace (a C call would cut it).
local route_cell = require("ffi").cast("int32_t *", core.route_cell())

-- Route one request with router r, in the request's own coroutine.
local function route(r, req)
  local handler, params, pattern, opts, rid = r:match(req.method, req.path)
  if not handler then
    local allow = pattern
    if allow then return 405, { error = "method not allowed", request_id = req.id }, { Allow = allow } end
    return 404, { error = "not found", request_id = req.id }
  end
  req.params, req.route = params, pattern
  if opts and opts.timeout then core.set_timeout(opts.timeout) end -- in place of handler_timeout
  route_cell[0] = rid
  return handler(req)
end

local function dispatch_with(r, req, befores, afters)
  local status, body, headers
  if befores and befores[1] then
    for i = 1, #befores do
      status, body, headers = befores[i](req)
      if status ~= nil then break end
    end
  end
  if status == nil then status, body, headers = route(r, req) end
  if afters and afters[1] then status, body, headers = run_after(afters, req, status, body, headers) end
  return status, body, headers
end

-- A piece of an answer the handler writes itself: true | nil, err (the client left). Waits while
-- the client is behind, so a fast writer cannot fill the gateway's memory.
local function write(chunk)
  if type(chunk) ~= "string" then chunk = tostring(chunk) end
  local ok, err = core.write(chunk)
  if type(ok) == "number" then
    local _
    _, ok, err = yield(WAIT)
  end
  return ok, err
end

-- An answer whose body is not a whole value: a streamed upstream response, sent on as it arrives,
-- or a function(write) that writes it in pieces. The head goes first, without a length (chunked),
-- unless the upstream gave one. Returns nothing: the answer is out, or was cut.
local function send_streamed(status, body, headers)
  local ctype
  if headers ~= nil then headers, ctype = normalise_headers(headers) end
  if type(body) == "table" then
    if core.pipe(rawget(body, "_stream"), status, ctype or body.content_type, headers) ~= true then yield(WAIT) end
    return
  end
  core.respond_head(status, ctype or TEXT_TYPE, headers)
  local ok, err = pcall(body, write)
  core.respond_end(ok)
  if not ok then error(err, 0) end
end

-- Outside a request (specs run handlers in core.run), a streamed body is read whole instead.
local function gather(body)
  if type(body) == "table" then return body:read_all() end
  local parts = {}
  body(function(chunk) parts[#parts + 1] = tostring(chunk) return true end)
  return table.concat(parts)
end

-- The names a Connection header lists (they are hop-by-hop too), lower-cased.
local function connection_named(value, into)
  if type(value) == "table" then
    for _, v in ipairs(value) do connection_named(v, into) end
  elseif value then
    for token in value:gmatch("[^,%s]+") do into[token:lower()] = true end
  end
  return into
end

-- A response returned as a handler's body brings its headers (as a pipe does in C): the
-- upstream's, unless the handler gives one of the same name. Hop-by-hop ones never go out (C),
-- nor those the upstream's Connection header names (here).
local function passed_on(res, headers)
  local out, mine = {}, {}
  for k, v in pairs(headers or NO_OPTS) do
    out[k], mine[type(k) == "string" and k:lower() or k] = v, true
  end
  local theirs = res.headers
  local named = theirs.connection and connection_named(theirs.connection, {}) or NO_OPTS
  for k, v in pairs(theirs) do
    if not mine[k] and not named[k] then out[k] = v end
  end
  return out
end

-- The handler's answer, out: whole bodies go back to C as values; streams are sent from here
-- (live: a client is there; specs' core.run has none).
local function respond(live, req, status, body, headers)
  if getmetatable(body) == response_mt then
    local res = body
    if live and rawget(res, "_stream") then return send_streamed(status or 200, res, headers) end
    body = rawget(res, "_stream") and gather(res) or res.body
    headers = passed_on(res, headers)
  elseif type(body) == "function" then
    if live then return send_streamed(status or 200, body, headers) end
    body = gather(body)
  end
  return finish(req, status, body, headers)
end

-- A body still arriving when the handler starts (the server hands a request over at the end of
-- its head when its body is large, chunked or slow): a streaming route reads it in pieces; any
-- other waits here for all of it, within max_body_size. Returns true to go on, or the answer to
-- give instead (413 for a body too large, nothing when the client left meanwhile).
local function take_body(r, req)
  local _, _, _, opts = r:match(req.method, req.path)
  if opts and opts.body == "stream" then
    core.body_stream()
    req.body, req._streamed = nil, true
    return true
  end
  if not core.body() then
    return false, 413, { error = "request body too large", request_id = req.id }
  end
  local _, whole = yield(WAIT)
  req.body = whole
  return whole ~= nil
end

-- A request table like the server's, for serve and stub servers: its id and headers come from the
-- server when first read (request.lua).
-- params and route are set by the router: named here, they size the table for what comes later
-- (query, id, headers), as a table that grows is rehashed whole.
local function new_request(method, path, raw_query, target, body, remote_addr, http_version)
  return setmetatable({
    method = method, path = path, raw_query = raw_query, target = target, body = body,
    remote_addr = remote_addr, http_version = http_version, params = false, route = false,
  }, request_mt)
end

-- A request from the server through router r: its body first, when the route takes it whole
-- (req.body is false until then), then the handler and the answer.
local function serve_with(r, req, befores, afters)
  if req.body == false then
    local go, status, answer = take_body(r, req)
    if not go then
      if status then return finish(req, status, answer) end
      return
    end
  end
  return respond(true, req, dispatch_with(r, req, befores, afters))
end

-- The server's entry point for each request, with the request's parts as arguments: a table
-- constructor with constant keys is much cheaper than filling the table from C.
local function serve(method, path, raw_query, target, body, remote_addr, http_version)
  local req = new_request(method, path, raw_query, target, body, remote_addr, http_version)
  local r = app.router
  if app.logs[1] then -- kept for the log phase, with what is read lazily from the request meanwhile
    local _ = req.id, req.headers
    core.keep_request(req)
  end
  return serve_with(r, req, app.befores, app.afters)
end
M._serve = serve

-- An entry point like serve for another router (stub upstreams in specs).
function M._server_for(r)
  return function(...)
    return serve_with(r, new_request(...))
  end
end

-- Dispatch a request table made by luagate.request.new (specs).
function M._dispatch(req)
  return respond(false, req, dispatch_with(app.router, req, app.befores, app.afters))
end

-- Specs: answer fetches from fn(call) -> response table | nil, err instead of the network.
function M._mock_fetch(fn) app.mock = fn end

--- The upstreams this worker knows, by name (from gateway.conf, or set by specs). With a table
--- of name -> upstream (as in gateway.conf): check those like the config and put them in place
--- of the upstreams of those names (the others stay), from the next fetch on. Returns the
--- upstreams, or nil, err with nothing changed.
function M.upstreams(changes)
  if changes == nil then return app.upstreams end
  if type(changes) ~= "table" then return nil, "gw.upstreams: expected a table of name = upstream" end
  local conf, err = config.check({ upstreams = changes }, "gw.upstreams")
  if not conf then return nil, (err:gsub("^gw%.upstreams:%?:", "gw.upstreams:")) end
  for name, up in pairs(conf.upstreams) do app.upstreams[name] = up end
  return app.upstreams
end

-- Forget every route and upstream (specs load scripts into a fresh app).
function M._reset(upstreams, creds, redis_servers, max_response_body)
  redis.configure(redis_servers)
  app.max_response_body = max_response_body
  app.router = router.new()
  app.upstreams = upstreams or {}
  app.credentials = creds or {}
  app.befores, app.afters, app.logs = {}, {}, {}
  app.nroutes = 0
  app.mock = nil
end

-- Load every *.lua in dir, in name order. Errors name the script. Returns how many scripts, and
-- { { script = path, routes = n }, ... }.
function M._load_routes(dir)
  local names, err = core.list_dir(dir)
  if not names then error("routes: " .. err, 0) end
  local scripts = {}
  for _, name in ipairs(names) do
    if name:match("%.lua$") then
      local path = dir .. "/" .. name
      local chunk, lerr = loadfile(path)
      if not chunk then error(lerr, 0) end
      local before = app.nroutes
      local ok, rerr = xpcall(chunk, debug.traceback)
      if not ok then error(("%s: %s"):format(path, rerr), 0) end
      scripts[#scripts + 1] = { script = path, routes = app.nroutes - before }
    end
  end
  return #scripts, scripts
end

-- Start-up: take the checked config, load the route scripts, return the dispatcher and the
-- scripts loaded ({ script =, routes = } each).
function M._boot(conf)
  M._reset(conf.upstreams, conf.credentials, conf.redis, conf.max_response_body)
  assert(core.set_trusted_proxies(conf.trusted_proxies or {}))
  app.config = conf
  local dirs = { conf.routes }
  for _, d in ipairs(conf.lua_path or {}) do dirs[#dirs + 1] = d end
  for i = #dirs, 1, -1 do package.path = dirs[i] .. "/?.lua;" .. dirs[i] .. "/?/init.lua;" .. package.path end
  local n, scripts = M._load_routes(conf.routes)
  if n == 0 then core.log("warn", "no route scripts (*.lua) in " .. conf.routes) end
  return serve, scripts
end

return M
