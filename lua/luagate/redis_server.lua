-- A throwaway redis-server for specs (testing.redis_server): Debian's redis-server package, started
-- daemonized on a free loopback port with a temp dir of its own, stopped by its PID.
local M = {}

local function shell(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true
end

local function output_of(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("*a")
  f:close()
  return out
end

local function file_text(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

--- Start a throwaway redis-server (Debian's redis-server package) on a free loopback port, with a
--- temp dir of its own and nothing saved to disk. Returns { port, url, pid, dir, stop(), kill(),
--- start() }: stop() ends it with SIGTERM, kill() with SIGKILL (a crash), start() brings it back on
--- the same port. DEBUG commands are allowed (DEBUG SLEEP makes a slow server). Raises when it
--- cannot start.
function M.start()
  local dir = output_of("mktemp -d /tmp/luagate-redis.XXXXXX"):gsub("%s+$", "")
  local major = tonumber(output_of("redis-server --version 2>/dev/null"):match("v=(%d+)"))
  assert(major, "redis-server not found: apt-get install redis-server (scripts/deps test does)")
  local srv = { dir = dir }
  local function run(port)
    os.remove(dir .. "/redis.pid")
    os.remove(dir .. "/redis.log")
    shell(("redis-server --bind 127.0.0.1 --port %d --save '' --appendonly no --dir %s --daemonize yes"
           .. " --pidfile %s/redis.pid --logfile %s/redis.log%s"):format(port, dir, dir, dir,
           major >= 7 and " --enable-debug-command local" or ""))
    for _ = 1, 250 do -- 5 s
      local log = file_text(dir .. "/redis.log") or ""
      local pid = tonumber(file_text(dir .. "/redis.pid") or "")
      if log:find("Ready to accept connections", 1, true) and pid then return pid end
      if log:find("Could not create server TCP listening socket", 1, true) then return nil, log end
      shell("sleep 0.02")
    end
    return nil, file_text(dir .. "/redis.log")
  end
  function srv.start()
    local pid, err = run(srv.port)
    assert(pid, "redis-server did not start again: " .. tostring(err))
    srv.pid = pid
  end
  -- A port from the time and this table's address (math.random's sequence is the spec's own).
  local seed = os.time() + tonumber(tostring(srv):match("0x(%x+)") or "0", 16)
  for i = 1, 10 do -- it may be taken: try another
    srv.port = 20000 + (seed + i * 7919) % 12000
    srv.pid = run(srv.port)
    if srv.pid then break end
  end
  assert(srv.pid, "redis-server did not start; its log: " .. tostring(file_text(dir .. "/redis.log")))
  srv.url = "redis://127.0.0.1:" .. srv.port
  -- Gone, or a zombie: daemonized, it is not our child, and whoever reaps it may take its time.
  local function alive(pid)
    local stat = file_text("/proc/" .. pid .. "/stat")
    return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
  end
  local function signal(name)
    if not srv.pid then return end
    shell(("kill -%s %d 2>/dev/null"):format(name, srv.pid))
    for _ = 1, 250 do
      if not alive(srv.pid) then break end
      shell("sleep 0.02")
    end
    srv.pid = nil
  end
  function srv.stop() signal("TERM") end
  function srv.kill() signal("KILL") end
  --- Stop it and remove its dir.
  function srv.close()
    signal("TERM")
    shell("rm -rf " .. dir)
  end
  return srv
end

return M
