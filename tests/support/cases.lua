-- tests.support.cases: one invalid create-stock table per type and rule.
-- Each case mutates the filled seed (tests.support.seed.filled(now)):
--   { name, mutate = function(body, now, day0) end, path = field path of the
--     finding, rule = Lua pattern the rule text matches }
-- Shared by validate_spec (validate.request) and check_spec (`quan check`).
local DAY = 86400
local function t(epoch) return require("tests.support.seed").rfc3339(epoch) end

local cases = {
  -- types
  { name = "string given a number", path = "stock_name", rule = "must be a string",
    mutate = function(b) b.stock_name = 12 end },
  { name = "integer given a string", path = "stock_use_rule.max_coupons", rule = "must be an integer",
    mutate = function(b) b.stock_use_rule.max_coupons = "1000" end },
  { name = "integer given a fraction", path = "coupon_use_rule.fixed_normal_coupon.coupon_amount",
    rule = "whole number", mutate = function(b) b.coupon_use_rule.fixed_normal_coupon.coupon_amount = 500.5 end },
  { name = "boolean given a string", path = "no_cash", rule = "must be a boolean",
    mutate = function(b) b.no_cash = "true" end },
  { name = "object given a string", path = "stock_use_rule", rule = "must be an object",
    mutate = function(b) b.stock_use_rule = "none" end },
  { name = "object given an array", path = "pattern_info", rule = "must be an object",
    mutate = function(b) b.pattern_info = { "x" } end },
  { name = "array given a string", path = "coupon_use_rule.goods_tag", rule = "must be an array",
    mutate = function(b) b.coupon_use_rule.goods_tag = "123321" end },
  { name = "array given an object", path = "coupon_use_rule.available_items", rule = "must be an array",
    mutate = function(b) b.coupon_use_rule.available_items = { sku = "1" } end },
  { name = "array item of the wrong type", path = "coupon_use_rule.limit_card.bin[1]", rule = "must be a string",
    mutate = function(b) b.coupon_use_rule.limit_card.bin = { 62123456 } end },
  -- required, unknown, enums
  { name = "required field missing", path = "stock_name", rule = "^required$",
    mutate = function(b) b.stock_name = nil end },
  { name = "nested required field missing", path = "stock_use_rule.prevent_api_abuse", rule = "^required$",
    mutate = function(b) b.stock_use_rule.prevent_api_abuse = nil end },
  { name = "required object missing", path = "coupon_use_rule", rule = "^required$",
    mutate = function(b) b.coupon_use_rule = nil end },
  { name = "pattern_info without its description", path = "pattern_info.description", rule = "^required$",
    mutate = function(b) b.pattern_info.description = nil end },
  { name = "available_time_after_receive above a day", rule = "at most 1440",
    path = "coupon_use_rule.coupon_available_time.available_time_after_receive",
    mutate = function(b) b.coupon_use_rule.coupon_available_time.available_time_after_receive = 1441 end },
  { name = "unknown field", path = "stock_nmae", rule = "unknown field %(did you mean stock_name%?%)",
    mutate = function(b) b.stock_nmae = "x" end },
  { name = "unknown nested field", path = "stock_use_rule.max_coupon", rule = "unknown field",
    mutate = function(b) b.stock_use_rule.max_coupon = 5 end },
  { name = "stock_type not in the enum", path = "stock_type", rule = "did you mean EXCHAHGE",
    mutate = function(b) b.stock_type = "EXCHANGE" end },
  { name = "background_color not in the enum", path = "pattern_info.background_color", rule = "must be one of",
    mutate = function(b) b.pattern_info.background_color = "Color011" end },
  { name = "jump_target not in the enum", path = "pattern_info.jump_target", rule = "must be one of",
    mutate = function(b) b.pattern_info.jump_target = "HOME" end },
  { name = "trade_type item not in the enum", path = "coupon_use_rule.trade_type[2]", rule = "must be one of",
    mutate = function(b) b.coupon_use_rule.trade_type = { "MICROAPP", "APP" } end },
  { name = "week day 7", path = "coupon_use_rule.coupon_available_time.fix_available_time.available_week_day[1]",
    rule = "must be one of 0, 1", mutate = function(b)
      b.coupon_use_rule.coupon_available_time.fix_available_time.available_week_day = { 7 } end },
  { name = "week day repeated",
    path = "coupon_use_rule.coupon_available_time.fix_available_time.available_week_day[3]",
    rule = "must not repeat", mutate = function(b)
      b.coupon_use_rule.coupon_available_time.fix_available_time.available_week_day = { 1, 2, 1 } end },
  -- limits
  { name = "max_coupons below 5", path = "stock_use_rule.max_coupons", rule = "at least 5",
    mutate = function(b) b.stock_use_rule.max_coupons = 4; b.stock_use_rule.max_amount = 2000 end },
  { name = "max_coupons above 10,000,000", path = "stock_use_rule.max_coupons", rule = "at most 10000000",
    mutate = function(b) b.stock_use_rule.max_coupons = 10000001; b.stock_use_rule.max_amount = 5000000500 end },
  { name = "max_coupons_per_user 0", path = "stock_use_rule.max_coupons_per_user", rule = "at least 1",
    mutate = function(b) b.stock_use_rule.max_coupons_per_user = 0 end },
  { name = "max_coupons_per_user 61", path = "stock_use_rule.max_coupons_per_user", rule = "at most 60",
    mutate = function(b) b.stock_use_rule.max_coupons_per_user = 61 end },
  { name = "max_amount above 1亿元", path = "stock_use_rule.max_amount", rule = "at most 10000000000",
    mutate = function(b) b.stock_use_rule.max_amount = 10000000001 end },
  { name = "coupon_amount 1 分", path = "coupon_use_rule.fixed_normal_coupon.coupon_amount", rule = "at least 2",
    mutate = function(b) b.coupon_use_rule.fixed_normal_coupon.coupon_amount = 1; b.stock_use_rule.max_amount = 1000 end },
  { name = "coupon_amount above 1000 元", path = "coupon_use_rule.fixed_normal_coupon.coupon_amount",
    rule = "at most 100000", mutate = function(b)
      b.coupon_use_rule.fixed_normal_coupon.coupon_amount = 100001
      b.coupon_use_rule.fixed_normal_coupon.transaction_minimum = 200000
      b.stock_use_rule.max_amount = 100001000 end },
  { name = "stock_name of 10 Chinese characters", path = "stock_name", rule = "at most 9 Chinese characters",
    mutate = function(b) b.stock_name = "微信支付代金券批次十" end },
  { name = "stock_name of 21 letters", path = "stock_name", rule = "or 20 letters",
    mutate = function(b) b.stock_name = string.rep("a", 21) end },
  { name = "stock_name with a comma", path = "stock_name", rule = "must not contain",
    mutate = function(b) b.stock_name = "满100,减10" end },
  { name = "stock_name with a bar", path = "stock_name", rule = "must not contain",
    mutate = function(b) b.stock_name = "a|b" end },
  { name = "empty stock_name", path = "stock_name", rule = "must not be empty",
    mutate = function(b) b.stock_name = "" end },
  { name = "comment of 61 characters", path = "comment", rule = "at most 60 characters",
    mutate = function(b) b.comment = string.rep("备", 61) end },
  { name = "merchant_name of 13 Chinese characters", path = "pattern_info.merchant_name",
    rule = "at most 12 Chinese", mutate = function(b) b.pattern_info.merchant_name = string.rep("商", 13) end },
  { name = "merchant_logo not a URL", path = "pattern_info.merchant_logo", rule = "URL",
    mutate = function(b) b.pattern_info.merchant_logo = "logo.png" end },
  { name = "out_request_no with a space", path = "out_request_no", rule = "letters, digits",
    mutate = function(b) b.out_request_no = "2026 0001" end },
  { name = "out_request_no of 129 characters", path = "out_request_no", rule = "at most 128",
    mutate = function(b) b.out_request_no = string.rep("1", 129) end },
  { name = "ext_info not JSON", path = "ext_info", rule = "JSON",
    mutate = function(b) b.ext_info = "{exinfo1:1}" end },
  { name = "goods_tag empty", path = "coupon_use_rule.goods_tag", rule = "must not be empty",
    mutate = function(b) b.coupon_use_rule.goods_tag = {} end },
  { name = "an empty week-day list (sent as {})",
    path = "coupon_use_rule.coupon_available_time.fix_available_time.available_week_day",
    rule = "is sent as {}", mutate = function(b)
      b.coupon_use_rule.coupon_available_time.fix_available_time.available_week_day = {} end },
  { name = "goods_tag of 51 tags", path = "coupon_use_rule.goods_tag", rule = "at most 50 items",
    mutate = function(b) local t = {} for i = 1, 51 do t[i] = "t" .. i end b.coupon_use_rule.goods_tag = t end },
  { name = "goods_tag with a dash", path = "coupon_use_rule.goods_tag[1]", rule = "letters, digits, _",
    mutate = function(b) b.coupon_use_rule.goods_tag = { "a-b" } end },
  { name = "limit_pay of 2 methods", path = "coupon_use_rule.limit_pay", rule = "exactly 1 item",
    mutate = function(b) b.coupon_use_rule.limit_pay = { "ICBC_CREDIT", "CMB_CREDIT" } end },
  { name = "bin of 5 digits", path = "coupon_use_rule.limit_card.bin[1]", rule = "at least 6",
    mutate = function(b) b.coupon_use_rule.limit_card.bin = { "62123" } end },
  { name = "bin of 10 digits", path = "coupon_use_rule.limit_card.bin[2]", rule = "at most 9",
    mutate = function(b) b.coupon_use_rule.limit_card.bin = { "621234", "6212345678" } end },
  { name = "11 bins", path = "coupon_use_rule.limit_card.bin", rule = "at most 10 items",
    mutate = function(b) local t = {} for i = 1, 11 do t[i] = "6212340" .. i end b.coupon_use_rule.limit_card.bin = t end },
  { name = "limit_card without bin", path = "coupon_use_rule.limit_card.bin", rule = "^required$",
    mutate = function(b) b.coupon_use_rule.limit_card.bin = nil end },
  { name = "51 available_items", path = "coupon_use_rule.available_items", rule = "at most 50 items",
    mutate = function(b) local t = {} for i = 1, 51 do t[i] = "sku" .. i end b.coupon_use_rule.available_items = t end },
  { name = "available_merchants item of 21 characters", path = "coupon_use_rule.available_merchants[1]",
    rule = "at most 20", mutate = function(b) b.coupon_use_rule.available_merchants = { string.rep("9", 21) } end },
  { name = "discount_percent above 100", path = "coupon_use_rule.discount_coupon.discount_percent",
    rule = "at most 100", mutate = function(b) b.coupon_use_rule.discount_coupon.discount_percent = 101 end },
  { name = "begin_time above a day", path = "coupon_use_rule.coupon_available_time.fix_available_time.begin_time",
    rule = "at most 86400", mutate = function(b)
      b.coupon_use_rule.coupon_available_time.fix_available_time.begin_time = 86401 end },
  { name = "end_time of 86400", path = "coupon_use_rule.coupon_available_time.fix_available_time.end_time",
    rule = "at most 86399", mutate = function(b)
      b.coupon_use_rule.coupon_available_time.fix_available_time.end_time = 86400 end },
  -- times
  { name = "time without an offset", path = "available_begin_time", rule = "missing the offset",
    mutate = function(b) b.available_begin_time = b.available_begin_time:gsub("%+08:00$", "") end },
  { name = "time in Z", path = "available_end_time", rule = "not Z",
    mutate = function(b) b.available_end_time = b.available_end_time:gsub("%+08:00$", "Z") end },
  { name = "local time, not RFC 3339", path = "available_begin_time", rule = "RFC 3339",
    mutate = function(b) b.available_begin_time = "2026-12-01 10:00" end },
  { name = "no such date", path = "available_end_time", rule = "no such date",
    mutate = function(b) b.available_end_time = "2027-02-30T00:00:00+08:00" end },
  -- rules
  { name = "max_amount is not max_coupons × coupon_amount", path = "stock_use_rule.max_amount",
    rule = "must equal max_coupons × coupon_amount = 1000 × 500 = 500000",
    mutate = function(b) b.stock_use_rule.max_amount = 400000 end },
  { name = "transaction_minimum equal to coupon_amount",
    path = "coupon_use_rule.fixed_normal_coupon.transaction_minimum", rule = "greater than coupon_amount",
    mutate = function(b) b.coupon_use_rule.fixed_normal_coupon.transaction_minimum = 500 end },
  { name = "max_coupons_per_user above max_coupons", path = "stock_use_rule.max_coupons_per_user",
    rule = "must not exceed max_coupons", mutate = function(b)
      b.stock_use_rule.max_coupons = 5; b.stock_use_rule.max_amount = 2500; b.stock_use_rule.max_amount_by_day = 2500
      b.stock_use_rule.max_coupons_per_user = 6 end },
  { name = "max_amount_by_day above max_amount", path = "stock_use_rule.max_amount_by_day",
    rule = "must not exceed max_amount", mutate = function(b) b.stock_use_rule.max_amount_by_day = 500001 end },
  { name = "begin in the past", path = "available_begin_time", rule = "in the past",
    mutate = function(b, now)
      b.available_begin_time = t(now - DAY)
      b.coupon_use_rule.coupon_available_time.available_begin_time = t(now - DAY) end },
  { name = "begin more than 365 days ahead", path = "available_begin_time", rule = "365 days",
    mutate = function(b, now)
      b.available_begin_time = t(now + 366 * DAY); b.available_end_time = t(now + 367 * DAY)
      b.coupon_use_rule.coupon_available_time = { fix_available_time = { begin_time = 0 } } end },
  { name = "end before begin", path = "available_end_time", rule = "later than available_begin_time",
    mutate = function(b, _, day0)
      b.available_end_time = t(day0 - 1)
      b.coupon_use_rule.coupon_available_time = { fix_available_time = { begin_time = 0 } } end },
  { name = "span of 91 days", path = "available_end_time", rule = "at most 90 days",
    mutate = function(b, _, day0)
      b.available_end_time = t(day0 + 91 * DAY)
      b.coupon_use_rule.coupon_available_time.available_end_time = t(day0 + 91 * DAY) end },
  { name = "day window begin after end",
    path = "coupon_use_rule.coupon_available_time.fix_available_time.end_time", rule = "later than begin_time",
    mutate = function(b)
      local f = b.coupon_use_rule.coupon_available_time.fix_available_time
      f.begin_time, f.end_time = 72000, 36000 end },
  { name = "coupon window outside the stock's", path = "coupon_use_rule.coupon_available_time.available_begin_time",
    rule = "within the stock's available time", mutate = function(b, _, day0)
      b.coupon_use_rule.coupon_available_time.available_begin_time = t(day0 - DAY) end },
  { name = "coupon window end before its begin",
    path = "coupon_use_rule.coupon_available_time.available_end_time",
    rule = "later than coupon available_begin_time", mutate = function(b, _, day0)
      local c = b.coupon_use_rule.coupon_available_time
      c.available_begin_time, c.available_end_time = t(day0 + 2 * DAY), t(day0 + DAY) end },
  { name = "valid-after-receive together with a fixed window",
    path = "coupon_use_rule.coupon_available_time.available_time_after_receive",
    rule = "not be combined with fix_available_time", mutate = function(b)
      b.coupon_use_rule.coupon_available_time.available_time_after_receive = 1440 end },
  { name = "NORMAL without fixed_normal_coupon", path = "coupon_use_rule.fixed_normal_coupon",
    rule = "required when stock_type is NORMAL", mutate = function(b) b.coupon_use_rule.fixed_normal_coupon = nil end },
  { name = "MINI_PROGRAM without appid", path = "pattern_info.mini_program_appid",
    rule = "required when jump_target is MINI_PROGRAM", mutate = function(b)
      b.pattern_info.jump_target = "MINI_PROGRAM"; b.pattern_info.mini_program_path = "pages/index" end },
}

return cases
