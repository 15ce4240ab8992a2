-- The middleware luagate ships: CORS, and API-key or basic auth checked against the config's
-- `credentials` (or a table given in the script). Use them globally with gw.use(...) or per route:
--   gw.get("/admin", gw.auth.basic { realm = "admin" }, handler)
local bit = require "bit"

local M = { auth = {} }

-- Compare secrets in time that does not depend on where they differ.
local function same_secret(a, b)
  if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = bit.bor(diff, bit.bxor(a:byte(i), b:byte(i))) end
  return diff == 0
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64_index = {}
for i = 1, #B64 do b64_index[B64:byte(i)] = i - 1 end

--- Decode standard base64; nil for malformed input.
function M.base64_decode(s)
  s = s:gsub("=+$", "")
  if s:find("[^%w%+/]") then return nil end
  local out, acc, bits = {}, 0, 0
  for i = 1, #s do
    acc = bit.bor(bit.lshift(acc, 6), b64_index[s:byte(i)])
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char(bit.band(bit.rshift(acc, bits), 0xff))
    end
  end
  return table.concat(out)
end

local function unauthorised(message, challenge)
  return 401, { error = message }, { ["WWW-Authenticate"] = challenge }
end

--- API keys: the key comes in a header (X-API-Key unless opts.header) or, when opts.query names
--- one, a query parameter. Keys are opts.keys or the config's credentials.api_keys, both
--- { consumer_name = "key" }. On success req.consumer is the name; else 401.
function M.auth.api_key(opts, credentials)
  opts = opts or {}
  local header = (opts.header or "X-API-Key"):lower()
  local param = opts.query
  return {
    before = function(req)
      local given = req.headers[header] or (param and req.query[param])
      if type(given) ~= "string" then return unauthorised("missing API key", "ApiKey") end
      for name, key in pairs(opts.keys or credentials().api_keys or {}) do
        if same_secret(given, key) then
          req.consumer = name
          return
        end
      end
      return unauthorised("invalid API key", "ApiKey")
    end,
  }
end

--- Basic auth against opts.users or the config's credentials.basic, both { user = "password" }.
--- On success req.consumer is the user; else 401 with a challenge for opts.realm.
function M.auth.basic(opts, credentials)
  opts = opts or {}
  local challenge = ('Basic realm="%s"'):format(opts.realm or "luagate")
  return {
    before = function(req)
      local b64 = (req.headers.authorization or ""):match("^[Bb]asic%s+(%S+)%s*$")
      local decoded = b64 and M.base64_decode(b64)
      local user, password = (decoded or ""):match("^([^:]*):(.*)$")
      local expected = user and (opts.users or credentials().basic or {})[user]
      if not (expected and same_secret(password, expected)) then
        return unauthorised("authentication required", challenge)
      end
      req.consumer = user
    end,
  }
end

--- CORS. opts: origins (a list; "*" for any; default any), methods, headers (allowed request
--- headers; default: whatever the preflight asks), expose, credentials (boolean), max_age (s).
--- Answers preflight requests itself (204, or 403 for an origin not allowed) and adds
--- Access-Control-Allow-Origin to the answers for allowed origins.
function M.cors(opts)
  opts = opts or {}
  local any, allowed = false, {}
  for _, o in ipairs(opts.origins or { "*" }) do
    if o == "*" then any = true else allowed[o] = true end
  end
  local methods = table.concat(opts.methods or { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }, ", ")
  local allow_headers = opts.headers and table.concat(opts.headers, ", ")
  local expose = opts.expose and table.concat(opts.expose, ", ")
  local max_age = tostring(opts.max_age or 600)

  local function allow_origin(origin)
    if not origin or not (any or allowed[origin]) then return nil end
    if any and not opts.credentials then return "*" end
    return origin -- a specific origin: caches must key on it
  end

  local function decorate(headers, origin)
    headers["Access-Control-Allow-Origin"] = origin
    if origin ~= "*" then headers["Vary"] = "Origin" end
    if opts.credentials then headers["Access-Control-Allow-Credentials"] = "true" end
  end

  return {
    before = function(req)
      local origin = req.headers.origin
      if req.method ~= "OPTIONS" or not origin or not req.headers["access-control-request-method"] then return end
      local value = allow_origin(origin)
      if not value then return 403, { error = "origin not allowed" } end
      local h = {
        ["Access-Control-Allow-Methods"] = methods,
        ["Access-Control-Allow-Headers"] = allow_headers or req.headers["access-control-request-headers"],
        ["Access-Control-Max-Age"] = max_age,
      }
      decorate(h, value)
      return 204, nil, h
    end,
    after = function(req, res)
      local value = allow_origin(req.headers.origin)
      if not value then return end
      decorate(res.headers, value)
      if expose then res.headers["Access-Control-Expose-Headers"] = expose end
    end,
  }
end

return M
