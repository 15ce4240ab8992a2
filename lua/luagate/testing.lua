-- Helpers for busted specs of route scripts, run with `luagate busted` (busted's runner inside
-- luagate's runtime: real coroutines, the real event loop, real libcurl).
--
--   local testing = require "luagate.testing"
--   local stub = testing.stub { ["GET /users/1"] = { status = 200, body = { id = 1 } } }
--   testing.load("routes/users.lua", { upstreams = { api = { url = stub.url } } })
--   local res = testing.get("/v1/users/1")
--   assert.equal(200, res.status)
--   stub:close()
local core = require "luagate.core"
local config = require "luagate.config"
local gw = require "luagate"
local json = require "luagate.json"
local request = require "luagate.request"
local router = require "luagate.router"

local T = {}

--- Seconds a spec's request may take before it fails with "timed out".
T.timeout = 10
--- A URL where nothing listens: fetches to it are refused at once.
T.closed_url = "http://127.0.0.1:1"

--- Load route scripts into a fresh app. opts.upstreams, opts.credentials, opts.redis,
--- opts.max_response_body: as in gateway.conf.
function T.load(scripts, opts)
  if type(scripts) == "string" then scripts = { scripts } end
  opts = opts or {}
  local conf = assert(config.check({ upstreams = opts.upstreams or {}, credentials = opts.credentials,
                                     redis = opts.redis, max_response_body = opts.max_response_body }, "spec"))
  gw._reset(conf.upstreams, conf.credentials, conf.redis, conf.max_response_body)
  for _, path in ipairs(scripts) do
    local chunk = assert(loadfile(path))
    chunk()
  end
end

local Response = {}
Response.__index = Response
function Response:json() return json.decode(self.body) end

--- Send a request through the loaded routes, as the server would, and wait for the answer.
--- fields: headers, body (a table is sent as JSON), id, remote_addr.
--- Returns { status, body, headers, :json() }; a Lua error in the handler is raised here.
function T.request(method, target, fields)
  local req, bad = request.new(method, target, fields)
  if not req then -- the server answers such a target 400 before any route sees it
    local body = json.encode { error = "bad request", detail = bad }
    return setmetatable({ status = 400, body = body, headers = setmetatable({}, request.headers_mt) }, Response)
  end
  local ok, status, body, ctype, headers = core.run(T.timeout, req.id, gw._dispatch, req)
  if not ok then error(status, 2) end
  local h = setmetatable({}, request.headers_mt)
  for k, v in pairs(headers or {}) do h[k:lower()] = v end
  h["content-type"] = ctype
  return setmetatable({ status = status, body = body, headers = h }, Response)
end

function T.get(target, fields) return T.request("GET", target, fields) end
function T.post(target, fields) return T.request("POST", target, fields) end

--- Run fn(...) in a handler-like coroutine, so that it may fetch and sleep; returns its results.
function T.run(fn, ...)
  local r = { core.run(T.timeout, nil, fn, ...) }
  if not r[1] then error(r[2], 2) end
  return unpack(r, 2, table.maxn(r))
end

--- Start a stub upstream on loopback, in this process. routes: { ["METHOD /path"] = handler },
--- where handler is a function(req) like a route's, or a canned { status, body, headers }.
--- Returns { url, port, requests (every request received), :close() }.
function T.stub(routes)
  local r = router.new()
  local stub = { requests = {} }
  for key, handler in pairs(routes) do
    local method, path = key:match("^(%u+)%s+(/%S*)$")
    assert(method and not path:find("?", 1, true),
           "stub routes are keyed 'METHOD /path', without a query (it is in req.query), got " .. tostring(key))
    r:add(method, path, function(req)
      stub.requests[#stub.requests + 1] = req
      if type(handler) == "function" then return handler(req) end
      return handler.status or 200, handler.body, handler.headers
    end)
  end
  local id, port = core.listen("127.0.0.1", 0, gw._server_for(r))
  assert(id, port)
  stub.port, stub.url = port, "http://127.0.0.1:" .. port
  function stub.close() core.close_server(id) end
  return stub
end

--- Answer fetches with canned responses instead of the network (pure unit tests).
--- responses: { ["METHOD /path"] = response } for named upstreams, { ["METHOD url"] = ... } for
--- URLs, keyed without the query as stub routes are (a call's query is in call.query, decoded);
--- a response is { status, body, headers }, or a function(call) returning one (or nil, err).
--- Unknown calls fail like a refused connection. Calls are recorded in the returned list.
--- The handler gets what a real upstream answering the same would give (luagate makes it: lower-case
--- header names, a table body as JSON with its content type, content_type, :json()).
function T.mock_fetch(responses)
  for key in pairs(responses) do
    assert(type(key) == "string" and key:match("^%u+ %S+$") and not key:find("?", 1, true),
           "mock_fetch keys are 'METHOD /path' or 'METHOD url', without a query (it is in call.query), got "
           .. tostring(key))
  end
  local calls = {}
  gw._mock_fetch(function(call)
    calls[#calls + 1] = call
    local target = call.path or call.url
    local bare, query = target:match("^([^?]*)%??(.*)$")
    call.query = request.decode_query(query)
    local r = responses[call.method .. " " .. bare] or responses[call.method .. " " .. call.url:match("^[^?]*")]
    if type(r) == "function" then return r(call) end
    if r == nil then return nil, "connection refused: no canned response for " .. call.method .. " " .. call.url end
    return r
  end)
  return calls
end

function T.unmock_fetch() gw._mock_fetch(nil) end

--- Start a throwaway redis-server on a free loopback port (luagate/redis_server.lua).
T.redis_server = require("luagate.redis_server").start

--- This process's counters (gw.stats): handlers, upstream_active, upstream_connections_opened.
T.stats = core.stats

return T
