-- scripts/bench/client.lua: the client's CPU cost per request against the
-- crypto bound (one RSA-2048 sign + one verify, measured in this run).
-- N create-stock requests to a loopback server in another process (the
-- python stand-in of the tests), sequentially and 16 at a time; client CPU
-- seconds per request (quan.os.cputime) divided by the bound.
--   build/quan scripts/bench/client.lua [N]      (QUAN_BENCH_N also sets N)
package.path = "./?.lua;" .. package.path
local qos = require "quan.os"
local crypto = require "quan.crypto"
local async = require "quan.async"
local wechatpay = require "wechatpay"
local wxfake = require "tests.support.wxfake"

local N = tonumber(arg and arg[1]) or tonumber(os.getenv("QUAN_BENCH_N")) or 400

local fake = wxfake.start()
local ok, err = pcall(function()
  local wx = wechatpay.new(fake.options())

  local function body(i)
    return {
      stock_name = "bench", belong_merchant = wxfake.MCHID, stock_type = "NORMAL", no_cash = false,
      available_begin_time = "2027-03-01T00:00:00+08:00", available_end_time = "2027-03-31T23:59:59+08:00",
      stock_use_rule = { max_coupons = 100, max_amount = 10000, max_coupons_per_user = 1,
        natural_person_limit = false, prevent_api_abuse = false },
      coupon_use_rule = { fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 1000 },
        available_merchants = { wxfake.MCHID } },
      out_request_no = "bench" .. i,
    }
  end

  -- the crypto bound: sign + verify with the same sizes of key and message
  local key = assert(crypto.private_key("file://" .. fake.dir .. "/merchant.key.pem"))
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
    local res, e = wx.v3.marketing.favor.couponStocks:post { json = body(i), validate = false }
    if not res then error(e, 0) end
    assert(res.json.stock_id == "SID-bench" .. i)
  end

  send(0) -- warm up: connection, TLS session
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
  for _ = 1, 16 do send(0) end
  t0, c1 = qos.now(), qos.cputime()
  for _ = 1, 16 do async.spawn(worker) end
  async.run()
  local par_wall, par_cpu = qos.now() - t0, (qos.cputime() - c1) / N

  print(("client.requests: %d"):format(N))
  print(("client.crypto_bound: %.3f ms"):format(bound * 1000))
  print(("client.seq_cpu: %.3f ms/request"):format(seq_cpu * 1000))
  print(("client.seq_rate: %.0f requests/s"):format(N / seq_wall))
  print(("client.par16_cpu: %.3f ms/request"):format(par_cpu * 1000))
  print(("client.par16_rate: %.0f requests/s"):format(N / par_wall))
  print(("client.seq_ratio: %.2f"):format(seq_cpu / bound))
  print(("client.par16_ratio: %.2f"):format(par_cpu / bound))
end)
fake.stop()
if not ok then error(err, 0) end
