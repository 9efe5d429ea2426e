-- scripts/bench/client.lua: the client's CPU cost per request against the
-- crypto bound (one RSA-2048 sign + one verify, measured in this run).
-- N create-stock requests to a loopback server in another process (the
-- embedded sandbox, or the python stand-in of the tests when the sandbox is
-- not built in or QUAN_BENCH_SERVER=python), sequentially and 16 at a time;
-- client CPU seconds per request (quan.os.cputime) divided by the bound.
--   build/quan scripts/bench/client.lua [N]      (QUAN_BENCH_N also sets N)
package.path = "./?.lua;" .. package.path
local qos = require "quan.os"
local crypto = require "quan.crypto"
local async = require "quan.async"
local wechatpay = require "wechatpay"
local config = require "wechatpay.config"

local N = tonumber(arg and arg[1]) or tonumber(os.getenv("QUAN_BENCH_N")) or 400

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
  local K = 300
  local c0 = qos.cputime()
  for _ = 1, K do
    local sig = key:sign(msg)
    assert(pub:verify(msg, sig))
  end
  local bound = (qos.cputime() - c0) / K

  local function send(i)
    local res, e = wx.v3.marketing.favor.couponStocks:post { json = body(i) }
    if not res then error(e, 0) end
    assert(type(res.json.stock_id) == "string")
  end

  send(-1) -- warm up: connection, TLS session
  local t0, c1 = qos.now(), qos.cputime()
  for i = 1, N do send(i) end
  local seq_wall, seq_cpu = qos.now() - t0, (qos.cputime() - c1) / N

  local nexti = N
  local function worker()
    while nexti < 2 * N do
      nexti = nexti + 1
      send(nexti)
    end
  end
  for w = 1, 16 do async.spawn(send, -1 - w) end
  async.run()
  t0, c1 = qos.now(), qos.cputime()
  for _ = 1, 16 do async.spawn(worker) end
  async.run()
  local par_wall, par_cpu = qos.now() - t0, (qos.cputime() - c1) / N

  print(("client.server: %s"):format(name))
  print(("client.requests: %d"):format(N))
  print(("client.validation: %s"):format(package.loaded["quan.validate"] and "on" or "off (quan.validate absent)"))
  print(("client.crypto_bound: %.3f ms"):format(bound * 1000))
  print(("client.seq_cpu: %.3f ms/request"):format(seq_cpu * 1000))
  print(("client.seq_rate: %.0f requests/s"):format(N / seq_wall))
  print(("client.par16_cpu: %.3f ms/request"):format(par_cpu * 1000))
  print(("client.par16_rate: %.0f requests/s"):format(N / par_wall))
  print(("client.seq_ratio: %.2f"):format(seq_cpu / bound))
  print(("client.par16_ratio: %.2f"):format(par_cpu / bound))
end)
stop()
if not ok then error(err, 0) end
