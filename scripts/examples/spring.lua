-- scripts/examples/spring.lua: a spring campaign of three stocks (满100减10,
-- 满300减30, 满800减80) from one template: weekdays 10:00-22:00, one coupon
-- per person, budget derived from count × face value, request numbers derived
-- from the campaign and stock names so a second run creates nothing twice.
-- Try: quan check scripts/examples/spring.lua
local wechatpay = require "wechatpay"
local favor = require "wechatpay.favor"
local yuan, at, weekdays = favor.yuan, favor.at, favor.weekdays

local wx = wechatpay.client()

-- the campaign runs next month (computed so the example stays valid; write
-- yours literally: at "2027-03-01 00:00")
local t = os.date("!*t", os.time() + 8 * 3600)
local year, month = t.year + (t.month == 12 and 1 or 0), t.month % 12 + 1
local first = ("%04d-%02d-01"):format(year, month)
local last = ("%04d-%02d-28 23:59"):format(year, month)

local base = favor.stock({                        -- a template: plain API fields
  belong_merchant = wx.mchid, stock_type = "NORMAL", no_cash = false,
  available_begin_time = at(first .. " 00:00"), available_end_time = at(last),
  stock_use_rule = { max_coupons_per_user = 1, natural_person_limit = true, prevent_api_abuse = true },
  coupon_use_rule = {
    coupon_available_time = weekdays { 1, 2, 3, 4, 5, from = "10:00", to = "22:00" },
    available_merchants = { wx.mchid },
  },
  pattern_info = { description = "工作日10:00-22:00可用", background_color = "Color020" },
}, { campaign = "spring-" .. year })

for _, tier in ipairs { { "10", "100", 5000 }, { "30", "300", 2000 }, { "80", "800", 500 } } do
  local off, min, count = table.unpack(tier)
  local stock = base:with {                       -- deep-merge overrides into the template
    stock_name = ("满%s减%s"):format(min, off),
    stock_use_rule = { max_coupons = count },     -- max_amount derived: count × face value
    coupon_use_rule = { fixed_normal_coupon = { coupon_amount = yuan(off), transaction_minimum = yuan(min) } },
  }
  local res = assert(wx.v3.marketing.favor.couponStocks:post { json = stock })  -- validated, then signed
  print(stock.stock_name, stock.stock_use_rule.max_amount, stock.out_request_no, res.json.stock_id)
end
