-- scripts/bench/client.lua: the client's CPU cost per request against the
-- crypto bound (one RSA-2048 sign + one verify, measured in this run).
-- Create-stock requests to a loopback server in another process (the
-- embedded sandbox, or the python stand-in of the tests when the sandbox is
-- not built in or QUAN_BENCH_SERVER=python), sequentially and 16 at a time.
--
-- CPU time (quan.os.cputime of this process only; the server is another
-- process) on a shared machine is noisy, so the run is split into rounds:
-- each round sends a share of the sequential requests, does as many sign +
-- verify pairs, then sends a share of the 16-in-flight requests. Each figure
-- is the best round's (the least disturbed); the ratios divide best by best.
--
-- Last, client.body_* and client.crypto_* time a request's own work warm and
-- right after an idle wait as long as the server's answer takes: what the
-- waits of a sequential client cost on this machine (see docs/client.md).
--
--   build/quan scripts/bench/client.lua [N [ROUNDS]]
--       N requests each way (QUAN_BENCH_N, default 400), ROUNDS (default 5)
--   build/quan scripts/bench/client.lua --callgrind [N]
--       runs itself under valgrind --tool=callgrind and prints instructions
--       per request and per sign + verify (deterministic, unlike CPU time;
--       default N 100). Note: RSA code runs at a much higher instructions
--       per cycle than the rest, so the instruction ratio is lower than the
--       CPU-time ratio; compare it with itself across changes.
package.path = "./?.lua;" .. package.path
local qos = require "quan.os"
local crypto = require "quan.crypto"
local async = require "quan.async"
local wechatpay = require "wechatpay"
local config = require "wechatpay.config"

local args = arg or {}
local CALLGRIND = args[1] == "--callgrind"
local INNER = os.getenv("QUAN_BENCH_CALLGRIND_INNER") == "1"
if CALLGRIND then table.remove(args, 1) end

-- ---- --callgrind: run this script under callgrind, read the parts --------
-- The inner run calls quan.os.getppid() (a marker nothing else in this
-- process calls) between phases; --dump-before writes one profile part per
-- phase: 1 setup, 2 sign + verify, 3 sequential requests, 4 at 16 in flight.
if CALLGRIND and not INNER then
  local n = tonumber(args[1]) or 100
  local dir = assert(qos.mkdtemp("/tmp/quan-bench-cg."))
  local out = dir .. "/callgrind.out"
  local cmd = ("QUAN_BENCH_CALLGRIND_INNER=1 valgrind --tool=callgrind --dump-before=os_getppid"
    .. " --callgrind-out-file=%s.%%p %s %s --callgrind %d > %s/log 2>&1"):format(
      out, qos.exe(), args[0] or "scripts/bench/client.lua", n, dir)
  local ok = os.execute(cmd)
  local parts = {}
  local p = io.popen("ls " .. dir)
  for f in p:lines() do
    local k = f:match("^callgrind%.out%.%d+%.(%d+)$")
    if k then
      local fh = io.open(dir .. "/" .. f)
      local text = fh:read("a")
      fh:close()
      parts[tonumber(k)] = tonumber(text:match("\ntotals: (%d+)"))
    end
  end
  p:close()
  if not ok or not (parts[2] and parts[3] and parts[4]) then
    local fh = io.open(dir .. "/log")
    io.stderr:write(fh and fh:read("a") or "", "\nbench --callgrind: no profile parts in ", dir, "\n")
    os.exit(1)
  end
  os.execute("rm -rf " .. dir)
  local bound, seq, par = parts[2] / n, parts[3] / n, parts[4] / n
  print(("client.cg_requests: %d"):format(n))
  print(("client.cg_crypto_bound: %.0f instructions"):format(bound))
  print(("client.cg_seq: %.0f instructions/request"):format(seq))
  print(("client.cg_par16: %.0f instructions/request"):format(par))
  print(("client.cg_seq_overhead: %.0f instructions/request"):format(seq - bound))
  print(("client.cg_seq_ratio: %.3f"):format(seq / bound))
  print(("client.cg_par16_ratio: %.3f"):format(par / bound))
  return
end

local N = tonumber(args[1]) or tonumber(os.getenv("QUAN_BENCH_N")) or (INNER and 100 or 400)
local ROUNDS = INNER and 1 or math.max(1, tonumber(args[2]) or 5)

-- server() -> options for wechatpay.new, path of the merchant key, name, stop()
local function server()
  local have_sandbox, sandbox = pcall(require, "quan.sandbox")
  if have_sandbox and os.getenv("QUAN_BENCH_SERVER") ~= "python" then
    local h = assert(sandbox.start {})
    local p = config.profile(config.read(h.config_path), h.profile, h.config_path)
    local opts = {}
    for _, k in ipairs { "mchid", "serial", "private_key", "certs", "apiv3_key", "base_url", "ca_file" } do
      opts[k] = p[k]
    end
    return opts, p.private_key, "sandbox", function() h:stop() end
  end
  local wxfake = require "tests.support.wxfake"
  local fake = wxfake.start()
  return fake.options(), "file://" .. fake.dir .. "/merchant.key.pem", "python stand-in", fake.stop
end

local options, keyfile, name, stop = server()
local ok, err = pcall(function()
  local wx = wechatpay.new(options)
  local stamp = os.date("!%H%M%S")

  local begin = ((os.time() + 8 * 3600) // 86400 + 1) * 86400 - 8 * 3600
  local function at(t) return os.date("!%Y-%m-%dT%H:%M:%S+08:00", t + 8 * 3600) end
  local t0, t1 = at(begin), at(begin + 30 * 86400 - 1)
  local function body(i)
    return {
      stock_name = "bench", belong_merchant = wx.mchid, stock_type = "NORMAL", no_cash = false,
      available_begin_time = t0, available_end_time = t1,
      stock_use_rule = { max_coupons = 100, max_amount = 10000, max_coupons_per_user = 1,
        natural_person_limit = false, prevent_api_abuse = false },
      coupon_use_rule = {
        coupon_available_time = { available_begin_time = t0, available_end_time = t1 },
        fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 1000 },
        available_merchants = { wx.mchid } },
      out_request_no = "bench" .. stamp .. "x" .. i,
    }
  end

  -- the crypto bound: sign + verify with the same sizes of key and message
  local key = assert(crypto.private_key(keyfile))
  local pub = key:public()
  local msg = "POST\n/v3/marketing/favor/coupon-stocks\n1700000000\n" .. ("n"):rep(32) .. "\n"
    .. require("wechatpay.json").encode(body(1)) .. "\n"
  local function crypto_pairs(k)
    for _ = 1, k do
      local sig = key:sign(msg)
      assert(pub:verify(msg, sig))
    end
  end

  local function send(i)
    local res, e = wx.v3.marketing.favor.couponStocks:post { json = body(i) }
    if not res then error(e, 0) end
    assert(type(res.json.stock_id) == "string")
  end

  local nexti = 0
  local function sequential(n)
    for _ = 1, n do
      nexti = nexti + 1
      send(nexti)
    end
  end
  local function parallel(n)
    local last = nexti + n
    local function worker()
      while nexti < last do
        nexti = nexti + 1
        send(nexti)
      end
    end
    for _ = 1, 16 do async.spawn(worker) end
    async.run()
  end

  -- warm up: connections, TLS sessions, code paths
  send(-1)
  for w = 1, 16 do async.spawn(send, -1 - w) end
  async.run()
  crypto_pairs(2)

  if INNER then
    qos.getppid() -- marker: end of setup
    crypto_pairs(N)
    qos.getppid() -- marker: end of sign + verify
    sequential(N)
    qos.getppid() -- marker: end of sequential requests
    parallel(N)
    qos.getppid() -- marker: end of requests at 16 in flight
    return
  end

  -- timed(fn, n) -> CPU seconds per unit, wall seconds
  local function timed(fn, n)
    collectgarbage("step") -- start each round from a similar point of the GC cycle
    local w0, c0 = qos.now(), qos.cputime()
    fn(n)
    return (qos.cputime() - c0) / n, qos.now() - w0
  end
  local per = math.max(1, N // ROUNDS)
  local best = { bound = math.huge, seq = math.huge, par = math.huge }
  local wall = { seq = 0, par = 0 }
  local ratios = {}
  for r = 1, ROUNDS do
    local s, sw = timed(sequential, per)
    local b = timed(crypto_pairs, per)
    local p, pw = timed(parallel, per)
    best.seq, best.bound, best.par = math.min(best.seq, s), math.min(best.bound, b), math.min(best.par, p)
    wall.seq, wall.par = wall.seq + sw, wall.par + pw
    ratios[r] = s / b
  end
  table.sort(ratios)
  local total = per * ROUNDS

  print(("client.server: %s"):format(name))
  print(("client.requests: %d sequential + %d at 16 in flight, %d rounds"):format(total, total, ROUNDS))
  print(("client.validation: %s"):format(package.loaded["wechatpay.favor.validate"] and "on" or "off (no request was validated)"))
  print(("client.crypto_bound: %.3f ms"):format(best.bound * 1000))
  print(("client.seq_cpu: %.3f ms/request"):format(best.seq * 1000))
  print(("client.seq_rate: %.0f requests/s"):format(total / wall.seq))
  print(("client.par16_cpu: %.3f ms/request"):format(best.par * 1000))
  print(("client.par16_rate: %.0f requests/s"):format(total / wall.par))
  print(("client.seq_ratio: %.2f"):format(best.seq / best.bound))
  print(("client.seq_ratio_median_round: %.2f"):format(ratios[(ROUNDS + 1) // 2]))
  print(("client.par16_ratio: %.2f"):format(best.par / best.bound))

  -- Why seq_ratio is above the instruction ratio (--callgrind): while the
  -- client waits for an answer, the core runs other work and the client's
  -- caches go cold. The same pieces of work are timed warm (right after
  -- doing them) and right after an idle wait as long as the server takes,
  -- interleaved in random order; medians. "body" is what a request does
  -- besides the crypto before it is sent (encode + validate the body);
  -- "crypto" is one sign + verify.
  local json, validate = require "wechatpay.json", require "wechatpay.favor.validate"
  local template = "/v3/marketing/favor/coupon-stocks"
  local function body_work(i)
    local b = body(i)
    json.encode(b)
    assert(validate.request("POST", template, b))
  end
  local wait = math.max(0.0002, wall.seq / total - best.seq)
  local samples = { body = { {}, {} }, crypto = { {}, {} } }
  for i = 1, 600 do
    local what = (i % 2 == 0) and "body" or "crypto"
    local cold = math.random(2) == 2
    local fn = what == "body" and body_work or crypto_pairs
    if cold then qos.sleep(wait) else fn(1) end
    local c0 = qos.cputime()
    fn(1)
    local list = samples[what][cold and 2 or 1]
    list[#list + 1] = qos.cputime() - c0
  end
  local function median(t) table.sort(t) return t[(#t + 1) // 2] end
  local bw, bc = median(samples.body[1]), median(samples.body[2])
  local cw, cc = median(samples.crypto[1]), median(samples.crypto[2])
  print(("client.after_wait: %.2f ms idle wait per request (the server's time)"):format(wait * 1000))
  print(("client.body_warm_us: %.1f  client.body_after_wait_us: %.1f  (x%.1f)"):format(bw * 1e6, bc * 1e6, bc / bw))
  print(("client.crypto_warm_ms: %.3f  client.crypto_after_wait_ms: %.3f  (x%.2f)"):format(cw * 1000, cc * 1000, cc / cw))
end)
stop()
if not ok then error(err, 0) end
