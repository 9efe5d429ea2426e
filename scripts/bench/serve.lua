-- scripts/bench/serve.lua: the notification receiver's throughput, `quan
-- serve` verifying, storing (committed and flushed to disk) and answering
-- COUPON.USE notifications. Run as
--
--   build/quan scripts/bench/serve.lua [clients=8] [per-client=1000] [--workers N]
--
-- The load is closed-loop: `clients` curl processes, each on one kept-alive
-- connection, POST their share of the notifications one after the other
-- (the next when the answer is in), so the receiver sees up to `clients`
-- requests at once. Every notification is made beforehand (a distinct event
-- id, the coupon encrypted with the APIv3 key, the body signed with the
-- platform key under its PUB_KEY_ID, as the sandbox makes them), so no
-- signing by the load generator competes with the receiver; curl's
-- write-out gives each answer's time. The receiver runs with a handler (a
-- no-op script), so the main thread's calls and their writes happen
-- meanwhile, and its log (JSON lines) goes to a file.
--
-- It prints serve.rate (notifications answered 200 and stored per second
-- of wall time, from the first request to the last answer), the answer
-- times (p50, p99, max), the receiver's CPU per notification, and checks
-- the store afterwards: every event stored once, none lost.
local qos = require "quan.os"
local sqlite = require "quan.sqlite"
local qpath = require "quan.path"
local notification = require "tests.support.notification"

local positional, workers = {}, 8
do
  local i = 1
  while arg and arg[i] do
    local a = arg[i]
    if a == "--workers" then workers = tonumber(arg[i + 1]); i = i + 1
    else positional[#positional + 1] = a end
    i = i + 1
  end
end
local clients = tonumber(positional[1]) or 8
local per_client = tonumber(positional[2]) or 1000
local total = clients * per_client

local function q(s) return '"' .. s:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"' end

-- a file not there (yet) reads as ""
local function read(path) return qpath.read(path) or "" end

-- CPU seconds used by a process so far (utime + stime, all its threads)
local function cpu(pid)
  local s = read("/proc/" .. pid .. "/stat")
  local fields = {}
  for x in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

-- the keys and profile: a sandbox's state, made by starting one (it is not
-- needed afterwards: the receiver calls no API)
local work = assert(qos.mkdtemp("/tmp/quan-bench-serve-"))
local state = work .. "/sbx"
local h = assert(require("quan.sandbox").start { state = state })
h:stop()
local maker = notification.new(state)
local handler = work .. "/noop.lua"
do
  local f = assert(io.open(handler, "w"))
  f:write("return function(event) return true end\n")
  f:close()
end

-- the receiver
local ready = work .. "/serve.url"
local argv = { qos.exe(), "--config", state .. "/config.lua", "serve", "--store", work .. "/events.db", "--handler",
  handler, "--listen", "127.0.0.1:0", "--ready-file", ready, "--workers", tostring(workers) }
local pid = assert(qos.spawn(argv, { stdout = "/dev/null", stderr = work .. "/serve.log" }))
local deadline = qos.now() + 30
while read(ready) == "" do
  assert(qos.now() < deadline and not qos.wait(pid, true), "bench: the receiver did not start: " .. read(work .. "/serve.log"))
  qos.sleep(0.05)
end
local url = read(ready):gsub("%s+$", "") .. "/notify"

-- the notifications, one curl config per client
local t0 = qos.now()
local paths, ids = {}, {}
for c = 1, clients do
  paths[c] = ("%s/client%d"):format(work, c)
  local f = assert(io.open(paths[c], "w"))
  for i = 1, per_client do
    local note = maker:make { coupon_id = ("%011d"):format(c * 1000000 + i) }
    ids[#ids + 1] = note.id
    if i > 1 then f:write("next\n") end
    f:write("url = ", q(url), "\nrequest = POST\n")
    for _, line in ipairs(notification.lines(note.headers)) do f:write("header = ", q(line), "\n") end
    f:write("header = \"Content-Type: application/json\"\nheader = \"Expect:\"\n",
      "data-binary = ", q(note.body), "\n", "output = /dev/null\nsilent\n",
      "write-out = \"%{http_code} %{time_total}\\n\"\n")
  end
  f:close()
end
local prepared = qos.now() - t0

-- the load
local cpu0 = cpu(pid)
t0 = qos.now()
local pids = {}
for c = 1, clients do
  pids[c] = assert(qos.spawn({ "curl", "-K", paths[c] }, { stdout = ("%s/out%d"):format(work, c) }))
end
for c = 1, clients do qos.wait(pids[c]) end
local elapsed = qos.now() - t0
local cpu_used = cpu(pid) - cpu0

local ok, times, others = 0, {}, {}
for c = 1, clients do
  for line in io.lines(("%s/out%d"):format(work, c)) do
    local status, t = line:match("^(%d+) ([%d%.]+)$")
    if status == "200" then
      ok = ok + 1
      times[#times + 1] = tonumber(t)
    else
      others[status or line] = (others[status or line] or 0) + 1
    end
  end
end
table.sort(times)
local function pct(p) return times[math.max(1, math.ceil(#times * p))] or 0 end

-- let the handler catch up, then stop the receiver (SIGTERM: exit 0)
deadline = qos.now() + 60
local db = assert(sqlite.open(work .. "/events.db"))
local stored, handled
repeat
  qos.sleep(0.2)
  local r = db:first("SELECT count(*) AS n, count(handled) AS h, count(DISTINCT id) AS d FROM events")
  stored, handled = r.n, r.h
  assert(r.d == r.n)
until handled == stored or qos.now() > deadline
local missing = 0
for _, id in ipairs(ids) do
  if not db:first("SELECT 1 AS x FROM events WHERE id = ?", id) then missing = missing + 1 end
end
db:close()
qos.kill(pid, "TERM")
local how, code = qos.wait(pid)

print(("serve.rate: %.0f notifications/s (verified, stored and answered 200; wall clock, %d clients closed-loop)")
  :format(ok / elapsed, clients))
print(("serve.answer_p50: %.1f ms"):format(pct(0.50) * 1000))
print(("serve.answer_p99: %.1f ms (target < 100 ms)"):format(pct(0.99) * 1000))
print(("serve.answer_max: %.1f ms"):format((times[#times] or 0) * 1000))
print(("serve.cpu_per_notification: %.3f ms (the receiver's process, all threads)"):format(cpu_used / math.max(ok, 1) * 1000))
print(("serve.requests: %d answered 200 of %d in %.2f s, %d workers; prepared in %.1f s")
  :format(ok, total, elapsed, workers, prepared))
for status, n in pairs(others) do print(("serve.other_answers: %d with status %s"):format(n, status)) end
print(("serve.store: %d events stored, %d handled, %d of the %d sent missing, none twice; receiver ended: %s %s")
  :format(stored, handled, missing, total, how, tostring(code)))
if os.getenv("QUAN_BENCH_KEEP") then print("serve.work: " .. work) else os.execute("rm -rf '" .. work .. "'") end
