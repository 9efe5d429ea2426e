-- scripts/bench/cref/versus.lua: two or more quan binaries side by side
-- against the C client, in one run: how one version of quan is compared
-- with another (the CPU figures of single runs move by as much as a step
-- gains; alternated in one run, the machine's noise hits every side).
--
--   build/quan scripts/bench/cref/versus.lua QUAN [QUAN ...] [-- N ROUNDS]
--
-- Each QUAN is a quan binary; each runs this tree's client.lua (the client
-- as a user writes it, so an older binary's own modules are measured).
-- Each round runs the C client and each binary once, the order rotating,
-- as cref.lua's rounds do (N requests sequentially, N at 16 in flight,
-- after the warm-up; default N 1000, 9 rounds). Prints, for each binary,
-- the median CPU per request and its ratio over the C client's median.
package.path = "./?.lua;" .. package.path
local setup = require "scripts.bench.cref.setup"

local bins, N, ROUNDS = {}, 1000, 9
local i = 1
while arg[i] do
  if arg[i] == "--" then
    N, ROUNDS = math.tointeger(tonumber(arg[i + 1])), math.tointeger(tonumber(arg[i + 2]))
    break
  end
  bins[#bins + 1] = arg[i]
  i = i + 1
end
if #bins == 0 or not (N and N > 0 and ROUNDS and ROUNDS > 0) then
  io.stderr:write("usage: quan scripts/bench/cref/versus.lua QUAN [QUAN ...] [-- N ROUNDS]\n")
  os.exit(2)
end

local options, _, stop = setup.server()
local ok, err = pcall(function()
  local commands = setup.binaries()
  local sides = { { name = "C", argv = commands.c } }
  for _, bin in ipairs(bins) do sides[#sides + 1] = { name = bin, argv = { bin, commands.quan[2] } } end
  local common = setup.argv(options)
  local stamp = os.date("!%H%M%S")
  for _, side in ipairs(sides) do side.seq, side.par = {}, {} end
  for r = 1, ROUNDS do
    for k = 0, #sides - 1 do
      local side = sides[(r + k) % #sides + 1]
      local v, why = setup.run(setup.join(side.argv, common, { "--prefix", ("v%s%d%dx"):format(stamp, r, k),
        "--warm-up", "128", "--sequential", tostring(N), "--parallel", tostring(N) }))
      if not v then error("versus: " .. why, 0) end
      table.insert(side.seq, v.sequential_cpu_s / N)
      table.insert(side.par, v.parallel_cpu_s / N)
    end
  end
  local c = sides[1]
  print(("versus.requests: %d rounds of %d sequential and %d at 16 in flight, each side a fresh process"):format(
    ROUNDS, N, N))
  for _, side in ipairs(sides) do
    local seq, par = setup.median(side.seq), setup.median(side.par)
    print(("versus.%s: sequential %.3f ms (%.3f of C's), 16 in flight %.3f ms (%.3f of C's)"):format(side.name,
      seq * 1e3, seq / setup.median(c.seq), par * 1e3, par / setup.median(c.par)))
  end
end)
stop()
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
