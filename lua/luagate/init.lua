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

local M = { version = core.version, json = json }

local WAIT, yield, running = core.WAIT, coroutine.yield, coroutine.running
local JSON_TYPE, TEXT_TYPE = "application/json", "text/plain; charset=utf-8"

-- The state of this worker's app: its routes and its upstreams (from gateway.conf).
local app = { router = router.new(), upstreams = {}, befores = {}, afters = {} }
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

--- Register handler(req) for method and path. Paths may hold ":name" segments and a final
--- "*name"; their values are in req.params. The handler returns status, body, headers.
--- Middleware may come between path and handler: gw.get(path, mw1, mw2, handler).
--- A method and path registered twice is an error naming both registrations.
function M.route(method, path, ...)
  local n = select("#", ...)
  local handler = select(n, ...)
  if n > 1 then handler = chain({ ... }, n - 1, handler) end
  app.router:add(method:upper(), path, handler, caller_location())
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
  if type(mw) ~= "table" or (mw.before == nil and mw.after == nil) then
    error("middleware is a function(req) or a table { before =, after = }", 3)
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

-- The handler wrapped in the first n middleware of list: befores in order, afters in reverse.
function chain(list, n, handler)
  local befores, afters = {}, {}
  for i = 1, n do
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

--- Apply middleware to every request, in the order given, before routing: a global before runs
--- even when no route matches (so CORS can answer a preflight), a global after sees every answer.
function M.use(mw)
  mw = as_middleware(mw)
  if mw.before then app.befores[#app.befores + 1] = mw.before end
  if mw.after then app.afters[#app.afters + 1] = mw.after end
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

--- The answer to give when fetch failed: 504 for a timeout, 502 for anything else.
function M.upstream_error(err)
  local status = tostring(err):find("^timeout") and 504 or 502
  return status, { error = status == 504 and "upstream timed out" or "bad gateway", detail = tostring(err) }
end

---------------------------------------------------------------------------------------------------
-- Fetch

local byte, find, gsub, char = string.byte, string.find, string.gsub, string.char

local function hex_char(h) return char(tonumber(h, 16)) end

-- UTF-8 as RFC 3629 has it: no overlong forms, no surrogates, nothing past U+10FFFF.
local function valid_utf8(s)
  if not find(s, "[\128-\255]") then return true end
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2 or (c >= 0xE0 and c <= 0xEF) and 3
                or (c >= 0xF0 and c <= 0xF4) and 4 or nil
    if not len then return false end -- a stray continuation byte, C0/C1 (overlong), F5-FF
    if len > 1 then
      local c2 = byte(s, i + 1) or 0
      local lo, hi = 0x80, 0xBF
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F      -- overlong; surrogates
      elseif c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end -- overlong; > U+10FFFF
      if c2 < lo or c2 > hi then return false end
      for k = i + 2, i + len - 1 do
        local ck = byte(s, k) or 0
        if ck < 0x80 or ck > 0xBF then return false end
      end
    end
    i = i + len
  end
  return true
end

local function unsafe_chars(p)
  return find(p, "[%s%c\\]") or find(p, "..", 1, true)
end

--- true when path is a path on the upstream's host: it starts with one "/", and holds no "..",
--- backslash, whitespace or control characters that could lead elsewhere; no malformed escape
--- ("%u002e", a lone "%") and no encoded "%" or "." (a second decoding upstream could make a ".."
--- of them). Its path part (before "?") once percent-decoded holds no "..", backslash or control
--- character either, and is valid UTF-8: no overlong forms such as "%c0%ae", which lenient
--- decoders take for ".".
function M.is_safe_path(path)
  if type(path) ~= "string" or byte(path, 1) ~= 47 or byte(path, 2) == 47 then return false end -- "/", not "//"
  if unsafe_chars(path) or find(path, "#", 1, true) then return false end
  local part = path:match("^[^?]*")
  if find(path, "%", 1, true) then
    -- Every "%" starts an escape of two hex digits: "%u002e" (IIS) and "%%" are not escapes.
    if find(path, "%%%X") or find(path, "%%.%X") or find(path, "%%.?$") then return false end
    -- An encoded dot ("%2e") is never needed and may be decoded into ".." upstream; an encoded
    -- percent ("%25") can hide one from a single decoding.
    if find(path, "%%2[eE]") or find(path, "%%25") then return false end
    part = gsub(part, "%%(%x%x)", hex_char)
    if find(part, "[%c\\]") or find(part, "..", 1, true) then return false end
  end
  return valid_utf8(part)
end

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

-- What fetch needs of an upstream, worked out at its first fetch rather than on each: its default
-- header lines, the same with its bearer token, its basic-auth "user:password", and its pool.
-- Kept apart, keyed by the upstream table itself (weakly), so that a replaced or copied upstream
-- never gets another's lines, and the tables gw.upstreams() returns hold only what was set.
local prepared = setmetatable({}, { __mode = "k" })

local function prepare_upstream(up, old)
  local headers, auth = up.headers, up.auth
  local plain = {}
  header_lines(plain, headers or NO_OPTS)
  local lines = plain
  if auth and auth.bearer then
    lines = { unpack(plain) }
    lines[#lines + 1] = "Authorization: Bearer " .. auth.bearer
  end
  -- Its own count of transfers in flight, for its keepalive size: kept when only its headers or
  -- auth change, as its connections stay in libcurl's cache (and a new number each time would
  -- grow the counters' array in C with every token refresh).
  local pool = old and old.pool
  if not pool then
    app.pools = (app.pools or 0) + 1
    pool = app.pools
  end
  local p = {
    headers = headers, auth = auth, bearer = auth and auth.bearer, user = auth and auth.user,
    password = auth and auth.password, plain_lines = plain, lines = lines, pool = pool,
    userpwd = auth and auth.user and (auth.user .. ":" .. (auth.password or "")) or nil,
  }
  prepared[up] = p
  return p
end

-- up's prepared state, made again when it was given other headers or auth since (a new table for
-- either, or a new token, user or password in its auth): a few comparisons, with no allocation,
-- per fetch. Entries changed inside its headers table are not seen (see gw.upstreams).
local function prepared_for(up)
  local p = prepared[up]
  if p and p.headers == up.headers then
    local auth = up.auth
    if p.auth == auth and (not auth or (p.bearer == auth.bearer and p.user == auth.user
                                        and p.password == auth.password)) then
      return p
    end
  end
  return prepare_upstream(up, p)
end

local function auth_of(auth, lines)
  if auth.bearer then lines[#lines + 1] = "Authorization: Bearer " .. auth.bearer
  elseif auth.user then return auth.user .. ":" .. (auth.password or "") end
end

-- Start one transfer: target is an upstream name (then path is its path) or a full URL.
local function start(target, path, opts)
  local url, up, prep
  if type(target) ~= "string" then -- a programmer's mistake, not a failure of the network
    error("fetch: expected an upstream name or a URL, got " .. type(target), 3)
  end
  if find(target, "://", 1, true) then
    url, opts = target, path
  else
    up = app.upstreams[target]
    if not up then return nil, ("unknown upstream '%s'"):format(target) end
    if not M.is_safe_path(path) then
      return nil, ("bad path for upstream '%s': %s"):format(target, tostring(path))
    end
    url = up.url .. path
    prep = prepared_for(up)
  end
  opts = opts or NO_OPTS
  local body, lines, userpwd = opts.body, prep and prep.lines, prep and prep.userpwd
  -- The upstream's prepared lines serve as they are, unless this call adds its own.
  if opts.headers or opts.auth or type(body) == "table" or not up then
    local own = {}
    local base = prep and (opts.auth and prep.plain_lines or prep.lines)
    if base then for i = 1, #base do own[i] = base[i] end end
    if opts.headers then header_lines(own, opts.headers) end
    if type(body) == "table" then
      body = json.encode(body)
      own[#own + 1] = "Content-Type: application/json"
    end
    if opts.auth then userpwd = auth_of(opts.auth, own) end -- nil for {}: no auth at all
    lines = own
  end
  local method = opts.method and opts.method:upper() or (body and "POST" or "GET")
  local timeout = opts.timeout or (up and up.timeout) or 30
  local connect_timeout = opts.connect_timeout or (up and up.connect_timeout) or timeout
  if app.mock then
    -- A spec's canned answer: still a real op (a zero-length sleep), so the handler yields as it
    -- would on the network, but the result is the canned one. The mock gets a copy of the header
    -- lines: they may be the upstream's own, which a mock that changed them would change for
    -- every later request.
    local res, err = app.mock { method = method, url = url, upstream = up and target, path = up and path,
                                headers = { unpack(lines) }, body = body, timeout = timeout }
    local id = core.sleep(0)
    local co = running()
    canned[co] = canned[co] or {}
    canned[co][id] = { res, err or (not res and "no canned response for " .. method .. " " .. url) or nil }
    return id
  end
  return core.fetch(method, url, lines, body, timeout, connect_timeout, userpwd, prep and prep.pool, up and up.keepalive)
end

-- A response: { status, body, content_type, headers, :json() }. headers is parsed from the raw
-- header block when first asked for: most handlers only pass status, body and content type on.
local Response = {}
--- The response body parsed as JSON: value | nil, err
function Response.json(res) return json.decode(res.body) end

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

-- A spec's canned { status, body, headers } as the response a real upstream would give for it:
-- made from a header block like the one libcurl hands over, so that the same parser lower-cases
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
  if type(ctype) == "table" then ctype = ctype[#ctype] end -- libcurl reports the last one
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
  if status then return id, new_response(status, body, head, ctype) end
  return id, nil, body
end

-- Connection failures are retried: the request was never sent, so any method may try again.
local function can_retry(err)
  return type(err) == "string" and find(err, "^connection refused") ~= nil
end

local function retries_for(target, path, opts)
  if type(target) == "string" and find(target, "://", 1, true) then opts = path end
  local n = opts and opts.retries
  if n == nil then
    local up = app.upstreams[target]
    n = up and up.retries or 0
  end
  return n
end

-- 20 ms, 80 ms, 320 ms, then 1 s at most: a retry never waits longer than a second.
local function backoff(try) return math.min(0.02 * 4 ^ (try - 1), 1) end

--- Fetch from an upstream: fetch("api", "/users/1", opts) or fetch("http://host/x", opts).
--- opts: method, headers, body (a table is sent as JSON), timeout and connect_timeout (seconds),
--- auth = { user =, password = } or { bearer = }, retries (after a refused connection).
--- Returns a response { status, body, content_type, headers, :json() } or nil, err
--- ("timeout: ...", "connection refused: ...").
function M.fetch(target, path, opts)
  local tries = 0
  while true do
    local id, err = start(target, path, opts)
    if not id then return nil, err end
    local _, res, ferr = await()
    if res then return res end
    if not can_retry(ferr) or tries >= retries_for(target, path, opts) then return nil, ferr end
    tries = tries + 1
    core.sleep(backoff(tries))
    yield(WAIT)
  end
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
  local results, errors, pending, tries, waiting = {}, {}, {}, {}, 0
  local function launch(k)
    local id, err = start_spec(calls[k])
    if id then pending[id], waiting = k, waiting + 1
    else errors[k] = err end
  end
  for k in pairs(calls) do launch(k) end
  while waiting > 0 do
    local id, res, err = await()
    local k = pending[id]
    if k ~= nil then
      pending[id], waiting = nil, waiting - 1
      if type(k) == "table" then
        launch(k[1]) -- a retry's pause is over
      elseif res then
        if not first_good then
          results[k] = res
        elseif res.status < 500 then
          for other in pairs(pending) do core.cancel(other) end
          return res, k
        else
          errors[k] = "status " .. res.status
        end
      else
        local spec = calls[k]
        local try = (tries[k] or 0) + 1
        if can_retry(err) and try <= retries_for(spec[1], spec[2], spec[3]) then
          tries[k] = try
          pending[core.sleep(backoff(try))], waiting = { k }, waiting + 1
        else
          errors[k] = err
        end
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
-- Logging and time

--- Write to the error log: log(message) at info, or log(level, message) with level one of
--- "error", "warn", "info", "debug". The current request's id is added.
function M.log(level, msg)
  if msg == nil then level, msg = "info", level end
  core.log(level, tostring(msg))
end

--- Seconds since an arbitrary point, with millisecond resolution (the loop's clock).
M.now = core.now

--- This worker's counters: { handlers (running or waiting, this one included), upstream_active
--- (transfers in flight), upstream_connections_opened (since start) }.
M.stats = core.stats

---------------------------------------------------------------------------------------------------
-- The server's side: dispatching requests, loading route scripts

local headers_mt, request_mt = request.headers_mt, request.mt

-- Route one request with router r, in the request's own coroutine.
local function route(r, req)
  local handler, params, pattern = r:match(req.method, req.path)
  if not handler then
    local allow = pattern
    if allow then return 405, { error = "method not allowed", request_id = req.id }, { Allow = allow } end
    return 404, { error = "not found", request_id = req.id }
  end
  req.params, req.route = params, pattern
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
  return finish(req, status, body, headers)
end

-- The server's entry point for each request, with the request's parts as arguments: a table
-- constructor with constant keys is much cheaper than filling the table from C.
local function new_request(method, path, raw_query, target, body, id, remote_addr, http_version, headers)
  return setmetatable({
    method = method, path = path, raw_query = raw_query, target = target, body = body, id = id,
    remote_addr = remote_addr, http_version = http_version, headers = setmetatable(headers, headers_mt),
  }, request_mt)
end

local function serve(...)
  return dispatch_with(app.router, new_request(...), app.befores, app.afters)
end
M._serve = serve

-- An entry point like serve for another router (stub upstreams in specs).
function M._server_for(r)
  return function(...) return dispatch_with(r, new_request(...)) end
end

-- Dispatch a request table made by luagate.request.new (specs).
function M._dispatch(req)
  return dispatch_with(app.router, req, app.befores, app.afters)
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
function M._reset(upstreams, creds)
  app.router = router.new()
  app.upstreams = upstreams or {}
  app.credentials = creds or {}
  app.befores, app.afters = {}, {}
  app.mock = nil
end

-- Load every *.lua in dir, in name order. Errors name the script.
function M._load_routes(dir)
  local names, err = core.list_dir(dir)
  if not names then error("routes: " .. err, 0) end
  local loaded = 0
  for _, name in ipairs(names) do
    if name:match("%.lua$") then
      local path = dir .. "/" .. name
      local chunk, lerr = loadfile(path)
      if not chunk then error(lerr, 0) end
      local ok, rerr = xpcall(chunk, debug.traceback)
      if not ok then error(("%s: %s"):format(path, rerr), 0) end
      loaded = loaded + 1
    end
  end
  return loaded
end

-- Start-up: take the checked config, load the route scripts, return the dispatcher.
function M._boot(conf)
  M._reset(conf.upstreams, conf.credentials)
  app.config = conf
  package.path = conf.routes .. "/?.lua;" .. package.path
  local n = M._load_routes(conf.routes)
  if n == 0 then core.log("warn", "no route scripts (*.lua) in " .. conf.routes) end
  return serve
end

return M
