-- Added by bench/run to a copy of routes/ for its keep-alive check: this worker's counters.
local gw = require "luagate"
gw.get("/_bench/stats", function() return 200, gw.stats() end)
