-- scripts/examples/lifecycle.lua: creates two stocks, starts them, and queries
-- each one back; safe to run again (nothing is created or started twice).
-- Try: quan check scripts/examples/lifecycle.lua
local wechatpay = require "wechatpay"
local favor = require "wechatpay.favor"
local yuan, at = favor.yuan, favor.at

local wx = wechatpay.client()
local day = 86400
-- tomorrow 00:00 Beijing time, for 14 days: whole days, so a second run the
-- same day sends the very same tables (a request number must never be reused
-- for a different request)
local begin = (os.time() + 8 * 3600) // day * day - 8 * 3600 + day

local base = favor.stock({
  belong_merchant = wx.mchid, stock_type = "NORMAL", no_cash = true,
  available_begin_time = at(begin), available_end_time = at(begin + 14 * day - 1),
  stock_use_rule = { max_coupons = 100, max_coupons_per_user = 2,
                     natural_person_limit = false, prevent_api_abuse = true },
  coupon_use_rule = { coupon_available_time = favor.daily { from = "09:00", to = "21:00" } },
}, { campaign = "lifecycle-" .. os.date("!%Y%m%d", begin) })

for _, s in ipairs { { "周末满50减5", "5", "50" }, { "周末满99减10", "10", "99" } } do
  local stock = base:with {
    stock_name = s[1],
    coupon_use_rule = { fixed_normal_coupon = { coupon_amount = yuan(s[2]), transaction_minimum = yuan(s[3]) } },
  }
  -- a second run gets the same stock back (same out_request_no) ...
  local created = assert(wx.v3.marketing.favor.couponStocks:post { json = stock })
  local id = created.json.stock_id
  local function query()
    return assert(wx.v3.marketing.favor.stocks._stock_id_:get {
      stock_id = id, query = { stock_creator_mchid = wx.mchid },
    }).json
  end
  -- ... and starts it only if it is not running yet
  if query().status == "unactivated" then
    assert(wx.v3.marketing.favor.stocks._stock_id_.start:post {
      stock_id = id, json = { stock_creator_mchid = wx.mchid },
    })
  end
  local got = query()
  print(stock.stock_name, id, got.start_time, got.status)
end
