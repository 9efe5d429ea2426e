-- wechatpay.favor.validate and wechatpay.favor.schema: every type and rule rejected with
-- the right field path; the seed validates once filled.
local validate = require "wechatpay.favor.validate"
local schema = require "wechatpay.favor.schema"
local seed = require "tests.support.seed"
local cases = require "tests.support.cases"

local NOW = seed.NOW
local CREATE = "/v3/marketing/favor/coupon-stocks"

local function findings_of(body, opts)
  local ok, f = validate.request("POST", CREATE, body, opts or { now = NOW })
  return ok, f or {}
end

local function has(findings, path, rule)
  for _, f in ipairs(findings) do
    if f.path == path and (not rule or f.rule:find(rule)) then return f end
  end
  return nil
end

describe("the schema", function()
  it("describes every favor endpoint with method, path, title and a body, query or response", function()
    local ids = {}
    for _, ep in ipairs(schema.endpoints) do
      assert.is_string(ep.id); assert.is_string(ep.title); assert.matches("^/v3/marketing/favor/", ep.path)
      assert.truthy(ep.method == "GET" or ep.method == "POST")
      assert.truthy(ep.body or ep.query or ep.params or ep.meta)
      assert.truthy(ep.response)
      ids[ep.id] = true
    end
    for _, id in ipairs { "create_stock", "start_stock", "pause_stock", "restart_stock", "stop_stock",
      "query_stock", "list_stocks", "send_coupon", "query_coupon", "list_user_coupons", "list_merchants",
      "list_items", "set_callbacks", "query_callbacks", "upload_image", "use_flow", "refund_flow" } do
      assert.is_true(ids[id], id)
    end
  end)

  it("has every field of the seed, at its depth, with the seed's description", function()
    local body = schema.by_id.create_stock.body
    local function walk(t, prefix)
      for k, v in pairs(t) do
        local p = prefix .. k
        local node = schema.field(body, p)
        assert.is_table(node, p)
        assert.is_string(node.desc, p)
        if type(v) == "table" and v[1] == nil then walk(v, p .. ".") end
      end
    end
    walk(seed.verbatim(), "")
    assert.equal("门槛", schema.field(body, "coupon_use_rule.fixed_normal_coupon.transaction_minimum").desc)
    assert.equal("批次名称", schema.field(body, "stock_name").desc)
    assert.equal("integer", schema.field(body, "coupon_use_rule.coupon_available_time.fix_available_time.available_week_day[]").type)
    for _, newer in ipairs { "pattern_info.jump_target", "pattern_info.mini_program_appid",
      "pattern_info.mini_program_path", "coupon_use_rule.combine_use" } do
      assert.is_table(schema.field(body, newer), newer)
    end
  end)

  it("finds endpoints by template, concrete path, query string or URL", function()
    local ep, vars = schema.find("POST", "/v3/marketing/favor/stocks/98065001/start")
    assert.equal("start_stock", ep.id); assert.same({ stock_id = "98065001" }, vars)
    ep, vars = schema.find("get", "https://api.mch.weixin.qq.com/v3/marketing/favor/users/o1/coupons/c9?appid=wx1")
    assert.equal("query_coupon", ep.id); assert.same({ openid = "o1", coupon_id = "c9" }, vars)
    assert.equal("query_stock", schema.find("GET", "/v3/marketing/favor/stocks/{stock_id}").id)
    assert.equal("list_stocks", schema.find("GET", "v3/marketing/favor/stocks?offset=0").id)
    assert.is_nil(schema.find("DELETE", CREATE))
    assert.is_nil(schema.find("GET", "/v3/pay/transactions/id/1"))
    assert.has_error(function() schema.find(nil, CREATE) end, "schema.find: method must be a string")
  end)

  it("is what docs/campaigns.md's field reference shows", function()
    local page = require("tests.support.sh").read("docs/campaigns.md")
    local section = page:match("<!%-%- reference:begin %-%->\n(.-)<!%-%- reference:end %-%->")
    assert.is_string(section)
    assert.equal(require("wechatpay.favor.doc").reference(), section)
  end)

  it("names only rules the validator implements", function()
    for _, ep in ipairs(schema.endpoints) do
      for _, r in ipairs(ep.rules or {}) do assert.is_function(validate.rules[r.id], r.id) end
      assert.is_true((validate.check(ep, nil, { now = NOW })) ~= nil)
    end
  end)
end)

describe("validate.request", function()
  it("accepts the seed's request once its empty and zero values are filled", function()
    local ok, f = findings_of((seed.filled(NOW)))
    assert.is_true(ok, f and validate.format(f))
  end)

  it("takes a stock without coupon_available_time or pattern_info, not pattern_info without its description", function()
    -- docs/campaigns.md, "Decisions where the sources disagree"
    local b = seed.filled(NOW)
    b.coupon_use_rule.coupon_available_time = nil
    b.pattern_info = nil
    local ok, f = findings_of(b)
    assert.is_true(ok, f and validate.format(f))
    b.pattern_info = { merchant_name = "微信支付" }
    ok, f = findings_of(b)
    assert.is_false(ok)
    assert.equal("required", has(f, "pattern_info.description").rule)
    assert.same(f, validate._reference(schema.find("POST", CREATE), b, { now = NOW }))
  end)

  it("reports every finding of the literal seed together", function()
    local ok, f = findings_of(seed.verbatim())
    assert.is_false(ok)
    for _, p in ipairs { "stock_use_rule.max_coupons", "stock_use_rule.max_coupons_per_user",
      "pattern_info.description", "coupon_use_rule.coupon_available_time.available_begin_time",
      "coupon_use_rule.fixed_normal_coupon.coupon_amount", "out_request_no", "available_begin_time",
      "available_end_time" } do
      assert.truthy(has(f, p), p)
    end
  end)

  for _, c in ipairs(cases) do
    it("rejects " .. c.name .. " at " .. c.path, function()
      local b, day0 = seed.filled(NOW)
      c.mutate(b, NOW, day0)
      local ok, f = findings_of(b)
      assert.is_false(ok, c.name)
      local hit = has(f, c.path, c.rule)
      assert.truthy(hit, c.name .. ": expected " .. c.path .. " ~ " .. c.rule .. ", got:\n" .. validate.format(f))
      local node = schema.field(schema.by_id.create_stock.body, (c.path:gsub("%[%d+%]", "[]")))
      if node and not c.rule:find("unknown") then assert.equal(node.desc, hit.desc) end
    end)
  end

  it("names the path, the description, the rule and the value", function()
    local b = (seed.filled(NOW))
    b.coupon_use_rule.fixed_normal_coupon.transaction_minimum = 300
    local _, f = findings_of(b)
    local hit = has(f, "coupon_use_rule.fixed_normal_coupon.transaction_minimum")
    assert.same({ path = "coupon_use_rule.fixed_normal_coupon.transaction_minimum", desc = "门槛",
      rule = "must be greater than coupon_amount (面额) 500", value = 300 }, hit)
    assert.equal("coupon_use_rule.fixed_normal_coupon.transaction_minimum (门槛): must be greater than "
      .. "coupon_amount (面额) 500, got 300", validate.format(f))
  end)

  it("accepts the documented alternatives: COLOR010, integral floats, +HH:MM offsets other than +08:00", function()
    local b = (seed.filled(NOW))
    b.pattern_info.background_color = "COLOR010"
    b.stock_use_rule.max_coupons = 1000.0
    assert.is_true((findings_of(b)))
    b.pattern_info.background_color = "COLOR081"
    assert.is_true((findings_of(b)))
    b.pattern_info.background_color = "color010"
    local _, f = findings_of(b)
    assert.matches("did you mean", has(f, "pattern_info.background_color").rule)
  end)

  it("lets a begin time lag now by the travel time of a request, no more", function()
    local b = (seed.filled(NOW))
    local begin = validate.rfc3339(b.available_begin_time)
    assert.is_true((findings_of(b, { now = begin + validate.TRAVEL })))
    local ok, f = findings_of(b, { now = begin + validate.TRAVEL + 1 })
    assert.is_false(ok)
    assert.truthy(has(f, "available_begin_time", "in the past"))
  end)

  it("uses the injected clock", function()
    local b = (seed.filled(NOW))
    assert.is_true((findings_of(b, { now = NOW })))
    local ok, f = findings_of(b, { now = NOW + 400 * 86400 })
    assert.is_false(ok)
    assert.truthy(has(f, "available_begin_time", "in the past"))
    ok, f = findings_of(b, { now = NOW - 400 * 86400 })
    assert.truthy(has(f, "available_begin_time", "365 days"))
  end)

  it("checks query parameters and their rules", function()
    local ok, f = validate.request("GET", "/v3/marketing/favor/stocks", nil,
      { query = { offset = "0", limit = "11" }, now = NOW })
    assert.is_false(ok)
    assert.truthy(has(f, "limit", "at most 10"))
    assert.truthy(has(f, "stock_creator_mchid", "^required$"))
    assert.is_true((validate.request("GET", "/v3/marketing/favor/stocks", nil,
      { query = { offset = 0, limit = 10, stock_creator_mchid = "1900000001", status = "running" } })))
    ok, f = validate.request("GET", "/v3/marketing/favor/users/o1/coupons", nil,
      { query = { appid = "wx1", creator_mchid = "1", sender_mchid = "2" } })
    assert.truthy(has(f, "creator_mchid", "exactly one"))
  end)

  it("checks the other endpoints' bodies", function()
    local send = "/v3/marketing/favor/users/o1/coupons"
    assert.is_true((validate.request("POST", send, { stock_id = "9856000", out_request_no = "a-1",
      appid = "wx1", stock_creator_mchid = "8956000" })))
    local ok, f = validate.request("POST", send, { stock_id = "9856000", out_request_no = "a 1",
      appid = "wx1", coupon_value = 100 })
    assert.is_false(ok)
    assert.truthy(has(f, "out_request_no"))
    assert.truthy(has(f, "stock_creator_mchid", "^required$"))
    assert.truthy(has(f, "coupon_minimum", "together"))
    ok, f = validate.request("POST", "/v3/marketing/favor/stocks/1/pause", {})
    assert.truthy(has(f, "stock_creator_mchid", "^required$"))
    ok, f = validate.request("POST", "/v3/marketing/favor/callbacks", { mchid = "1", notify_url = "ftp://x", switch = 1 })
    assert.truthy(has(f, "notify_url", "URL")); assert.truthy(has(f, "switch", "boolean"))
    ok, f = validate.request("POST", "/v3/marketing/favor/coupon-stocks", nil)
    assert.truthy(has(f, "(body)", "required"))
  end)

  it("finds exactly what the slow reference path finds, on random damage to the seed", function()
    local ep = schema.by_id.create_stock
    local pool = { 0, 1, 5, 61, -1, 2.5, 1e12, "", "x", "2027-01-01T00:00:00+08:00", "微信支付代金券批次十",
      true, false, {}, { 1 }, { "a" }, { a = 1 }, "Color010", "NORMAL", 86400, 100000 }
    local paths = {}
    local function collect(node, prefix)
      for _, f in ipairs(node.fields or {}) do
        local p = prefix .. f.name
        paths[#paths + 1] = p
        if f.type == "object" then collect(f, p .. ".") end
      end
    end
    collect(ep.body, "")
    local rng, invalid = 12345, 0
    local function rand(n) rng = (rng * 1103515245 + 12345) % 2147483648; return rng % n + 1 end
    for _ = 1, 400 do
      local b, day0 = seed.filled(NOW)
      for _ = 1, rand(3) do
        local p = paths[rand(#paths)]
        local t, last = b, nil
        for part in p:gmatch("[^.]+") do
          if last then
            if type(t[last]) ~= "table" then t = nil break end
            t = t[last]
          end
          last = part
        end
        if t then
          local v = pool[rand(#pool + 1)]
          if type(v) == "table" then local c = {} for k, x in pairs(v) do c[k] = x end v = c end
          t[last] = v
        end
      end
      local _ = day0
      local _, fast = validate.request("POST", CREATE, b, { now = NOW })
      local slow = validate._reference(ep, b, { now = NOW })
      assert.equal(validate.format(slow), validate.format(fast or {}))
      if fast then invalid = invalid + 1 end
    end
    assert.is_true(invalid > 300, "most damage is found: " .. invalid)
  end)

  it("gives the text of a body it passes in its common case, as wechatpay.json.encode writes it", function()
    local json = require "wechatpay.json"
    local ep = schema.by_id.create_stock
    local b = seed.filled(NOW)
    assert.is_true(validate.check(ep, b, { now = NOW }))
    assert.equal(json.encode(b), validate.text(ep, b, { now = NOW }))
    b.stock_name = "微信支付代金券批次"
    assert.equal(json.encode(b), validate.text(ep, b, { now = NOW }))
    -- nil where check has more to say: what the C check doubts, what the
    -- quick test of the cross-field rules refuses, an endpoint without a body
    local x = seed.filled(NOW)
    x.unknown = 1
    assert.is_nil(validate.text(ep, x, { now = NOW }))
    x = seed.filled(NOW)
    x.available_end_time, x.available_begin_time = x.available_begin_time, x.available_end_time
    assert.is_false(validate.check(ep, x, { now = NOW }))
    assert.is_nil(validate.text(ep, x, { now = NOW }))
    local list = schema.by_id.list_stocks
    assert.is_nil(validate.text(list, nil, { query = { offset = 0, limit = 10 } }))
  end)

  it("passes a body in C (quan.json.shape) only when the generated walk finds nothing in it", function()
    local ep = schema.by_id.create_stock
    local shaped, walk = validate._shaped(ep.body), validate._generate(ep.body)
    local function walk_finds(b)
      local out = {}
      walk(b, out, { request = true, now = NOW })
      return #out
    end
    -- valid bodies pass in C: Chinese text within its width, every optional part
    local b = seed.filled(NOW)
    assert.is_true(shaped(b))
    assert.equal(0, walk_finds(b))
    b.stock_name = "微信支付代金券批次"
    b.coupon_use_rule.available_merchants = { "1900000001", "1900000002" }
    assert.is_true(shaped(b))
    -- what the walk reports, C doubts
    local damage = {
      function(x) x.stock_name = "微信支付代金券批次十" end, -- 10 Chinese characters, 9 fit
      function(x) x.stock_name = "a_b" end,                  -- a forbidden byte
      function(x) x.stock_name = "\xff" end,                  -- not UTF-8
      function(x) x.unknown = 1 end,
      function(x) x.stock_use_rule.unknown = 1 end,
      function(x) x.stock_use_rule.max_coupons = nil end,
      function(x) x.stock_use_rule.max_coupons = 4 end,
      function(x) x.stock_use_rule.max_coupons = "1000" end,
      function(x) x.no_cash = "false" end,
      function(x) x.stock_type = "normal" end,
      function(x) x.available_begin_time = "2027-01-01T00:00:00Z" end,
      function(x) x.out_request_no = "a b" end,
      function(x) x.coupon_use_rule.available_merchants = {} end,
      function(x) x.coupon_use_rule.coupon_available_time.fix_available_time.available_week_day = { 1, 1 } end,
      function(x) x.coupon_use_rule.available_merchants = { "1", nil, "3" } end,
      function(x) x.coupon_use_rule.available_merchants = { "1", x = 1 } end,
      function(x) x.coupon_use_rule.coupon_available_time = { 1 } end,
    }
    for i, hurt in ipairs(damage) do
      local x = seed.filled(NOW)
      hurt(x)
      assert.is_true(walk_finds(x) > 0, "case " .. i .. " is damage")
      assert.is_false(shaped(x), "case " .. i)
    end
    -- out_request_no's pattern, one character class, is tested in C as
    -- forbidden bytes: the same verdict as the walk's for every byte
    for byte = 0, 255 do
      local x = seed.filled(NOW)
      x.out_request_no = "A-z|_*9" .. string.char(byte)
      assert.equal(walk_finds(x) == 0, shaped(x), "byte " .. byte)
    end
    -- a table with a metatable is the walk's to read (its __index answers there)
    local x = seed.filled(NOW)
    x.pattern_info = setmetatable({}, { __index = x.pattern_info })
    assert.is_false(shaped(x))
    -- every endpoint's body has its C check, and a non-table is doubted
    for _, e in ipairs(schema.endpoints) do
      local node = e.body or e.meta
      if node then
        local check = validate._shaped(node)
        assert.is_not_nil(check, e.id)
        assert.is_false(check("x"), e.id)
        assert.is_false(check({ 1 }), e.id)
      end
    end
  end)

  it("passes unknown endpoints through", function()
    assert.is_true(validate.request("POST", "/v3/pay/transactions/jsapi", { anything = true }))
  end)

  it("validates responses with check()", function()
    local ep = schema.by_id.create_stock
    assert.is_true(validate.check(ep.response, { stock_id = "1", create_time = "2026-11-28T10:00:00+08:00" }))
    local ok, f = validate.check(ep.response, { stock_id = 1 })
    assert.is_false(ok)
    assert.truthy(has(f, "stock_id")); assert.truthy(has(f, "create_time", "^required$"))
    -- a decoded [] is an empty table: fine in an answer, refused in a request
    assert.is_true(validate.check(schema.by_id.list_stocks.response, { total_count = 0, limit = 10, offset = 0, data = {} }))
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() validate.request(1, CREATE, {}) end, "validate.request: method must be a string")
    assert.has_error(function() validate.request("POST", nil, {}) end, "validate.request: path must be a string")
    assert.has_error(function() validate.request("POST", CREATE, {}, 5) end, "validate.request: opts must be a table")
    assert.has_error(function() validate.request("POST", CREATE, {}, { now = "today" }) end,
      "validate: opts.now must be epoch seconds")
    assert.has_error(function() validate.check(nil, {}) end, "validate.check: node must be a schema node or endpoint")
    assert.has_error(function() validate.format(nil) end, "validate.format: findings must be a table")
  end)

  it("parses RFC 3339 exactly", function()
    assert.equal(1795824000, validate.rfc3339("2026-11-28T08:00:00+08:00"))
    assert.equal(1795824000.5, validate.rfc3339("2026-11-28T00:00:00.5-00:00"))
    assert.equal(951782400, validate.rfc3339("2000-02-29T00:00:00+00:00"))
    assert.is_nil(validate.rfc3339("2100-02-29T00:00:00+08:00"))
    assert.is_nil(validate.rfc3339("2026-11-28T24:00:00+08:00"))
  end)

  it("adds no globals", function()
    local out = io.popen(require("tests.support.sh").quan .. [[ -e 'local b = {} for k in pairs(_G) do b[k] = true end
      require "wechatpay.favor.validate"; require "wechatpay.favor.schema"; require "quan.check"; require "quan.dryrun"
      require("quan.dryrun").pretty("{\"a\":[1]}"); require("quan.check").response({ method = "GET", path = "/v3/marketing/favor/stocks/1" })
      require("wechatpay.favor.validate").request("POST", "/v3/marketing/favor/coupon-stocks", {})
      for k in pairs(_G) do if not b[k] then print(k) end end']]):read("a")
    assert.equal("", out)
  end)
end)
