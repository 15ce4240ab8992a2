-- What a handler's `req` is: a plain table made by the server (method, path, raw_query, target,
-- headers, body, id, remote_addr, http_version, params) with this metatable for what is computed
-- on first use (query) and a few methods.
local core = require "luagate.core"
local json = require "luagate.json"
local normalize_path = require("luagate.path").normalize

local M = {}

local char, tonumber, find, gsub = string.char, tonumber, string.find, string.gsub

local function hex_char(h) return char(tonumber(h, 16)) end

-- Query-string unescape: "+" is a space, %XX a byte. Most values need neither.
local function unescape(s)
  if not find(s, "[%%+]") then return s end
  return (gsub(gsub(s, "+", " "), "%%(%x%x)", hex_char))
end
M.unescape = unescape

function M.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- "a=1&b=2&a=3" -> { a = { "1", "3" }, b = "2" }: a repeated key keeps every value, in order.
-- In C: most requests that read req.query would otherwise spend more here than in the rest of
-- their Lua.
local parse_query = core.parse_query
function M.decode_query(raw)
  if not raw or raw == "" then return {} end
  return parse_query(raw)
end

function M.encode_query(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "table" then
      for _, x in ipairs(v) do parts[#parts + 1] = M.escape(k) .. "=" .. M.escape(x) end
    else
      parts[#parts + 1] = M.escape(k) .. "=" .. M.escape(v)
    end
  end
  return table.concat(parts, "&")
end

-- Headers: stored with lower-case names; any spelling finds them.
M.headers_mt = {
  __index = function(t, k)
    if type(k) ~= "string" then return nil end
    return rawget(t, k:lower())
  end,
}

local methods = {}

-- The body parsed as JSON: value | nil, err
function methods.json(req)
  return json.decode(req.body)
end

-- The next piece of the body: chunk | nil at the end | nil, err. On a route with
-- { body = "stream" } the pieces come as the client sends them; elsewhere the whole body, once.
function methods.read(req)
  if rawget(req, "_streamed") then
    core.body_read()
    local _, chunk, err = coroutine.yield(core.WAIT)
    return chunk, err
  end
  if rawget(req, "_read") then return nil end
  rawset(req, "_read", true)
  local b = req.body
  return b ~= "" and b or nil
end

-- What a request computes on first use: its query, and (for one the server made) its id and
-- headers, which most handlers never read.
local lazy = {
  query = function(req) return M.decode_query(rawget(req, "raw_query")) end,
  id = function() return core.request_id() end,
  headers = function() return setmetatable(core.request_headers() or {}, M.headers_mt) end,
}

M.mt = {
  __index = function(req, k)
    local make = lazy[k]
    if make then
      local v = make(req)
      rawset(req, k, v)
      return v
    end
    return methods[k]
  end,
}

-- Make a request table like the server's from a few fields (for specs and internal calls): its
-- path decoded and normalised as the server does, or nil, reason where the server answers 400.
function M.new(method, target, fields)
  fields = fields or {}
  local raw_path, raw_query = target:match("^([^?]*)%??(.*)$")
  local path, err = normalize_path(raw_path)
  if not path then return nil, err end
  local headers = setmetatable({}, M.headers_mt)
  for k, v in pairs(fields.headers or {}) do headers[k:lower()] = v end
  local req = {
    method = method, path = path, raw_query = raw_query, target = target,
    headers = headers, body = fields.body or "", id = fields.id or "spec-request",
    remote_addr = fields.remote_addr or "127.0.0.1:0", http_version = "1.1",
  }
  if type(req.body) == "table" then
    req.body = json.encode(req.body)
    headers["content-type"] = headers["content-type"] or "application/json"
  end
  return setmetatable(req, M.mt)
end

return M
