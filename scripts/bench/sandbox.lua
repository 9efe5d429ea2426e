-- scripts/bench/sandbox.lua: requests per second the sandbox serves, against
-- the rate one client thread can sign (RSA-2048, one sign per request), both
-- measured in this run. Run as `build/quan scripts/bench/sandbox.lua [clients]
-- [requests-per-client]`.
--
-- The clients are curl processes on kept-alive connections, each sending
-- requests signed beforehand (so the clients' own signing does not compete
-- with the sandbox for the CPU during the timed part). Every request is a
-- send-coupon POST: one verify, one transaction, one sign in the sandbox.
local crypto = require "quan.crypto"
local qos = require "quan.os"
local cjson = require "cjson"
local sandbox = require "quan.sandbox"

local clients = tonumber(arg and arg[1]) or 4
local per_client = tonumber(arg and arg[2]) or 600

local h = assert(sandbox.start())
local key = assert(crypto.private_key("file://" .. h.state .. "/merchant.key.pem"))
local P = "/v3/marketing/favor"

local function auth(method, target, body)
  local ts = tostring(math.floor(qos.time()))
  local nonce = crypto.nonce(32)
  local sig = key:sign(method .. "\n" .. target .. "\n" .. ts .. "\n" .. nonce .. "\n" .. body .. "\n")
  return ('WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",timestamp="%s",serial_no="%s",signature="%s"'):format(
    h.mchid, nonce, ts, h.serial, sig)
end

local function q(s) return '"' .. s:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"' end

-- one request through curl, for setup
local function call(method, target, body)
  local dir = qos.mkdtemp("/tmp/quan-bench-")
  local f = io.open(dir .. "/cfg", "w")
  f:write("url = ", q(h.base_url .. target), "\ncacert = ", q(h.state .. "/ca.pem"), "\nrequest = ", method,
    "\nheader = ", q("Authorization: " .. auth(method, target, body or "")),
    "\nheader = \"Content-Type: application/json\"\nsilent\n")
  if body then f:write("data-binary = ", q(body), "\n") end
  f:close()
  local p = io.popen("curl -K " .. dir .. "/cfg")
  local out = p:read("a")
  p:close()
  os.execute("rm -rf " .. dir)
  return cjson.decode(out)
end

-- a stock large enough for every request
local now = math.floor(qos.time())
local iso = require("quan.sandbox.util").format_time
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

-- the client's signing rate: one thread, RSA-2048, for about a second
local msg = "POST\n" .. P .. "/users/o/coupons\n1700000000\n" .. string.rep("n", 32) .. "\n" .. string.rep("x", 160) .. "\n"
local signs, t0, c0 = 0, qos.now(), qos.cputime()
while qos.now() - t0 < 1.0 do
  key:sign(msg)
  signs = signs + 1
end
local sign_rate = signs / (qos.now() - t0)
local sign_cpu = (qos.cputime() - c0) / signs -- CPU seconds per sign

-- pre-signed requests, one curl config per client
local work = qos.mkdtemp("/tmp/quan-bench-")
for c = 1, clients do
  local f = io.open(work .. "/client" .. c, "w")
  for i = 1, per_client do
    local openid = ("bench-c%d-u%d"):format(c, i)
    local target = P .. "/users/" .. openid .. "/coupons"
    local body = cjson.encode {stock_id = stock.stock_id, out_request_no = ("b%d-%d-%d"):format(now, c, i),
      appid = h.appid, stock_creator_mchid = h.mchid}
    if i > 1 then f:write("next\n") end
    f:write("url = ", q(h.base_url .. target), "\ncacert = ", q(h.state .. "/ca.pem"), "\nrequest = POST\n",
      "header = ", q("Authorization: " .. auth("POST", target, body)), "\n",
      "header = \"Content-Type: application/json\"\n", "data-binary = ", q(body), "\n",
      "output = /dev/null\nsilent\nwrite-out = \"%{http_code}\\n\"\n")
  end
  f:close()
end

-- CPU seconds used by the sandbox process so far (utime + stime)
local function cpu(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  local fields = {}
  for x in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

-- a client thread signing alongside, as a real client does while the sandbox
-- serves: its rate under the same load
local signer_code = [[
local crypto, qos = require "quan.crypto", require "quan.os"
local key = crypto.generate_rsa(2048)
local stop, out = arg[1], arg[2]
local n, t0 = 0, qos.now()
while true do
  for _ = 1, 10 do key:sign("POST\n/v3/x\n1700000000\nnonce\nbody\n") end
  n = n + 10
  local f = io.open(stop)
  if f then f:close() break end
end
local f = io.open(out, "w")
f:write(n / (qos.now() - t0))
f:close()
]]
local signer_file = work .. "/signer.lua"
do
  local f = io.open(signer_file, "w")
  f:write(signer_code)
  f:close()
end

local pids = {}
local cpu0 = cpu(h.pid)
local signer = assert(qos.spawn({qos.exe(), signer_file, work .. "/stop", work .. "/signed"}))
qos.sleep(0.3) -- its key is made before the timed part
local t1 = qos.now()
for c = 1, clients do
  pids[c] = assert(qos.spawn({"curl", "-K", work .. "/client" .. c}, {stdout = work .. "/out" .. c}))
end
for c = 1, clients do qos.wait(pids[c]) end
local elapsed = qos.now() - t1
local cpu_used = cpu(h.pid) - cpu0
io.open(work .. "/stop", "w"):close()
qos.wait(signer)
local concurrent_sign_rate = tonumber(io.open(work .. "/signed"):read("a"))

local ok, other = 0, {}
for c = 1, clients do
  for line in io.lines(work .. "/out" .. c) do
    if line == "200" then ok = ok + 1 else other[line] = (other[line] or 0) + 1 end
  end
end
os.execute("rm -rf " .. work)
h:stop()

for code, n in pairs(other) do io.stderr:write(("bench: %d answers with status %s\n"):format(n, code)) end
local rps = ok / elapsed
print(("sandbox.rps: %.0f req/s"):format(rps))
print(("client.sign_per_sec: %.0f sign/s"):format(sign_rate))
print(("sandbox.ratio: %.2f"):format(rps / sign_rate))
print(("client.sign_per_sec_concurrent: %.0f sign/s"):format(concurrent_sign_rate))
print(("sandbox.ratio_concurrent: %.2f"):format(rps / concurrent_sign_rate))
-- the same comparison in CPU time, which the load of other processes on a
-- shared machine does not distort: requests served per CPU-second of the
-- sandbox against signatures per CPU-second of one client thread
local per_req = cpu_used / math.max(ok, 1)
print(("sandbox.cpu_per_request: %.2f ms"):format(per_req * 1000))
print(("client.cpu_per_sign: %.2f ms"):format(sign_cpu * 1000))
print(("sandbox.cpu_ratio: %.2f"):format(sign_cpu / per_req))
print(("sandbox.requests: %d ok of %d, %d clients, %.2f s"):format(ok, clients * per_client, clients, elapsed))
