-- gw.metrics: counters, gauges and histograms a route script declares when it loads, exported on
-- the master's /metrics with luagate's own, merged across workers.
--
--   local hits = gw.metrics.counter("cache_hits_total", "Lookups answered from the cache")
--   local by = gw.metrics.counter("cache_lookups_total", "Lookups", { labels = { "result" } })
--   local hit, miss = by:labels("hit"), by:labels("miss")     -- label values: declared at load
--   local lat = gw.metrics.histogram("backend_seconds", "Backend time", { buckets = { 0.01, 0.1, 1 } })
--   ... in a handler: hits:inc(); hit:inc(); lat:observe(0.042)
--
-- Each series is a few doubles in this worker's slot of the memory the master shares (core.metric
-- gives their address): an update is an array store through LuaJIT's FFI, with no lock, no C call
-- and no allocation. Label values are declared up front, so a series set stays bounded.
local ffi = require "ffi"
local core = require "luagate.core"

local M = {}

-- Prometheus' default buckets, in seconds.
M.DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

local families = {} -- name -> what was declared, so that declaring again (specs reload scripts) gives the same

local double_ptr = ffi.typeof("double *")
local double_array = ffi.typeof("double[?]")

local Series = {}
Series.__index = Series

--- counter:inc([n]) (n >= 0, 1 by default); gauge:inc([n]) (any n)
function Series:inc(n)
  n = n or 1
  if self.kind == "counter" and n < 0 then error("a counter only goes up: use a gauge", 2) end
  local v = self.values
  v[0] = v[0] + n
end

--- gauge:dec([n])
function Series:dec(n)
  if self.kind ~= "gauge" then error("dec: only a gauge goes down", 2) end
  local v = self.values
  v[0] = v[0] - (n or 1)
end

--- gauge:set(x)
function Series:set(x)
  if self.kind ~= "gauge" then error("set: only a gauge is set", 2) end
  self.values[0] = x
end

--- histogram:observe(x): the bucket of x (a few compares), and the sum.
function Series:observe(x)
  local bounds, v = self.bounds, self.values
  local n, i = #bounds, 0
  while i < n and x > bounds[i + 1] do i = i + 1 end
  v[i] = v[i] + 1
  v[n + 1] = v[n + 1] + x
end

--- The value(s) as this worker counted them: a number, or { buckets..., sum } for a histogram.
function Series:value()
  if self.kind ~= "histogram" then return self.values[0] end
  local out = {}
  for i = 0, #self.bounds + 1 do out[i + 1] = self.values[i] end
  return out
end

local function label_string(names, values)
  local parts = {}
  for i, name in ipairs(names) do
    local v = tostring(values[i]):gsub("[\\\n\"]", { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' })
    parts[i] = ('%s="%s"'):format(name, v)
  end
  return table.concat(parts, ",")
end

local function new_series(family, values)
  local n = family.kind == "histogram" and #family.bounds + 2 or 1
  local ptr = core.metric(family.kind, family.name, family.help, label_string(family.label_names, values or {}),
                          family.kind == "histogram" and family.bounds or nil)
  local s = setmetatable({ kind = family.kind, name = family.name, bounds = family.bounds }, Series)
  if ptr then
    s.values = ffi.cast(double_ptr, ptr)
  else
    s.values = double_array(n) -- no metrics slot here (specs, metrics_listen = "off"): counted locally
  end
  return s
end

local Family = {}
Family.__index = Family

--- family:labels(value, ...) -> the series of those label values. New values only while scripts
--- load (at a script's top level): in a handler, only the values declared then.
function Family:labels(...)
  local values = { ... }
  if #values ~= #self.label_names then
    error(("%s: expected %d label value(s), got %d"):format(self.name, #self.label_names, #values), 2)
  end
  local key = table.concat(values, "\0")
  local s = self.children[key]
  if not s then
    local ok, made = pcall(new_series, self, values)
    if not ok then
      error(("%s: label values are declared when a script loads (%s)"):format(self.name, made), 2)
    end
    s = made
    self.children[key] = s
  end
  return s
end

local function check_opts(name, kind, opts)
  local labels, buckets = opts.labels or {}, opts.buckets
  for i, l in ipairs(labels) do
    if type(l) ~= "string" or not l:match("^[%a_][%w_]*$") or l:sub(1, 2) == "__" or l == "le" then
      error(("gw.metrics: %s: label %d: a name such as \"result\""):format(name, i), 4)
    end
  end
  if kind == "histogram" then
    buckets = buckets or M.DEFAULT_BUCKETS
    for i, b in ipairs(buckets) do
      if type(b) ~= "number" or (i > 1 and b <= buckets[i - 1]) then
        error(("gw.metrics: %s: buckets are increasing numbers"):format(name), 4)
      end
    end
  end
  return labels, buckets
end

local function declare(kind, name, help, opts)
  if type(name) ~= "string" then error("gw.metrics: the name is a string", 3) end
  opts = opts or {}
  local known = families[name]
  if known then
    if known.kind ~= kind then error(("gw.metrics: %s is declared already as a %s"):format(name, known.kind), 3) end
    return known
  end
  local label_names, bounds = check_opts(name, kind, opts)
  local f = setmetatable({ kind = kind, name = name, help = help or "", label_names = label_names, bounds = bounds,
                           children = {} }, Family)
  -- Without labels the metric is its one series; with labels, a family that gives them.
  local made = #label_names == 0 and new_series(f) or f
  families[name] = made
  return made
end

--- gw.metrics.counter(name, help [, { labels = { "name", ... } }]) -> a series (no labels), or a
--- family whose :labels(values...) gives them
function M.counter(name, help, opts) return declare("counter", name, help, opts) end
--- gw.metrics.gauge(name, help [, { labels = ... }]): summed over the workers
function M.gauge(name, help, opts) return declare("gauge", name, help, opts) end
--- gw.metrics.histogram(name, help [, { labels = ..., buckets = { upper bounds } }])
function M.histogram(name, help, opts) return declare("histogram", name, help, opts) end

return M
