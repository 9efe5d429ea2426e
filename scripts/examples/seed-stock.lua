-- scripts/examples/seed-stock.lua: the seed's create-stock request, written as
-- the API docs write it (a literal table), with the values the docs' example
-- leaves empty or zero filled in. Try: quan check scripts/examples/seed-stock.lua
local wechatpay = require "wechatpay"
local wx = wechatpay.client()

-- The stock runs from the next midnight in China for 30 days. Dates are
-- computed here only so the example stays valid whenever it runs; a real
-- campaign writes them literally, e.g. '2027-03-01T00:00:00.000+08:00'.
local day = 24 * 3600
local first = ((os.time() + 8 * 3600) // day + 1) * day - 8 * 3600
local function rfc3339(t) return os.date("!%Y-%m-%dT%H:%M:%S.000+08:00", t + 8 * 3600) end
local begin_time, end_time = rfc3339(first), rfc3339(first + 30 * day - 1)

local res = assert(wx.v3.marketing.favor.couponStocks:post {
  json = {
    stock_name           = '微信支付代金券批次',
    available_begin_time = begin_time,
    available_end_time   = end_time,
    stock_use_rule       = {
      max_coupons          = 1000,
      max_amount           = 500000,
      max_amount_by_day    = 50000,
      max_coupons_per_user = 1,
      natural_person_limit = true,
      prevent_api_abuse    = true,
    },
    no_cash              = true,
    stock_type           = 'NORMAL',
    comment              = '零售批次',
    belong_merchant      = wx.mchid,
    pattern_info         = {
      description      = '全场满100元可用，每人限领1张',
      merchant_logo    = 'https://qpic.cn/logo',
      merchant_name    = '微信支付',
      background_color = 'Color010',
      coupon_image     = 'https://qpic.cn/image',
    },
    coupon_use_rule      = {
      coupon_available_time = {
        available_begin_time         = begin_time,
        available_end_time           = end_time,
        fix_available_time           = {
          available_week_day = { 0, 1, 2, 3, 4, 5, 6 },
          begin_time         = 3600,
          end_time           = 86399,
        },
        second_day_available         = true,
        available_time_after_receive = 0,
      },
      fixed_normal_coupon   = {
        coupon_amount       = 500,
        transaction_minimum = 10000,
      },
      discount_coupon       = {
        discount_amount_max = 2000,
        discount_percent    = 90,
        transaction_minimum = 10000,
      },
      exchange_coupon       = {
        exchange_price      = 100,
        transaction_minimum = 10000,
      },
      goods_tag             = { '123321' },
      limit_pay             = { 'ICBC_CREDIT' },
      limit_card            = {
        name = '精粹白金',
        bin  = { '62123456' },
      },
      trade_type            = { 'MICROAPP' },
      available_items       = { '123321' },
      unavailable_items     = { '789987' },
      available_merchants   = { wx.mchid },
    },
    out_request_no       = wx.mchid .. os.date('!%Y%m%d', first + 8 * 3600) .. '0001',
    ext_info             = '{"exinfo1":"1234","exinfo2":"3456"}',
  },
})
print("stock_id: " .. res.json.stock_id)
print("create_time: " .. res.json.create_time)
