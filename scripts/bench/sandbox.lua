-- scripts/bench/sandbox.lua: the sandbox's capacity on this machine against
-- the rate one client thread signs (RSA-2048, one sign per request), both
-- measured in this run. Run as
--
--   build/quan scripts/bench/sandbox.lua [clients] [requests-per-client] [--callgrind] [--no-connections]
--
-- The load is send-coupon POSTs (the heaviest endpoint: one verify, one write
-- transaction, one sign), signed beforehand and sent by curl processes on
-- kept-alive connections, so the load generator's signing never competes
-- with the sandbox. The figures that a shared, loaded machine does not
-- distort are CPU-based: the sandbox's answers per CPU-second of its own
-- process (utime + stime from /proc) times the cores available, against
-- signatures per CPU-second of one thread (best of several rounds). With
-- --callgrind it also runs the sandbox under valgrind's callgrind and prints
-- instructions per answered request and per sign (deterministic counts).
-- Then, unless --no-connections, the connection figures (on a fresh
-- sandbox): how many kept-alive TLS clients at once are all answered, and
-- how fast /sandbox/health answers while 1,000 slowloris connections are
-- open (tests/support/connections.py makes both loads, independent of quan;
-- curl times each health request, each on a new connection).
local crypto = require "quan.crypto"
local qos = require "quan.os"
local cjson = require "cjson"
local sandbox = require "quan.sandbox"
local sign = require "wechatpay.sign"

local positional, use_callgrind, use_connections = {}, false, true
for _, a in ipairs(arg or {}) do
  if a == "--callgrind" then use_callgrind = true
  elseif a == "--no-connections" then use_connections = false
  else positional[#positional + 1] = a end
end
local clients = tonumber(positional[1]) or 4
local per_client = tonumber(positional[2]) or 300
local P = "/v3/marketing/favor"

local function q(s) return '"' .. s:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"' end

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

local function cores()
  return tonumber(sh("nproc 2>/dev/null"):match("%d+")) or 1
end

-- CPU seconds used by a process so far (utime + stime, all its threads)
local function cpu(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  local fields = {}
  for x in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

local state = assert(qos.mkdtemp("/tmp/quan-bench-sbx-"))
local work = assert(qos.mkdtemp("/tmp/quan-bench-"))
local h = assert(sandbox.start {state = state})
local key = assert(crypto.private_key("file://" .. state .. "/merchant.key.pem"))

local function auth(method, target, body)
  local ts = tostring(math.floor(qos.time()))
  local nonce = crypto.nonce(32)
  local sig = key:sign(sign.message(method, target, ts, nonce, body))
  return sign.authorization(h.mchid, h.serial, ts, nonce, sig)
end

-- one request through curl, for setup
local function call(method, target, body)
  local f = io.open(work .. "/setup", "w")
  f:write("url = ", q(h.base_url .. target), "\ncacert = ", q(state .. "/ca.pem"), "\nrequest = ", method,
    "\nheader = ", q("Authorization: " .. auth(method, target, body or "")),
    "\nheader = \"Content-Type: application/json\"\nsilent\n")
  if body then f:write("data-binary = ", q(body), "\n") end
  f:close()
  return cjson.decode(sh("curl -K " .. work .. "/setup"))
end

-- a stock large enough for every request
local now = math.floor(qos.time())
local iso = require("quan.time").beijing
local stock = call("POST", P .. "/coupon-stocks", cjson.encode {
  stock_name = "bench", belong_merchant = h.mchid, available_begin_time = iso(now),
  available_end_time = iso(now + 86400), no_cash = false, stock_type = "NORMAL",
  stock_use_rule = {max_coupons = 10000000, max_amount = 20000000, max_coupons_per_user = 60,
    natural_person_limit = false, prevent_api_abuse = false},
  coupon_use_rule = {fixed_normal_coupon = {coupon_amount = 2, transaction_minimum = 3}, coupon_available_time = {}},
  out_request_no = "bench" .. now,
})
assert(stock and stock.stock_id, "bench: create stock failed: " .. cjson.encode(stock or {}))
call("POST", P .. "/stocks/" .. stock.stock_id .. "/start", cjson.encode {stock_creator_mchid = h.mchid})

-- presign(tag, base_url [, n, close]) -> paths of one curl config per client,
-- each with n (default per_client) pre-signed send-coupon requests on one
-- kept-alive connection, or each on a new connection when close is set
local function presign(tag, base_url, n, close)
  local paths = {}
  for c = 1, clients do
    paths[c] = ("%s/%s-client%d"):format(work, tag, c)
    local f = io.open(paths[c], "w")
    for i = 1, n or per_client do
      local target = ("%s/users/bench-%s-c%d-u%d/coupons"):format(P, tag, c, i)
      local body = cjson.encode {stock_id = stock.stock_id, out_request_no = ("b%d-%s-%d-%d"):format(now, tag, c, i),
        appid = h.appid, stock_creator_mchid = h.mchid}
      if i > 1 then f:write("next\n") end
      f:write("url = ", q(base_url .. target), "\ncacert = ", q(state .. "/ca.pem"), "\nrequest = POST\n",
        "header = ", q("Authorization: " .. auth("POST", target, body)), "\n",
        "header = \"Content-Type: application/json\"\n", "data-binary = ", q(body), "\n",
        close and "header = \"Connection: close\"\n" or "",
        "output = /dev/null\nsilent\nwrite-out = \"%{http_code}\\n\"\n")
    end
    f:close()
  end
  return paths
end

-- load(paths) -> answered with 200, elapsed seconds; counts other statuses
local function load(paths, tag)
  local pids = {}
  local t0 = qos.now()
  for c, path in ipairs(paths) do
    pids[c] = assert(qos.spawn({"curl", "-K", path}, {stdout = ("%s/%s-out%d"):format(work, tag, c)}))
  end
  for c = 1, #paths do qos.wait(pids[c]) end
  local elapsed = qos.now() - t0
  local ok = 0
  for c = 1, #paths do
    for line in io.lines(("%s/%s-out%d"):format(work, tag, c)) do
      if line == "200" then ok = ok + 1
      else io.stderr:write(("bench: an answer with status %s\n"):format(line)) end
    end
  end
  return ok, elapsed
end

-- the signing rate of one thread: best of several short rounds, by wall
-- clock and by this process's CPU time (it has one thread)
local msg = "POST\n" .. P .. "/users/o/coupons\n1700000000\n" .. string.rep("n", 32) .. "\n" .. string.rep("x", 160) .. "\n"
local best_wall, best_cpu = 0, 0
local function sign_rounds(rounds)
  for _ = 1, rounds do
    local n, t0, c0 = 0, qos.now(), qos.cputime()
    while qos.now() - t0 < 0.3 do
      key:sign(msg)
      n = n + 1
    end
    best_wall = math.max(best_wall, n / (qos.now() - t0))
    best_cpu = math.max(best_cpu, n / math.max(qos.cputime() - c0, 1e-9))
  end
end

local paths = presign("cpu", h.base_url)
local short_n = 25
local short_paths = presign("short", h.base_url, short_n, true)
sign_rounds(3)
local cpu0 = cpu(h.pid)
local ok, elapsed = load(paths, "cpu")
local cpu_used = cpu(h.pid) - cpu0
-- one request per connection: each answer also pays a TLS handshake and,
-- unless states are reused, a fresh handler state
cpu0 = cpu(h.pid)
local short_ok = load(short_paths, "short")
local short_cpu = (cpu(h.pid) - cpu0) / math.max(short_ok, 1)
sign_rounds(3) -- before and after the load: a passing burst of other work does not decide the figure
h:stop()

local ncores = cores()
local per_req = cpu_used / math.max(ok, 1)
local capacity = ncores / per_req
print(("sandbox.cpu_per_request: %.3f ms"):format(per_req * 1000))
print(("client.cpu_per_sign: %.3f ms"):format(1000 / best_cpu))
print(("sandbox.capacity: %.0f req/s (%d cores / CPU per request)"):format(capacity, ncores))
print(("client.sign_per_cpu_sec: %.0f sign/s"):format(best_cpu))
print(("client.sign_per_sec: %.0f sign/s (wall, best of 6 rounds)"):format(best_wall))
print(("sandbox.ratio: %.2f (capacity / sign_per_cpu_sec; target >= 1.0)"):format(capacity / best_cpu))
print(("sandbox.cpu_ratio: %.2f (CPU per sign / CPU per request, one core each)"):format((1 / best_cpu) / per_req))
print(("sandbox.cpu_per_request_new_connection: %.3f ms (%d answers, one connection each)"):format(short_cpu * 1000,
  short_ok))
print(("sandbox.rps: %.0f req/s (wall, curl load generators on the same cores)"):format(ok / elapsed))
print(("sandbox.requests: %d ok of %d, %d clients, %.2f s, %.2f CPU-s"):format(ok, clients * per_client, clients,
  elapsed, cpu_used))

-- ---- callgrind: instructions, which no other process on the machine changes

-- totals(file) -> instructions (Ir) recorded in a callgrind output file
local function totals(file)
  local n = 0
  for line in io.lines(file) do
    local t = line:match("^totals:%s*(%d+)") or line:match("^summary:%s*(%d+)")
    if t then n = math.max(n, tonumber(t)) end
  end
  return n
end

local function valgrind_sign(n)
  local script = work .. "/sign.lua"
  local f = io.open(script, "w")
  f:write(([[
local key = assert(require("quan.crypto").private_key("file://%s/merchant.key.pem"))
for i = 1, %d do key:sign(%q .. i) end
]]):format(state, n, msg))
  f:close()
  local out = ("%s/sign-%d.cg"):format(work, n)
  os.execute(("valgrind --tool=callgrind --callgrind-out-file=%s %s %s >/dev/null 2>&1"):format(out, qos.exe(), script))
  return totals(out)
end

if use_callgrind then
  assert(os.execute("command -v valgrind >/dev/null && command -v callgrind_control >/dev/null"),
    "bench: --callgrind needs valgrind (callgrind_control)")
  local ready = work .. "/cg-ready"
  local out = work .. "/sandbox.cg"
  local vg = assert(qos.spawn({"valgrind", "--tool=callgrind", "--trace-children=no", "--callgrind-out-file=" .. out,
    qos.exe(), "sandbox", "--state", state, "--listen", "127.0.0.1:0", "--ready-file", ready},
    {stdout = "/dev/null", stderr = work .. "/cg-stderr"}))
  local url, deadline = nil, qos.now() + 180
  while not url do
    local f = io.open(ready)
    url = f and f:read("l")
    if f then f:close() end
    assert(qos.now() < deadline, "bench: the sandbox under callgrind did not start")
    if not url then qos.sleep(0.2) end
  end
  -- counted from here: startup (state, keys, schema) is left out; each
  -- connection's thread state and TLS handshake are in, as in real use
  os.execute(("callgrind_control -z %d >/dev/null 2>&1"):format(vg))
  local cg_ok = load(presign("cg", url), "cg")
  os.execute(("callgrind_control -d %d >/dev/null 2>&1"):format(vg))
  qos.kill(vg, "TERM")
  qos.wait(vg)
  local dumped = 0
  for file in sh("ls " .. work .. "/sandbox.cg.*"):gmatch("%S+") do dumped = dumped + totals(file) end
  local base, k = valgrind_sign(0), 50
  local per_sign = (valgrind_sign(k) - base) / k
  local per_request = dumped / math.max(cg_ok, 1)
  print(("sandbox.instructions_per_request: %.2f M (%d answers, %d connections)"):format(per_request / 1e6, cg_ok, clients))
  print(("client.instructions_per_sign: %.2f M"):format(per_sign / 1e6))
  print(("sandbox.instructions_beyond_sign: %.2f M per request"):format((per_request - per_sign) / 1e6))
  print(("sandbox.instruction_ratio: %.2f (per request / per sign)"):format(per_request / per_sign))
end

-- ---- connections: many kept-alive clients; health under slowloris

-- connections.py(mode, port, args) in the background -> pid, output file
local function attack(mode, port, args, tag)
  local ready, out = work .. "/" .. tag .. ".ready", work .. "/" .. tag .. ".json"
  local argv = {"python3", "tests/support/connections.py", mode, "--port", tostring(port), "--ready", ready}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local pid = assert(qos.spawn(argv, {stdout = out, stderr = work .. "/" .. tag .. ".err"}))
  return pid, ready, out
end

local function read_all(path)
  local f = io.open(path)
  local s = f and f:read("a") or ""
  if f then f:close() end
  return s
end

-- health_latencies(base_url, seconds) -> sorted seconds of the health
-- requests made during that time, each on a new TLS connection, one after
-- another; failures count as 10 s
local function health_latencies(base_url, seconds)
  local times, deadline = {}, qos.now() + seconds
  for i = 1, math.huge do
    if qos.now() > deadline then break end
    local out = sh(("curl -sS -m 10 -o /dev/null -w '%%{http_code} %%{time_total}' --cacert %s %s/sandbox/health 2>&1")
      :format(q(state .. "/ca.pem"), base_url))
    local status, t = out:match("(%d+) ([%d.]+)$")
    if status ~= "200" then
      io.stderr:write(("bench: health answered %s\n"):format(out))
      t = 10
    end
    times[i] = tonumber(t)
    qos.sleep(0.05)
  end
  table.sort(times)
  return times
end

local function percentile(sorted, p)
  return sorted[math.max(1, math.ceil(#sorted * p))]
end

if use_connections then
  local hc = assert(sandbox.start {state = state})
  local port = tonumber(hc.base_url:match(":(%d+)$"))
  local ca = state .. "/ca.pem"
  -- kept-alive clients: 1,000, then doubling up to the connection limit.
  -- The clients connect over 2 s (as a batch ramps up), each asks for
  -- health twice on its connection, then, all of them connected at once,
  -- once more; the largest number all answered
  local served, tried = 0, {}
  for _, n in ipairs {1000, 2000, 4000} do
    local out = sh(("python3 tests/support/connections.py keepalive --port %d --tls %s --clients %d --requests 2 "
      .. "--ramp 2 --hold 0 --path /sandbox/health --timeout 60"):format(port, q(ca), n))
    local r = cjson.decode(out) or {}
    local ok = (r.ok or 0) + (r.ok_after_hold or 0)
    local errors = {}
    for k, v in pairs(r.errors or {}) do errors[k] = v end
    for k, v in pairs(r.errors_after_hold or {}) do errors["held:" .. k] = v end
    tried[#tried + 1] = ("%d: %d of %d answered%s"):format(n, ok, 3 * n,
      next(errors) and (", errors " .. cjson.encode(errors)) or "")
    if ok ~= 3 * n then break end
    served = n
  end
  print(("sandbox.keepalive_clients: %d (TLS connections open at once, all answered; %s)"):format(served,
    table.concat(tried, "; ")))
  -- health under 1,000 slowloris connections: over TLS (one header line
  -- every 2 s, never finished; reconnecting once the sandbox closes them,
  -- which its request_timeout does after 10 s), and raw TCP (connections
  -- that never start TLS, closed by idle_timeout after 60 s). Health is
  -- asked for during 25 s, so that the reconnections are in it
  for _, kind in ipairs {{"tls", {"--tls", ca, "--interval", "2"}}, {"tcp", {"--silent", "--interval", "2"}}} do
    local args = {"--clients", "1000", "--duration", "60", "--reconnect"}
    for _, a in ipairs(kind[2]) do args[#args + 1] = a end
    local pid, ready, out = attack("slowloris", port, args, "slow-" .. kind[1])
    local deadline = qos.now() + 120
    while read_all(ready) == "" and qos.now() < deadline and not qos.wait(pid, true) do qos.sleep(0.1) end
    local open = tonumber(read_all(ready):match("%d+")) or 0
    local times = health_latencies(hc.base_url, 25)
    qos.kill(pid, "TERM")
    qos.wait(pid)
    print(("sandbox.health_under_slowloris_%s_max: %.0f ms (%d requests; %d slow connections open)"):format(kind[1],
      times[#times] * 1000, #times, open))
    print(("sandbox.health_under_slowloris_%s_p99: %.0f ms"):format(kind[1], percentile(times, 0.99) * 1000))
    print(("sandbox.health_under_slowloris_%s_median: %.0f ms"):format(kind[1], percentile(times, 0.5) * 1000))
  end
  hc:stop()
end

os.execute("rm -rf '" .. work .. "' '" .. state .. "'")
