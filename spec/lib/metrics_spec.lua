-- gw.metrics in the runtime of `luagate busted`: no master and no shared region here, so the
-- values are the worker's own (the export through /metrics is tested in
-- tests/integration/test_observability.py); what is checked is the API and its rules.
local gw = require "luagate"
local testing = require "luagate.testing"

describe("gw.metrics", function()
  it("counts with counters, gauges and histograms", function()
    local c = gw.metrics.counter("spec_things_total", "Things")
    c:inc()
    c:inc(2.5)
    assert.equal(3.5, c:value())
    local g = gw.metrics.gauge("spec_level", "Level")
    g:set(10)
    g:dec(3)
    g:inc()
    assert.equal(8, g:value())
    local h = gw.metrics.histogram("spec_took_seconds", "Took", { buckets = { 0.1, 1 } })
    for _, x in ipairs { 0.05, 0.1, 0.5, 3 } do h:observe(x) end
    assert.same({ 2, 1, 1, 3.65 }, h:value()) -- per bucket (<= 0.1, <= 1, +Inf), then the sum
  end)

  it("gives the same metric for the same name, and refuses another kind", function()
    assert.equal(gw.metrics.counter("spec_same_total", "x"), gw.metrics.counter("spec_same_total", "x"))
    assert.has_error(function() gw.metrics.gauge("spec_same_total", "x") end,
      "gw.metrics: spec_same_total is declared already as a counter")
  end)

  it("keeps a counter from going down, and a counter from being set", function()
    local c = gw.metrics.counter("spec_up_total", "x")
    assert.has_error(function() c:inc(-1) end, "a counter only goes up: use a gauge")
    assert.has_error(function() c:set(1) end, "set: only a gauge is set")
  end)

  it("gives each set of label values its own series", function()
    local f = gw.metrics.counter("spec_lookups_total", "Lookups", { labels = { "result" } })
    local hit, miss = f:labels("hit"), f:labels("miss")
    hit:inc()
    hit:inc()
    miss:inc()
    assert.equal(hit, f:labels("hit"))
    assert.equal(2, hit:value())
    assert.equal(1, miss:value())
    assert.has_error(function() f:labels("a", "b") end, "spec_lookups_total: expected 1 label value(s), got 2")
  end)

  it("checks names, labels and buckets", function()
    assert.has_error(function() gw.metrics.counter("bad-name", "x") end)
    assert.has_error(function() gw.metrics.counter("spec_l_total", "x", { labels = { "le" } }) end)
    assert.has_error(function() gw.metrics.histogram("spec_b", "x", { buckets = { 1, 0.5 } }) end)
  end)

  it("is declared when a script loads, not in a handler", function()
    local ok, err = testing.run(function() return pcall(gw.metrics.counter, "spec_late_total", "x") end)
    assert.is_false(ok)
    assert.matches("declare metrics when a script loads, not in a handler", err)
    local f = gw.metrics.counter("spec_fam_total", "x", { labels = { "k" } })
    local made, lerr = testing.run(function() return pcall(f.labels, f, "new") end)
    assert.is_false(made)
    assert.matches("label values are declared when a script loads", lerr)
  end)
end)

describe("gw.trace", function()
  it("is nil outside a request served by a worker", function()
    assert.is_nil(gw.trace())
    assert.is_nil(testing.run(function() return gw.trace() end))
  end)
end)
