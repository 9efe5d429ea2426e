-- scripts/examples/seed.lua: the seed's create-stock request
-- (创建代金券批次, POST /v3/marketing/favor/coupon-stocks) in all six forms:
-- sync and async, each as a property chain, a declarative chain("...") and an
-- array-style key. Prints each new stock_id and create_time.
--
--   quan run --sandbox scripts/examples/seed.lua     (a private local sandbox)
--   quan run --profile NAME scripts/examples/seed.lua
--
-- The seed leaves values empty or zero; here they are filled so the request
-- is valid: times in the future, a budget equal to max_coupons × face value,
-- a threshold above the face value, a fresh out_request_no for each form.
-- discount_coupon, exchange_coupon and available_time_after_receive are left
-- out: creation supports NORMAL stocks only, and a validity after receipt
-- cannot be combined with fix_available_time (docs: favor-api, create stock).
local wechatpay = require "wechatpay"

local wx = wechatpay.client()

-- rfc3339(t) -> t as local time in China, e.g. 2027-03-01T00:00:00.000+08:00
local function rfc3339(t)
  return os.date("!%Y-%m-%dT%H:%M:%S.000+08:00", t + 8 * 3600)
end

local day = 24 * 3600
local begin = ((os.time() + 8 * 3600) // day + 1) * day - 8 * 3600 -- next midnight in China
local finish = begin + 30 * day - 1

local sequence = 0
local function out_request_no()
  sequence = sequence + 1
  local random = string.unpack("<I2", require("quan.crypto").random_bytes(2)) % 10000
  return ("%s%s%02d%04d"):format(wx.mchid, os.date("!%Y%m%d%H%M%S"), sequence, random)
end

local function request()
  return {
    stock_name = "微信支付代金券批次",
    available_begin_time = rfc3339(begin),
    available_end_time = rfc3339(finish),
    stock_use_rule = {
      max_coupons = 100,
      max_amount = 10000,
      max_amount_by_day = 1000,
      max_coupons_per_user = 1,
      natural_person_limit = true,
      prevent_api_abuse = true,
    },
    no_cash = true,
    stock_type = "NORMAL",
    comment = "零售批次",
    belong_merchant = wx.mchid,
    pattern_info = {
      description = "满10元减1元，每人限领1张",
      merchant_logo = "https://qpic.cn/mmpay/merchant-logo.png",
      merchant_name = "示例商户",
      background_color = "Color010",
      coupon_image = "https://qpic.cn/mmpay/coupon-image.png",
    },
    coupon_use_rule = {
      coupon_available_time = {
        available_begin_time = rfc3339(begin),
        available_end_time = rfc3339(finish),
        fix_available_time = {
          available_week_day = { 0, 1, 2, 3, 4, 5, 6 },
          begin_time = 3600,
          end_time = 86399,
        },
        second_day_available = true,
      },
      fixed_normal_coupon = {
        coupon_amount = 100,
        transaction_minimum = 1000,
      },
      goods_tag = { "123321" },
      limit_pay = { "ICBC_CREDIT" },
      limit_card = {
        name = "精粹白金",
        bin = { "62123456" },
      },
      trade_type = { "MICROAPP" },
      available_items = { "123321" },
      unavailable_items = { "789987" },
      available_merchants = { wx.mchid },
    },
    out_request_no = out_request_no(),
    ext_info = '{"exinfo1":"1234","exinfo2":"3456"}',
  }
end

local function show(form, res)
  print(form, res.json.stock_id, res.json.create_time)
end

-- 异步纯链式 (async, property chain)
wx.v3.marketing.favor.couponStocks:postAsync({ json = request() })
  :next(function(res) show("async chain", res) end)
  :wait()

-- 异步声明式 (async, declarative)
wx:chain("v3/marketing/favor/coupon-stocks"):postAsync({ json = request() })
  :next(function(res) show("async declarative", res) end)
  :wait()

-- 异步属性式 (async, array-style key)
wx["v3/marketing/favor/coupon-stocks"]:postAsync({ json = request() })
  :next(function(res) show("async property", res) end)
  :wait()

-- 同步纯链式 (sync, property chain): verbs return res or nil, err
local res = assert(wx.v3.marketing.favor.couponStocks:post({ json = request() }))
show("sync chain", res)

-- 同步声明式 (sync, declarative)
res = assert(wx:chain("v3/marketing/favor/coupon-stocks"):post({ json = request() }))
show("sync declarative", res)

-- 同步属性式 (sync, array-style key)
res = assert(wx["v3/marketing/favor/coupon-stocks"]:post({ json = request() }))
show("sync property", res)
