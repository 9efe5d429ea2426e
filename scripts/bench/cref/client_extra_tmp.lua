-- scripts/bench/cref/client.lua: quan's side of the C reference benchmark,
-- the twin of scripts/bench/cref/client.c: the same arguments, the same
-- requests (create-stock, the same body), the same output lines. It is an
-- ordinary quan script: the client as a user builds it, posts through the
-- API tree (validated, signed, sent, verified, decoded), sequentially and in
-- 16 quan.async tasks.
--
--   build/quan scripts/bench/cref/client.lua --base-url URL --mchid ID
--     --serial HEX --private-key PATH --cert NAME=PATH [...] [--ca-file PATH]
--     --begin RFC3339 --end RFC3339 --prefix P [--user-agent UA]
--     [--warm-up W] [--sequential N] [--parallel N] [--print-request I]
--     [--floor 1]
--
-- --floor 1 sends the same requests without the client: the script itself
-- calls what the client calls on its way (the validator, which writes the
-- body's text as it passes it, else the encoder; the signer, quan.async,
-- the verifier, the decoder) and nothing else: no
-- options, hooks, retries, result or error tables. What quan costs at
-- least with validation on, beside what the client adds (the bench's
-- "floor").
--
-- --user-agent is accepted for the twin's sake; quan sends its own. Phases
-- end with quan.os.getppid(), where `--dump-before=os_getppid` cuts a
-- callgrind profile (nothing else in the request path calls it).
local qos = require "quan.os"
local async = require "quan.async"
local wechatpay = require "wechatpay"

local PARALLEL = 16

local function die(msg)
  io.stderr:write("cref (quan): ", msg, "\n")
  os.exit(1)
end

local function count(name, v)
  local n = math.tointeger(tonumber(v))
  if not n or n < 0 then die(name .. ": expected a count, got '" .. tostring(v) .. "'") end
  return n
end

-- arguments -> options for wechatpay.new, and the run's settings
local VALUED = {
  ["--base-url"] = "base_url", ["--mchid"] = "mchid", ["--serial"] = "serial",
  ["--private-key"] = "private_key", ["--ca-file"] = "ca_file", ["--begin"] = "begin",
  ["--end"] = "end", ["--prefix"] = "prefix", ["--user-agent"] = "user_agent",
  ["--sequential"] = "sequential", ["--parallel"] = "parallel", ["--print-request"] = "print_request",
  ["--warm-up"] = "warm_up", ["--floor"] = "floor",
}
local run = { sequential = 0, parallel = 0, warm_up = 0 }
local certs = {}
local i = 1
while arg[i] do
  local a, v = arg[i], arg[i + 1]
  if v == nil then die(a .. ": expected a value") end
  if a == "--cert" then
    local name, path = v:match("^([^=]+)=(.+)$")
    if not name then die("--cert: expected NAME=PATH, got '" .. v .. "'") end
    certs[name] = "file://" .. path
  elseif VALUED[a] then
    run[VALUED[a]] = v
  else
    die("unknown option '" .. a .. "'")
  end
  i = i + 2
end
for _, k in ipairs { "base_url", "mchid", "serial", "private_key", "begin", "end", "prefix" } do
  if not run[k] then die("--" .. k:gsub("_", "-") .. " is required") end
end
run.sequential, run.parallel = count("--sequential", run.sequential), count("--parallel", run.parallel)
run.warm_up = count("--warm-up", run.warm_up)

local wx = wechatpay.new {
  mchid = run.mchid, serial = run.serial, private_key = "file://" .. run.private_key,
  certs = certs, base_url = run.base_url, ca_file = run.ca_file,
}
local t0, t1, mchid, prefix = run.begin, run["end"], wx.mchid, run.prefix
local function body(n)
  return {
    stock_name = "bench", belong_merchant = mchid, stock_type = "NORMAL", no_cash = false,
    available_begin_time = t0, available_end_time = t1,
    stock_use_rule = { max_coupons = 100, max_amount = 10000, max_coupons_per_user = 1,
      natural_person_limit = false, prevent_api_abuse = false },
    coupon_use_rule = {
      coupon_available_time = { available_begin_time = t0, available_end_time = t1 },
      fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 1000 },
      available_merchants = { mchid } },
    out_request_no = prefix .. n,
  }
end

-- --print-request I: the header lines (but Authorization) and the body of
-- request I as the client prepares it
if run.print_request then
  local p = require("wechatpay.client").prepare(wx, "POST", "v3/marketing/favor/coupon-stocks",
    { json = body(count("--print-request", run.print_request)) })
  for _, line in ipairs(p.headers) do
    if not line:find("^Authorization:") then print(line) end
  end
  print("")
  print(p.body)
  return
end

print(("ready_cpu_s %.6f"):format(qos.cputime()))
if run.sequential == 0 and run.parallel == 0 then return end

local stocks = wx.v3.marketing.favor.couponStocks
local next_number = 1

-- post(n) -> the decoded answer to request n | nil, message: through the
-- client, or (--floor) through the pieces it is made of
local function post(n)
  local res, err = stocks:post { json = body(n) }
  return res and res.json, err
end
if run.floor == "1" then
  local crypto, json, sign = require "quan.crypto", require "wechatpay.json", require "wechatpay.sign"
  local validate, verify = require "wechatpay.favor.validate", require "wechatpay.verify"
  local PATH = "/v3/marketing/favor/coupon-stocks"
  local endpoint = assert(require("wechatpay.favor.schema").lookup("POST", PATH))
  local key = assert(crypto.private_key("file://" .. run.private_key))
  local keys, names = {}, {}
  for name, src in pairs(certs) do
    local cert = crypto.certificate(src)
    keys[name] = cert and cert:public_key() or assert(crypto.public_key(src))
    names[#names + 1] = name
  end
  if #names ~= 1 then die("--floor: expected one --cert (the one the answers are signed with)") end
  local url = run.base_url .. PATH
  local fixed = { "Accept: application/json", "Content-Type: application/json",
    "User-Agent: " .. require("quan.http").USER_AGENT, "Wechatpay-Serial: " .. names[1] }
  post = function(n)
    local b = body(n)
    local text = validate.text(endpoint, b) -- validated and encoded in one walk
    if not text then
      local good, findings = validate.check(endpoint, b)
      if not good then return nil, validate.format(findings) end
      text = json.encode(b)
    end
    local ts, nonce = ("%d"):format(math.floor(qos.time())), crypto.nonce(32)
    local sig = assert(key:sign(sign.message("POST", PATH, ts, nonce, text)))
    local res, why = async.request { method = "POST", url = url, body = text, resend = false, cafile = run.ca_file,
      timeout = require("wechatpay.client").TIMEOUT,
      headers = { fixed[1], fixed[2], fixed[3], fixed[4],
        "Authorization: " .. sign.authorization(run.mchid, run.serial, ts, nonce, sig) } }
    if not res then return nil, why end
    if res.status ~= 200 then return nil, ("HTTP %d: %s"):format(res.status, res.body) end
    local ok, _, message = verify.check(res.headers, res.body, keys, qos.time())
    if not ok then return nil, "verify: " .. message end
    return json.decode(res.body)
  end
end

local EXTRA = tonumber(os.getenv("EXTRA") or 0)
local T = { a = 1, b = 2 }
local function busy(t) t.a = t.b + 1; return t.a end
local function send()
  for _ = 1, EXTRA do busy(T) end
  local n = next_number
  next_number = n + 1
  local answer, err = post(n)
  if not answer then die(("request %d: %s"):format(n, tostring(err))) end
  if type(answer) ~= "table" or type(answer.stock_id) ~= "string" or answer.stock_id == "" then
    die(("request %d: answer has no stock_id string"):format(n))
  end
end

local function sequential(n)
  for _ = 1, n do send() end
end

local function parallel(n)
  local left = n
  local function worker()
    while left > 0 do
      left = left - 1
      send()
    end
  end
  for _ = 1, math.min(PARALLEL, n) do async.spawn(worker) end
  async.run()
end

local function measured(phase, fn, n)
  local c0, w0 = qos.cputime(), qos.now()
  fn(n)
  local cpu, wall = qos.cputime() - c0, qos.now() - w0
  qos.getppid() -- marker: end of the phase
  io.write(("%s_requests %d\n%s_cpu_s %.6f\n%s_wall_s %.6f\n%s_maxrss_kib %d\n"):format(
    phase, n, phase, cpu, phase, wall, phase, qos.maxrss()))
  io.stdout:flush()
end

-- connections() -> the TCP connections open to the server's port, as
-- /proc/self/net/tcp and tcp6 list them (state 01, ESTABLISHED): the
-- client's own, as it is the only one talking to its server meanwhile
local port = tonumber(run.base_url:match("^https://[^/]*:(%d+)")) or 443
local function connections()
  local n = 0
  for _, file in ipairs { "/proc/self/net/tcp", "/proc/self/net/tcp6" } do
    local f = io.open(file)
    if f then
      for line in f:lines() do
        local remote, state = line:match("^%s*%d+: %S+ %S+:(%x+) (%x+)")
        if remote and tonumber(state, 16) == 1 and tonumber(remote, 16) == port then n = n + 1 end
      end
      f:close()
    end
  end
  return n
end

-- the warm-up of client.c: one request, then W with 16 in flight, then
-- bursts of 16 until 16 connections are open (at most 64 bursts)
if run.warm_up > 0 then
  sequential(1)
  parallel(run.warm_up)
  local bursts = 0
  while bursts < 64 and connections() < PARALLEL do
    parallel(PARALLEL)
    bursts = bursts + 1
  end
  io.write(("warm_up_requests %d\nwarm_up_connections %d\n"):format(next_number - 1, connections()))
  io.stdout:flush()
end
qos.getppid() -- marker: end of start-up and warm-up
if run.sequential > 0 then measured("sequential", sequential, run.sequential) end
if run.parallel > 0 then measured("parallel", parallel, run.parallel) end
print(("final_connections %d"):format(connections()))
-- whether the requests passed the validator (the client's default)
print(("validated %d"):format(package.loaded["wechatpay.favor.validate"] and 1 or 0))
