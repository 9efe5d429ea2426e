-- tests.support.seed: the seed's create-stock request, written exactly as the
-- seed writes it (../shared/seed/000_3ec811569fb18aa1.txt), and the values
-- that fill what the seed leaves empty or zero.
local M = {}

-- verbatim() -> a fresh copy of the seed's literal `json` table
function M.verbatim()
  return {
    stock_name           = '微信支付代金券批次',
    available_begin_time = '2015-05-20T13:29:35.120+08:00',
    available_end_time   = '2015-05-20T13:29:35.120+08:00',
    stock_use_rule       = {
      max_coupons          = 0,
      max_amount           = 0,
      max_amount_by_day    = 0,
      max_coupons_per_user = 0,
      natural_person_limit = true,
      prevent_api_abuse    = true,
    },
    no_cash              = true,
    stock_type           = 'NORMAL',
    comment              = '零售批次',
    belong_merchant      = '98568865',
    pattern_info         = {
      description      = '',
      merchant_logo    = '',
      merchant_name    = '',
      background_color = 'Color010',
      coupon_image     = '',
    },
    coupon_use_rule      = {
      coupon_available_time = {
        available_begin_time         = '',
        available_end_time           = '',
        fix_available_time           = {
          available_week_day = { 0, 1, 2, 3, 4, 5, 6 },
          begin_time         = 3600,
          end_time           = 86399,
        },
        second_day_available         = true,
        available_time_after_receive = 0,
      },
      fixed_normal_coupon   = {
        coupon_amount       = 0,
        transaction_minimum = 0,
      },
      discount_coupon       = {
        discount_amount_max = 0,
        discount_percent    = 0,
        transaction_minimum = 0,
      },
      exchange_coupon       = {
        exchange_price      = 0,
        transaction_minimum = 0,
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
      available_merchants   = { '9856000' },
    },
    out_request_no       = '',
    ext_info             = '{"exinfo1":"1234","exinfo2":"3456"}',
  }
end

-- NOW: a fixed clock for specs (2026-11-28T00:00:00Z)
M.NOW = 1795824000

local function rfc3339(t)
  return os.date("!%Y-%m-%dT%H:%M:%S.000+08:00", t + 8 * 3600)
end
M.rfc3339 = rfc3339

-- filled([now]) -> the seed with every empty or zero value filled in (see
-- docs/campaigns.md, "The seed, filled"), valid at `now` (default: the real
-- clock): the stock runs from 00:00 (+08:00) two days after now, for 60 days
function M.filled(now)
  now = now or os.time()
  local day0 = (now + 8 * 3600) // 86400 * 86400 - 8 * 3600 + 2 * 86400
  local begin_time, end_time = rfc3339(day0), rfc3339(day0 + 60 * 86400 - 1)
  local s = M.verbatim()
  s.available_begin_time = begin_time
  s.available_end_time = end_time
  local u = s.stock_use_rule
  u.max_coupons, u.max_amount, u.max_amount_by_day, u.max_coupons_per_user = 1000, 500000, 50000, 1
  local p = s.pattern_info
  p.description = '全场满100元可用，每人限领1张'
  p.merchant_logo = 'https://qpic.cn/logo'
  p.merchant_name = '微信支付'
  p.coupon_image = 'https://qpic.cn/image'
  local t = s.coupon_use_rule.coupon_available_time
  t.available_begin_time = begin_time
  t.available_end_time = end_time
  -- available_time_after_receive stays 0: 0 means "not used", and a positive
  -- value may not be combined with fix_available_time
  local c = s.coupon_use_rule
  c.fixed_normal_coupon.coupon_amount, c.fixed_normal_coupon.transaction_minimum = 500, 10000
  c.discount_coupon.discount_amount_max, c.discount_coupon.discount_percent = 2000, 90
  c.discount_coupon.transaction_minimum = 10000
  c.exchange_coupon.exchange_price, c.exchange_coupon.transaction_minimum = 100, 10000
  s.out_request_no = '98568865202612010001'
  return s, day0
end

return M
