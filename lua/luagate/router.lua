-- Routes by method and path. Static paths are one table look-up; paths with parameters
-- ("/users/:id", a final "*rest" for the remainder) are tried in the order they were added.
local M = {}
local Router = {}
Router.__index = Router

local EMPTY = setmetatable({}, { __newindex = function() error("params is read-only", 2) end })

function M.new()
  return setmetatable({ exact = {}, patterns = {} }, Router)
end

local function allow_list(methods)
  local names = {}
  for m in pairs(methods) do names[#names + 1] = m end
  if methods.GET and not methods.HEAD then names[#names + 1] = "HEAD" end
  table.sort(names)
  return table.concat(names, ", ")
end

-- "/users/:id/*rest" -> "^/users/([^/]+)/(.*)$", { "id", "rest" }; nil for a static path.
local function compile(path)
  if not path:find("[:*]") then return nil end
  local names, parts = {}, {}
  local segments = {}
  for seg in path:gmatch("/([^/]*)") do segments[#segments + 1] = seg end
  for i, seg in ipairs(segments) do
    local kind, name = seg:sub(1, 1), seg:sub(2)
    if kind == ":" and name:match("^[%a_][%w_]*$") then
      names[#names + 1] = name
      parts[#parts + 1] = "/([^/]+)"
    elseif kind == "*" and name:match("^[%a_][%w_]*$") and i == #segments then
      names[#names + 1] = name
      parts[#parts + 1] = "/(.*)"
    elseif seg:find("[:*]") then
      error(("route %q: a parameter is ':name' for one segment or '*name' for the rest, at the end"):format(path), 3)
    else
      parts[#parts + 1] = "/" .. seg:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0")
    end
  end
  return "^" .. table.concat(parts) .. "$", names
end

-- A second handler for the same method and path (or the same pattern: "/users/:id" and
-- "/users/:name") is a mistake that would silently win or lose: refused, naming both places, as
-- nginx refuses a duplicate location. where: "script:line" of this registration.
local function check_new(entry, method, path, where)
  local old = entry.methods[method]
  if old then
    error(("route %s %s is registered twice: at %s and at %s"):format(method, path, entry.where[method] or "?",
                                                                      where or "?"), 0)
  end
end

-- rid: the route's id for metrics and the log (core.route_id), or nil.
function Router:add(method, path, handler, opts, where, rid)
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    error(("route path must start with '/', got %s"):format(tostring(path)), 3)
  end
  if type(handler) ~= "function" and not (type(handler) == "table" and getmetatable(handler) and getmetatable(handler).__call) then
    error(("route %s %s: the handler must be a function"):format(method, path), 3)
  end
  local pattern, names = compile(path)
  local entry
  if pattern then
    for _, r in ipairs(self.patterns) do
      if r.path == path then entry = r end
      if r.pattern == pattern then check_new(r, method, path, where) end
    end
    if not entry then
      entry = { path = path, pattern = pattern, names = names, methods = {}, where = {} }
      self.patterns[#self.patterns + 1] = entry
    end
  else
    entry = self.exact[path]
    if not entry then
      entry = { methods = {}, where = {} }
      self.exact[path] = entry
    end
    check_new(entry, method, path, where)
  end
  entry.methods[method] = handler
  entry.rid = rid or 0
  entry.opts = entry.opts or {}
  entry.opts[method] = opts
  entry.where[method] = where
  entry.allow = allow_list(entry.methods)
end

local function pick(entry, method)
  local h = entry.methods[method]
  if not h and method == "HEAD" then h = entry.methods.GET end
  return h
end

-- handler, params, pattern, opts, rid | nil, nil, allow (the path exists for other methods) | nil
-- (no such path). pattern is the path the route was registered with ("/users/:id"); opts its
-- options; rid its id for metrics.
function Router:match(method, path)
  local e = self.exact[path]
  if e then
    local h = pick(e, method)
    if h then return h, EMPTY, path, e.opts[method], e.rid end
    return nil, nil, e.allow
  end
  local allow
  for i = 1, #self.patterns do
    local r = self.patterns[i]
    local caps = { path:match(r.pattern) }
    if caps[1] then
      local h = pick(r, method)
      if h then
        local params = {}
        for k, name in ipairs(r.names) do params[name] = caps[k] end
        return h, params, r.path, r.opts[method], r.rid
      end
      allow = allow or r.allow
    end
  end
  return nil, nil, allow
end

return M
