-- What a handler's `req` is: a plain table made by the server (method, path, raw_query, target,
-- headers, body, id, remote_addr, http_version, params) with this metatable for what is computed
-- on first use (query) and a few methods.
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
function M.decode_query(raw)
  local q = {}
  if not raw or raw == "" then return q end
  for pair in raw:gmatch("[^&]+") do
    local eq = find(pair, "=", 1, true)
    local k, v = pair, ""
    if eq then k, v = pair:sub(1, eq - 1), pair:sub(eq + 1) end
    k, v = unescape(k), unescape(v)
    local old = q[k]
    if old == nil then q[k] = v
    elseif type(old) == "table" then old[#old + 1] = v
    else q[k] = { old, v } end
  end
  return q
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

M.mt = {
  __index = function(req, k)
    if k == "query" then
      local q = M.decode_query(rawget(req, "raw_query"))
      rawset(req, "query", q)
      return q
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
