-- wechatpay.favor builders: money, times, windows, templates, request numbers.
local favor = require "wechatpay.favor"
local validate = require "wechatpay.favor.validate"
local schema = require "wechatpay.favor.schema"
local seed = require "tests.support.seed"
local sh = require "tests.support.sh"

local NOW = seed.NOW

describe("favor.yuan", function()
  local good = {
    { "12.34", 1234 }, { "0.01", 1 }, { "0.1", 10 }, { "12", 1200 }, { "12.340", 1234 }, { "8.00", 800 },
    { "0", 0 }, { "99999999.99", 9999999999 }, { 12, 1200 }, { 12.34, 1234 }, { 0.1 + 0.2, 30 },
    { 19.99, 1999 }, { 1.1 * 3, 330 }, { 0.07, 7 }, { 1e8, 10000000000 },
  }
  for _, c in ipairs(good) do
    it(("turns %s into %d 分"):format(tostring(c[1]), c[2]), function()
      local v = favor.yuan(c[1])
      assert.equal(c[2], v)
      assert.equal("integer", math.type(v))
    end)
  end

  local bad = {
    { "12.345", "favor.yuan: \"12.345\" has a fraction of a fen %(at most 2 decimals%)" },
    { "0.001", "fraction of a fen" },
    { 12.345, "favor.yuan: 12.345 has a fraction of a fen" },
    { 1.005, "fraction of a fen" },
    { "-1", "is not an amount" }, { -1, "must not be negative" },
    { "1,000", "is not an amount" }, { "¥5", "is not an amount" }, { ".5", "is not an amount" },
    { "", "is not an amount" }, { " 5 ", "favor.yuan: \" 5 \" is not an amount" }, { "5\n", "is not an amount" },
    { 0 / 0, "finite" }, { math.huge, "finite" },
    { nil, "must be a string or number, got nil" }, { {}, "must be a string or number, got table" },
  }
  for _, c in ipairs(bad) do
    it("refuses " .. tostring(c[1]), function()
      local ok, err = pcall(favor.yuan, c[1])
      assert.is_false(ok)
      assert.matches(c[2], err)
    end)
  end

  it("raises at the caller's line", function()
    local ok, err = pcall(function() local v = favor.yuan("1.234"); return v end)
    assert.is_false(ok)
    assert.matches("favor_spec.lua:%d+: favor.yuan", err)
  end)
end)

describe("favor.at", function()
  it("turns local time into RFC 3339 with +08:00", function()
    assert.equal("2026-11-11T10:00:00+08:00", favor.at "2026-11-11 10:00")
    assert.equal("2026-11-11T10:00:30+08:00", favor.at "2026-11-11 10:00:30")
    assert.equal("2026-11-11T00:00:00+08:00", favor.at "2026-11-11")
    assert.equal("2026-11-11T10:00:00+08:00", favor.at "2026-11-11T10:00")
    assert.equal("2026-11-11T10:00:00+09:00", favor.at("2026-11-11 10:00", "+09:00"))
    assert.equal("2028-02-29T23:59:59+08:00", favor.at "2028-02-29 23:59:59")
  end)

  it("formats epoch seconds in Beijing time, and round-trips through the validator", function()
    assert.equal("2026-11-28T08:00:00+08:00", favor.at(NOW))
    assert.equal(NOW, validate.rfc3339(favor.at(NOW)))
    assert.equal(NOW, validate.rfc3339(favor.at(NOW, "-05:30")))
  end)

  for _, c in ipairs {
    { "2026-02-29 10:00", "no such date" }, { "2026-13-01 10:00", "no such date" },
    { "2026-11-11 24:00", "no such time of day" }, { "2026-11-11 10:60", "no such time of day" },
    { "11/11/2026", "expected \"YYYY%-MM%-DD HH:MM\"" }, { "2026-11-11 10", "expected" },
    { true, "expected a time like" },
  } do
    it("refuses " .. tostring(c[1]), function()
      local ok, err = pcall(favor.at, c[1])
      assert.is_false(ok)
      assert.matches(c[2], err)
    end)
  end

  for _, c in ipairs {
    { 1e18, "favor.at: epoch 1e%+18 is outside the years 1970..9999 at %+08:00" },
    { -1e15, "favor.at: epoch %-1e%+15 is outside the years 1970..9999" },
    { 253402300799, "favor.at: epoch 253402300799 is outside the years 1970..9999" }, -- 10000-01-01 at +08:00
    { "1969-12-31 23:59", "favor.at: \"1969%-12%-31 23:59\" is outside the years 1970..9999" },
  } do
    it("refuses a time outside the years 1970..9999: " .. tostring(c[1]), function()
      local ok, err = pcall(function() local v = favor.at(c[1]); return v end)
      assert.is_false(ok)
      assert.matches("favor_spec.lua:%d+: " .. c[2], err)
    end)
  end

  it("formats the first and last seconds of the years 1970..9999", function()
    assert.equal("1970-01-01T00:00:00+08:00", favor.at(-8 * 3600))
    assert.equal("9999-12-31T23:59:59+08:00", favor.at(253402300799 - 8 * 3600))
  end)

  it("refuses a malformed offset", function()
    assert.has_error(function() favor.at("2026-11-11 10:00", "+8") end,
      "favor.at: offset must be like \"+08:00\", got \"+8\"")
  end)
end)

describe("favor.weekdays and favor.daily", function()
  it("build coupon_available_time.fix_available_time", function()
    assert.same({ fix_available_time = { available_week_day = { 1, 2, 3, 4, 5 }, begin_time = 36000, end_time = 79200 } },
      favor.weekdays { 1, 2, 3, 4, 5, from = "10:00", to = "22:00" })
    assert.same({ fix_available_time = { available_week_day = { 0, 6 }, begin_time = 0, end_time = 86399 } },
      favor.weekdays { 6, 0 })
    assert.same({ fix_available_time = { available_week_day = { 0, 1, 2, 3, 4, 5, 6 }, begin_time = 34200, end_time = 86399 } },
      favor.daily { from = "9:30", to = "24:00" })
    assert.same({ fix_available_time = { available_week_day = { 0, 1, 2, 3, 4, 5, 6 }, begin_time = 0, end_time = 86399 } },
      favor.daily())
    assert.equal(3661, favor.seconds "01:01:01")
  end)

  it("produce windows the validator accepts", function()
    local b = (seed.filled(NOW))
    b.coupon_use_rule.coupon_available_time = favor.weekdays { 1, 2, 3, 4, 5, from = "10:00", to = "22:00" }
    assert.is_true((validate.request("POST", "/v3/marketing/favor/coupon-stocks", b, { now = NOW })))
  end)

  for _, c in ipairs {
    { function() local w = favor.daily { from = "22:00", to = "10:00" }; return w end, "favor.daily: from" },
    { function() local w = favor.weekdays { 1, from = "22:00", to = "10:00" }; return w end, "favor.weekdays: from" },
    { function() local w = favor.daily { to = "25:00" }; return w end, "favor.daily: no such time" },
    { function() local w = favor.weekdays { 1, from = "x" }; return w end, "favor.weekdays: time of day" },
    { function() local n = favor.seconds "x"; return n end, "favor.seconds: time of day" },
  } do
    it("raises at the caller's line: " .. c[2], function()
      local ok, err = pcall(c[1])
      assert.is_false(ok)
      assert.matches("favor_spec.lua:%d+: " .. c[2], err)
    end)
  end

  for _, c in ipairs {
    { function() favor.weekdays { 7 } end, "favor.weekdays: day 1 must be 0..6 %(0 = Sunday%), got 7" },
    { function() favor.weekdays { 1, 1 } end, "favor.weekdays: day 1 given twice" },
    { function() favor.weekdays {} end, "favor.weekdays: no days given" },
    { function() favor.weekdays { 1, form = "10:00" } end, "favor.weekdays: unknown option 'form'" },
    { function() favor.weekdays { 1, from = "22:00", to = "10:00" } end, "from %(22:00%) must be earlier than to %(10:00%)" },
    { function() favor.weekdays { 1, from = "10" } end, "time of day must be \"HH:MM\", got \"10\"" },
    { function() favor.weekdays "mon" end, "favor.weekdays: expected a table" },
    { function() favor.daily { from = "25:00" } end, "favor.daily: no such time of day \"25:00\"" },
    { function() favor.daily { until_ = 1 } end, "favor.daily: unknown option 'until_'" },
    { function() favor.after_receive(0) end, "favor.after_receive: minutes must be a positive integer" },
  } do
    it("refuses: " .. c[2], function()
      local ok, err = pcall(c[1])
      assert.is_false(ok)
      assert.matches(c[2], err)
    end)
  end
end)

describe("favor.stock templates", function()
  local function base()
    return favor.stock({
      belong_merchant = "1900000001", stock_type = "NORMAL", no_cash = false,
      stock_use_rule = { max_coupons_per_user = 1, natural_person_limit = true, prevent_api_abuse = true },
      coupon_use_rule = {
        coupon_available_time = favor.weekdays { 1, 2, 3, 4, 5, from = "10:00", to = "22:00" },
        goods_tag = { "a", "b" },
      },
    }, { campaign = "spring-2027" })
  end

  it("deep-merges overrides, derives max_amount and out_request_no", function()
    local s = base():with {
      stock_name = "满100减10",
      stock_use_rule = { max_coupons = 5000 },
      coupon_use_rule = { fixed_normal_coupon = { coupon_amount = favor.yuan "10", transaction_minimum = favor.yuan "100" } },
    }
    assert.equal(5000 * 1000, s.stock_use_rule.max_amount)
    assert.equal(1, s.stock_use_rule.max_coupons_per_user)
    assert.same({ 1, 2, 3, 4, 5 }, s.coupon_use_rule.coupon_available_time.fix_available_time.available_week_day)
    assert.equal(favor.request_no("spring-2027", "满100减10", "1900000001"), s.out_request_no)
    assert.matches("^1900000001%-%x+$", s.out_request_no)
  end)

  it("replaces arrays instead of merging them by index", function()
    local s = base():with { coupon_use_rule = { goods_tag = { "c" },
      coupon_available_time = { fix_available_time = { available_week_day = { 6 } } } } }
    assert.same({ "c" }, s.coupon_use_rule.goods_tag)
    assert.same({ 6 }, s.coupon_use_rule.coupon_available_time.fix_available_time.available_week_day)
    assert.equal(36000, s.coupon_use_rule.coupon_available_time.fix_available_time.begin_time)
  end)

  it("re-derives after an override and keeps an explicit max_amount", function()
    local a = base():with { stock_name = "a", stock_use_rule = { max_coupons = 10 },
      coupon_use_rule = { fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 200 } } }
    local b = a:with { stock_name = "b", stock_use_rule = { max_coupons = 20 } }
    assert.equal(1000, a.stock_use_rule.max_amount)
    assert.equal(2000, b.stock_use_rule.max_amount)
    assert.are_not.equal(a.out_request_no, b.out_request_no)
    local c = b:with { stock_use_rule = { max_amount = 1234 } }
    assert.equal(1234, c.stock_use_rule.max_amount)
    assert.equal(1234, c:with { stock_name = "c" }.stock_use_rule.max_amount)
    local d = b:with { out_request_no = "mine-1" }
    assert.equal("mine-1", d.out_request_no)
  end)

  it("derives no max_amount from a count whose budget would not fit an integer", function()
    -- a product past 2^63 wraps: max_coupons = maxinteger at 100 分 became a budget of -100 分
    local huge = base():with { stock_use_rule = { max_coupons = math.maxinteger },
      coupon_use_rule = { fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 200 } } }
    assert.is_nil(huge.stock_use_rule.max_amount)
    local ok, findings = validate.request("POST", "/v3/marketing/favor/coupon-stocks", huge:plain(), { now = NOW })
    assert.is_false(ok)
    local text = validate.format(findings)
    assert.matches("stock_use_rule.max_coupons (发放总上限): must be at most 10000000 coupons", text, 1, true)
    assert.matches("stock_use_rule.max_amount (总预算): required", text, 1, true)
  end)

  it("never changes the template, and unset removes a field", function()
    local t = base()
    local before = require("cjson").encode(t)
    local s = t:with { coupon_use_rule = { goods_tag = favor.unset }, stock_use_rule = { max_coupons = 9 } }
    assert.is_nil(s.coupon_use_rule.goods_tag)
    assert.equal(before, require("cjson").encode(t))
    assert.is_nil(getmetatable(s:plain()))
  end)

  it("derives the same request number on every run, from campaign, name and merchant", function()
    local a = favor.request_no("spring-2027", "满100减10", "1900000001")
    assert.equal(a, favor.request_no("spring-2027", "满100减10", "1900000001"))
    assert.are_not.equal(a, favor.request_no("spring-2028", "满100减10", "1900000001"))
    assert.are_not.equal(a, favor.request_no("spring-2027", "满100减20", "1900000001"))
    assert.are_not.equal(a, favor.request_no("spring-2027", "满100减10", "1900000002"))
    local node = schema.field(schema.by_id.create_stock.body, "out_request_no")
    for _, n in ipairs { a, favor.request_no("x", "y") } do
      assert.is_true(validate.check(node, n), n)
    end
    -- the digest is SHA-256, cross-checked with the openssl command line
    local hex = sh.run("printf 'abc' | openssl dgst -sha256 -r")
    assert.equal(hex:match("^%x+"), favor._sha256("abc"))
  end)

  it("takes a table shared by two fields (no cycle)", function()
    local tags = { "a" }
    local m = favor.merge({ x = tags }, { y = tags })
    assert.same({ x = { "a" }, y = { "a" } }, m)
    assert.same({ "a" }, favor.stock({ p = tags, q = { tags } }).q[1])
  end)

  it("turns a template into a request the validator accepts", function()
    local t = seed.filled(NOW)
    local s = favor.stock(t):with { stock_use_rule = { max_amount = favor.unset, max_amount_by_day = favor.unset } }
    assert.equal(500000, s.stock_use_rule.max_amount)
    assert.is_true((validate.request("POST", "/v3/marketing/favor/coupon-stocks", s, { now = NOW })))
  end)

  for _, c in ipairs {
    { function() favor.stock "x" end, "favor.stock: fields must be a table, got string" },
    { function() favor.stock({}, { campain = "x" }) end, "favor.stock: unknown option 'campain' %(campaign%)" },
    { function() favor.stock({}, { campaign = 1 }) end, "favor.stock: campaign must be a non%-empty string" },
    { function() favor.stock({}):with "x" end, "stock:with: overrides must be a table, got string" },
    { function() local s = favor.stock {} s.with { } end, "use stock:with" },
    { function() favor.request_no("", "a") end, "favor.request_no: campaign must be a non%-empty string" },
    { function() favor.merge(1, {}) end, "favor.merge: base must be a table, got number" },
    { function() local t = { a = {} } t.a.b = t; local s = favor.stock(t); return s end,
      "favor_spec.lua:%d+: favor.stock: fields holds a cycle: fields.a.b refers back to fields" },
    { function() local t = { a = { b = {} } } t.a.b.c = t.a; local m = favor.merge({}, t); return m end,
      "favor_spec.lua:%d+: favor.merge: overrides holds a cycle: overrides.a.b.c refers back to overrides.a" },
    { function() local t = { x = 1 } t.y = t; local m = favor.merge(t, {}); return m end,
      "favor.merge: base holds a cycle: base.y refers back to base" },
    { function() local s = favor.stock { x = {} } s.x.y = s; local r = s:with {}; return r end,
      "favor_spec.lua:%d+: stock:with: stock holds a cycle: stock.x.y refers back to stock" },
    { function() local o = {} o[1] = o; local r = favor.stock {}:with(o); return r end,
      "stock:with: overrides holds a cycle: overrides.1 refers back to overrides" },
  } do
    it("refuses: " .. c[2], function()
      local ok, err = pcall(c[1])
      assert.is_false(ok)
      assert.matches(c[2], err)
    end)
  end
end)

describe("docs/campaigns.md", function()
  local md = require "tests.support.mdexamples"
  for i, b in ipairs(md.blocks("docs/campaigns.md")) do
    if not b.code:find("wechatpay.client", 1, true) then   -- those run under quan check (check_spec)
      it("runs the example at line " .. b.line, function()
        local printed = {}
        md.run("docs/campaigns.md", i, setmetatable({ print = function(...) printed[#printed + 1] = { ... } end },
          { __index = _G }))
      end)
    end
  end
end)

describe("wechatpay.favor", function()
  it("adds no globals", function()
    local out = sh.run(sh.quan .. [[ -e 'local b = {} for k in pairs(_G) do b[k] = true end
      local f = require "wechatpay.favor"; f.stock({}):with{}; f.yuan("1"); f.weekdays{1}
      for k in pairs(_G) do if not b[k] then print(k) end end']])
    assert.equal("", out)
  end)
end)
