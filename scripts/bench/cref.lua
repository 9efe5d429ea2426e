-- scripts/bench/cref.lua: quan's client against a hand-written C client
-- doing the same work (scripts/bench/cref/client.c, built as build/cref),
-- in the same run, against the same loopback server (issue #18). How the
-- reference works and how to read the figures: scripts/bench/README.md.
--
--   build/quan scripts/bench/cref.lua [N [ROUNDS]]
--       N requests each way per round and client (QUAN_BENCH_N, default
--       1000), ROUNDS rounds (default 5). QUAN_BENCH_CG_N (default 100):
--       requests each way under callgrind; QUAN_BENCH_CALLGRIND=0 skips it.
--
-- Each round runs each client once, one after the other (which one first
-- rotates): quan's client, the floor (the same script with --floor 1: the
-- pieces the client is made of, called without it) and the C client. Each
-- run is a fresh process that warms up (1 request, then 128 with 16
-- in flight, then bursts of 16 until 16 connections are open), then sends N requests sequentially and N with 16 in flight,
-- printing the CPU time of each phase (getrusage of its own process; the
-- server is another process) and its peak RSS. The CPU figures are medians of the
-- rounds; the ratios are quan's median (and the floor's) over C's.
package.path = "./?.lua;" .. package.path
local qos = require "quan.os"
local setup = require "scripts.bench.cref.setup"

local args = arg or {}
local N = math.tointeger(tonumber(args[1] or os.getenv("QUAN_BENCH_N") or 1000))
local ROUNDS = math.tointeger(tonumber(args[2] or 5))
local CG_N = math.tointeger(tonumber(os.getenv("QUAN_BENCH_CG_N") or 100))
local STARTS = 11 -- start-up runs of each client
-- requests at 16 in flight before the measured ones (after 1 sequential;
-- the clients add bursts of 16 until 16 connections are open)
local WARM_UP = 128
if not (N and N > 0 and ROUNDS and ROUNDS > 0 and CG_N and CG_N > 0) then
  io.stderr:write("usage: quan scripts/bench/cref.lua [N [ROUNDS]] (positive integers)\n")
  os.exit(2)
end

local SIDES = { "quan", "c" }
local ROUND_SIDES = { "quan", "floor", "c" } -- the floor's start-up is quan's: not measured apart

local median, spread = setup.median, setup.spread

-- have(prog) -> true when prog is on PATH
local function have(prog)
  local p = io.popen("command -v " .. prog .. " 2>/dev/null")
  local found = p:read("l")
  p:close()
  return found ~= nil and found ~= ""
end

-- callgrind(side, command, marker, extra) -> profile parts: the client run
-- under callgrind with the driver's arguments and extra, its profile cut
-- at marker (the function each client calls at the end of a phase): part 1
-- start-up and warm-up, 2 the sequential requests, 3 those at 16 in flight,
-- the last one the exit; parts.total sums them all; and the client's
-- printed values
local function callgrind(side, command, marker, common, extra)
  local dir = assert(qos.mkdtemp("/tmp/quan-cref-cg."))
  local argv = setup.join({ "valgrind", "--tool=callgrind", "--dump-before=" .. marker,
    "--callgrind-out-file=" .. dir .. "/callgrind.out.%p" }, command, common,
    { "--prefix", "cg" .. side .. os.date("!%H%M%S") .. "x" }, extra)
  local values, err = setup.run(argv, dir)
  local parts = { total = 0 }
  local p = io.popen("ls " .. dir)
  for f in p:lines() do
    local k = f:match("^callgrind%.out%.%d+%.?(%d*)$")
    if k then
      local fh = io.open(dir .. "/" .. f)
      local n = tonumber(fh:read("a"):match("\ntotals: (%d+)"))
      fh:close()
      parts[tonumber(k) or 0] = n
      parts.total = parts.total + (n or 0)
    end
  end
  p:close()
  if not values or parts.total == 0 then
    error(("cref: callgrind of the %s client gave no profile in %s: %s"):format(side, dir, tostring(err)), 0)
  end
  os.execute("rm -rf " .. dir)
  return parts, values
end

local options, server_name, stop = setup.server()
local ok, err = pcall(function()
  local commands = setup.binaries()
  commands.floor = setup.join(commands.quan, { "--floor", "1" })
  local stamp = os.date("!%H%M%S")
  local common = setup.argv(options) -- each run adds its own --prefix
  local runs = 0
  -- the connections each warmed-up run had open after its warm-up and at
  -- its end: fewest and most over the runs
  local conns = { quan = { warm = math.huge, final = 0 }, floor = { warm = math.huge, final = 0 },
    c = { warm = math.huge, final = 0 } }
  local function count_connections(side, values)
    if values.warm_up_connections then
      local c = conns[side]
      c.warm = math.min(c.warm, values.warm_up_connections)
      c.final = math.max(c.final, values.final_connections)
    end
  end
  -- client(side, extra) -> values, wall seconds; raises when the client failed
  local function client(side, extra)
    runs = runs + 1
    local argv = setup.join(commands[side], common,
      { "--prefix", ("b%s%s%dx"):format(stamp, side:sub(1, 1), runs) }, extra or {})
    local values, wall = setup.run(argv)
    if not values then error("cref: " .. wall, 0) end
    count_connections(side, values)
    return values, wall
  end

  -- start-up: a process that starts, loads the key and the certificates,
  -- builds its client and exits; and one that sends one request (a new
  -- TLS connection), verifies the answer and exits. Spawn to exit, wall.
  local startup, first = { quan = {}, c = {} }, { quan = {}, c = {} }
  local ready = { quan = {}, c = {} }
  for i = 1, STARTS do
    for k = 0, 1 do
      local side = SIDES[(i + k) % 2 + 1]
      local v, w = client(side)
      table.insert(startup[side], w)
      table.insert(ready[side], v.ready_cpu_s)
      local _, w1 = client(side, { "--sequential", "1" })
      table.insert(first[side], w1)
    end
  end

  -- rounds
  local validated = true
  local cpu = { seq = { quan = {}, floor = {}, c = {} }, par = { quan = {}, floor = {}, c = {} } }
  local rss = { seq = { quan = {}, floor = {}, c = {} }, par = { quan = {}, floor = {}, c = {} } }
  for r = 1, ROUNDS do
    for k = 0, #ROUND_SIDES - 1 do
      local side = ROUND_SIDES[(r + k) % #ROUND_SIDES + 1]
      local v = client(side, { "--warm-up", tostring(WARM_UP), "--sequential", tostring(N), "--parallel", tostring(N) })
      if side == "quan" then validated = validated and v.validated == 1 end
      table.insert(cpu.seq[side], v.sequential_cpu_s / N)
      table.insert(cpu.par[side], v.parallel_cpu_s / N)
      table.insert(rss.seq[side], v.sequential_maxrss_kib)
      table.insert(rss.par[side], v.parallel_maxrss_kib)
    end
  end

  print(("cref.server: %s"):format(server_name))
  print(("cref.requests: %d rounds, each a fresh process per client: %d+ warm-up, %d sequential, %d at 16 in flight"):format(
    ROUNDS, WARM_UP + 1, N, N))
  print(("cref.quan_validation: %s"):format(validated and "on (the client's default; the floor's too)" or "off in some run"))
  local function cpu_lines(name, what)
    local q, c = median(cpu[what].quan), median(cpu[what].c)
    local qlo, qhi = spread(cpu[what].quan)
    local clo, chi = spread(cpu[what].c)
    print(("cref.%s_cpu_quan: %.3f ms/request (rounds %.3f-%.3f)"):format(name, q * 1e3, qlo * 1e3, qhi * 1e3))
    print(("cref.%s_cpu_c: %.3f ms/request (rounds %.3f-%.3f)"):format(name, c * 1e3, clo * 1e3, chi * 1e3))
    print(("cref.%s_cpu_ratio: %.2f"):format(name, q / c))
    local f = median(cpu[what].floor)
    local flo, fhi = spread(cpu[what].floor)
    print(("cref.%s_cpu_floor: %.3f ms/request (rounds %.3f-%.3f)"):format(name, f * 1e3, flo * 1e3, fhi * 1e3))
    print(("cref.%s_cpu_floor_ratio: %.2f  (the floor over C: quan's pieces without its client)"):format(name, f / c))
  end
  cpu_lines("seq", "seq")
  cpu_lines("par16", "par")

  if os.getenv("QUAN_BENCH_CALLGRIND") == "0" then
    print("cref.cg: skipped (QUAN_BENCH_CALLGRIND=0)")
  elseif not have("valgrind") then
    print("cref.cg: skipped (no valgrind)")
  else
    local MARKER = { quan = "os_getppid", floor = "os_getppid", c = "phase_marker" }
    local per, boot = {}, {}
    for _, side in ipairs(ROUND_SIDES) do
      local parts, values = callgrind(side, commands[side], MARKER[side], common,
        { "--warm-up", tostring(WARM_UP), "--sequential", tostring(CG_N), "--parallel", tostring(CG_N) })
      count_connections(side, values)
      if not (parts[2] and parts[3]) then error("cref: callgrind of the " .. side .. " client: no phase parts", 0) end
      per[side] = { seq = parts[2] / CG_N, par = parts[3] / CG_N }
      if side ~= "floor" then boot[side] = callgrind(side, commands[side], MARKER[side], common, {}).total end
    end
    print(("cref.cg_requests: %d sequential + %d at 16 in flight, after the warm-up"):format(CG_N, CG_N))
    for _, what in ipairs { { "seq", "seq" }, { "par16", "par" } } do
      local q, c = per.quan[what[2]], per.c[what[2]]
      print(("cref.cg_%s_quan: %.0f instructions/request"):format(what[1], q))
      print(("cref.cg_%s_c: %.0f instructions/request"):format(what[1], c))
      print(("cref.cg_%s_ratio: %.3f"):format(what[1], q / c))
      print(("cref.cg_%s_difference: %.0f instructions/request"):format(what[1], q - c))
      print(("cref.cg_%s_floor: %.0f instructions/request (%.3f of C's)"):format(what[1], per.floor[what[2]],
        per.floor[what[2]] / c))
    end
    print(("cref.cg_startup_quan: %.0f instructions"):format(boot.quan))
    print(("cref.cg_startup_c: %.0f instructions"):format(boot.c))
    print(("cref.cg_startup_ratio: %.2f  (start, load, build the client, exit)"):format(boot.quan / boot.c))
  end

  -- a warmed-up run with fewer than 16 connections (or more at its end)
  -- paid TLS handshakes inside its measured phases
  local function connection_line(side)
    local c = conns[side]
    return ("%s %d after the warm-up, %d at the end"):format(side == "c" and "C" or side, c.warm, c.final)
  end
  print(("cref.connections: %s; %s; %s  (fewest, most over the runs; 16 wanted)"):format(
    connection_line("quan"), connection_line("floor"), connection_line("c")))

  local function time_lines(name, list, what)
    local q, c = median(list.quan), median(list.c)
    print(("cref.%s_quan: %.1f ms"):format(name, q * 1e3))
    print(("cref.%s_c: %.1f ms"):format(name, c * 1e3))
    print(("cref.%s_ratio: %.2f  (%s; median of %d)"):format(name, q / c, what, STARTS))
  end
  time_lines("startup", startup, "start, load key and certificates, build the client, exit")
  time_lines("startup_cpu", ready, "CPU time of the start-up process when ready to send, in the process")
  time_lines("first_answer", first, "start to one verified answer on a new connection, exit")

  local function rss_lines(name, list, what)
    local q, c = median(list.quan), median(list.c)
    print(("cref.%s_quan: %.1f MB"):format(name, q / 1024))
    print(("cref.%s_c: %.1f MB"):format(name, c / 1024))
    print(("cref.%s_ratio: %.2f  (%s)"):format(name, q / c, what))
  end
  rss_lines("rss", rss.seq, ("peak after %d+ warm-up + %d sequential requests"):format(WARM_UP + 1, N))
  rss_lines("rss_par16", rss.par, ("peak after a further %d at 16 in flight"):format(N))
end)
stop()
if not ok then error(err, 0) end
