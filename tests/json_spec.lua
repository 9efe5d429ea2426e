-- quan.json (the C fast path of wechatpay.json.encode): byte for byte the
-- text of the Lua encoder wherever it answers, nil wherever the Lua encoder
-- must decide (and name the field of an error).
local fast = require("quan.json").encode
local cjson = require "cjson"

-- the Lua encoder alone: wechatpay.json loaded without quan.json
local function lua_encoder()
  local saved_mod, saved_pre = package.loaded["wechatpay.json"], package.preload["quan.json"]
  package.loaded["wechatpay.json"], package.preload["quan.json"] = nil, nil
  local ok, m = pcall(require, "wechatpay.json")
  package.loaded["wechatpay.json"], package.preload["quan.json"] = saved_mod, saved_pre
  assert(ok, m)
  return m.encode
end

describe("quan.json", function()
  local slow = lua_encoder()

  local function same(v)
    local want = slow(v)
    assert.equal(want, fast(v))
  end

  it("writes what the Lua encoder writes for plain values", function()
    local t0, t1 = "2026-11-29T00:00:00+08:00", "2026-12-28T23:59:59+08:00"
    same {
      stock_name = "微信支付代金券", belong_merchant = "1900000001", stock_type = "NORMAL", no_cash = false,
      available_begin_time = t0, available_end_time = t1,
      stock_use_rule = { max_coupons = 100, max_amount = 10000, max_coupons_per_user = 1,
        natural_person_limit = false, prevent_api_abuse = false },
      coupon_use_rule = {
        coupon_available_time = { available_begin_time = t0, available_end_time = t1 },
        fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 1000.0 },
        available_merchants = { "1900000001", "1900000002" } },
      out_request_no = "x1", notify_url = "https://example.com/a?b=c&d=\"e\"",
    }
    for _, v in ipairs {
      {}, { {} }, { 0, -1, math.maxinteger, math.mininteger, 1e15, -0.0 }, { 1, cjson.null, 3 },
      { a = cjson.null, b = { cjson.null } }, "text", 42, true, false, cjson.null,
      { [1] = "a", [2] = "b", [3] = "c" }, { x = { y = { z = { "deep" } } } },
      { "é", "券", "\u{10FFFF}", "\u{FFFF}", "\u{7FF}", "\u{800}", "\u{10000}", "\u{D7FF}", "\u{E000}" },
    } do
      same(v)
    end
  end)

  it("escapes every byte as cjson does, in values and keys", function()
    for b = 0, 127 do
      local c = string.char(b)
      same { k = "a" .. c .. "b", list = { c, c .. c } }
      if b ~= 0 then same { ["k" .. c] = 1 } end -- a key with a zero byte is the Lua encoder's
    end
    -- a long string (its room measured, not assumed) with every escape and UTF-8
    local all = {}
    for b = 0, 127 do all[#all + 1] = string.char(b) end
    local long = (table.concat(all) .. "券é"):rep(40)
    assert.is_true(#long > 4096)
    same { long = long, list = { long } }
  end)

  -- refused(v): the Lua encoder raises and the fast path leaves v to it
  local function refused(v)
    assert.is_false((pcall(slow, v)))
    assert.is_nil(fast(v))
  end

  it("agrees with utf8.len on what is UTF-8, for every lead byte and its neighbours", function()
    local tails = { "", "\x80", "\xBF", "\x80\x80", "\x8F\xBF", "\x90\x80", "\x9F\xBF", "\xA0\x80",
      "\xBF\xBF", "\x80\x80\x80", "\x8F\xBF\xBF", "\x90\x80\x80", "\xBF\xBF\xBF", "\xC0", "a", "\x80a" }
    for b = 128, 255 do
      for _, tail in ipairs(tails) do
        local s = string.char(b) .. tail
        if utf8.len(s) then
          same { s }
          same { [s] = 1 }
        else
          refused { s }
          refused { [s] = 1 }
        end
      end
    end
  end)

  it("leaves holes, invalid UTF-8 and NaN to the Lua encoder, which names the field", function()
    local json = require "wechatpay.json"
    for _, case in ipairs {
      { { [1] = 1, [3] = 3 }, "json: is a sparse array (2 values under keys up to 3, none at [2]); use a sequence 1..n" },
      { { a = { 1, nil, 3 } }, "json: field a: is a sparse array (2 values under keys up to 3, none at [2]); use a sequence 1..n" },
      { { a = { [2] = 1 } }, "json: field a: is a sparse array (1 values under keys up to 2, none at [1]); use a sequence 1..n" },
      { { a = "\xff\xfe" }, "json: field a: is not valid UTF-8 (at byte 1)" },
      { { a = { "ok", "x\xed\xa0\x80" } }, "json: field a[2]: is not valid UTF-8 (at byte 2)" },
      { { a = { ["\xc0\xaf"] = 1 } }, "json: field a: has a key that is not valid UTF-8 (at byte 1)" },
      { { a = 0 / 0 }, "json: field a: is not a finite number (NaN)" },
      { { a = { -math.huge } }, "json: field a[1]: is not a finite number (-inf)" },
      { { [math.huge] = 1 }, "json: has a key that is not a finite number (inf)" },
    } do
      assert.is_nil(fast(case[1]))
      assert.has_error(function() json.encode(case[1]) end, case[2])
      assert.has_error(function() slow(case[1]) end, case[2])
    end
  end)

  it("sorts keys as the Lua encoder does, up to 64 keys", function()
    for _, n in ipairs { 2, 10, 40, 64 } do
      local t = {}
      for i = 1, n do t[("k%03d_%s"):format((i * 37) % 101, string.char(65 + i % 26))] = i end
      t.A, t._, t.a = 1, 2, 3
      if n == 64 then t.A, t._, t.a = nil, nil, nil end
      same(t)
    end
  end)

  it("agrees on random values", function()
    local seed = 12345
    local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n end
    local function value(depth)
      local r = rnd(depth > 3 and 5 or 8)
      if r == 0 then return rnd(1000000) - 500000 end
      if r == 1 then -- mostly UTF-8 (ASCII, two-, three- and four-byte characters), now and then a stray byte
        local s = {}
        for i = 1, rnd(12) do
          local k = rnd(20)
          if k == 0 then s[i] = string.char(128 + rnd(128))
          else s[i] = utf8.char(({ 0, 128, 2048, 65536 })[k % 4 + 1] + rnd(128)) end
        end
        return table.concat(s)
      end
      if r == 2 then return rnd(2) == 1 end
      if r == 3 then return cjson.null end
      if r == 4 then return rnd(100) + 0.0 end
      if r == 5 then local a = {} for i = 1, rnd(6) do a[i] = value(depth + 1) end return a end
      local o = {}
      for _ = 1, rnd(8) do o["f" .. rnd(50)] = value(depth + 1) end
      return o
    end
    for _ = 1, 300 do
      local v = value(0)
      if pcall(slow, v) then same(v) else refused(v) end
    end
  end)

  it("leaves to the Lua encoder what only it decides", function()
    local mt = setmetatable({}, {})
    local keys65 = {}
    for i = 1, 65 do keys65["k" .. i] = i end
    local deep = {}
    local cur = deep
    for _ = 1, 120 do cur.n = {}; cur = cur.n end
    for _, v in ipairs {
      { 0.5 }, { a = 1 / 0 }, { mt }, { [1] = 1, [20] = 2 }, { [1] = 1, [3] = 3 }, { 1, 2, x = 3 }, { [1.5] = 1 },
      { "\xff" }, { ["\xfe"] = 1 },
      { f = print }, { [true] = 1 }, { ["a\0b"] = 1 }, keys65, deep, io.stdout, { co = coroutine.create(print) },
    } do
      assert.is_nil(fast(v))
    end
    local ok = pcall(slow, { [1] = 1, [20] = 2 })
    assert.is_false(ok)
    -- a float key without an integer value is an object's key, as cjson writes it
    assert.is_nil(fast { [1e300] = 1 })
    assert.equal('{"1e+300":1}', slow { [1e300] = 1 })
  end)

  it("writes wechatpay.json.empty_array as [] (the C path leaves it to the Lua encoder)", function()
    local json = require "wechatpay.json"
    assert.is_nil(fast { a = json.empty_array })
    assert.equal('{"a":[],"b":{}}', json.encode { a = json.empty_array, b = {} })
    assert.equal("[]", json.encode(json.empty_array))
    assert.has_error(function() json.empty_array[1] = 1 end, "wechatpay.json.empty_array is read-only")
    assert.is_nil(next(json.empty_array))
  end)

  it("asks a shape's predicate again only for a string it has not just passed", function()
    local asked = {}
    local check = require("quan.json").shape { kind = "object", fields = {
      { name = "id", required = true, node = { kind = "string", predicate = function(s)
        asked[#asked + 1] = s
        return s:find("^%d+$") ~= nil
      end } } } }
    assert.is_true(check { id = "1" })
    assert.is_true(check { id = "1" })      -- passed last: not asked
    assert.is_false(check { id = "x" })     -- refused: never remembered
    assert.is_false(check { id = "x" })
    assert.is_true(check { id = "1" })
    assert.is_true(check { id = "2" })
    assert.is_true(check { id = "1" })      -- only the last one is remembered
    assert.same({ "1", "x", "x", "2", "1" }, asked)
  end)

  it("writes, when asked, the text of what a shape's check passes, as encode writes it", function()
    local qjson, json = require "quan.json", require "wechatpay.json"
    local check = qjson.shape { kind = "object", fields = {
      { name = "n", required = true, node = { kind = "integer", min = 1, max = 10 } },
      { name = "tags", node = { kind = "array", max_items = 3, item = { kind = "string", min_len = 1 } } },
      { name = "b", node = { kind = "boolean" } },
      { name = "e", node = { kind = "string", enum = { ON = true, OFF = true } } },
      { name = "a_z", node = { kind = "object", fields = {
        { name = "z", node = { kind = "number" } }, { name = "Y", node = { kind = "string" } } } } },
    } }
    -- keys in encode's order (the fields above are not), escapes, nesting
    for _, v in ipairs {
      { n = 3 }, { n = 3, tags = { "a", "b\"\n/\0" } }, { n = 10, b = false, e = "ON", a_z = { z = -7, Y = "微信" } },
      { n = 1, a_z = {} }, { n = 2, a_z = { z = 2.0 } }, { n = 4, b = true, tags = { "x", "y", "z" }, a_z = { Y = "", z = 0 } },
    } do
      local ok, text = check(v, true)
      assert.is_true(ok)
      assert.equal(json.encode(v), text)
    end
    assert.equal('{"a_z":{"Y":"y","z":1},"b":true,"e":"OFF","n":5,"tags":["t"]}',
      select(2, check({ tags = { "t" }, n = 5, e = "OFF", b = true, a_z = { z = 1, Y = "y" } }, true)))
    -- field names written as they are (the member's opening made once) and
    -- names the encoder escapes or writes as UTF-8, beside each other
    local odd = qjson.shape { kind = "object", fields = {
      { name = "plain", node = { kind = "integer" } }, { name = "quo\"te/", node = { kind = "integer" } },
      { name = "新\tline", node = { kind = "integer" } }, { name = "", node = { kind = "integer" } } } }
    local v = { plain = 1, ["quo\"te/"] = 2, ["新\tline"] = 3, [""] = 4 }
    assert.equal(json.encode(v), select(2, odd(v, true)))
    assert.equal('{"":4,"plain":1,"quo\\"te\\/":2,"新\\tline":3}', json.encode(v))
    -- passed, but not written here: a float that is not integral, bytes that are not UTF-8
    assert.same({ true, nil }, { check({ n = 1, a_z = { z = 1.5 } }, true) })
    assert.same({ true, nil }, { check({ n = 1, tags = { "\xff" } }, true) })
    -- doubted: no text; without the second argument, one result
    assert.same({ false, nil }, { check({ n = 11 }, true) })
    assert.same({ false, nil }, { check({ n = 1, x = 1 }, true) })
    assert.equal(1, select("#", check { n = 1 }))
    -- an array is a sequence by every key it has: 1 in the hash part, with
    -- a string key that the hash order puts before it (a look past #t alone
    -- would not see it)
    local t
    for i = 1, 1000 do
      t = {}
      for j = 1, 5 do t["k" .. j] = true end -- a hash part with room: 1 goes there
      t[1] = "a"
      for j = 1, 5 do t["k" .. j] = nil end
      t["x" .. i] = "b"
      if next(t) ~= 1 then break end
    end
    assert.equal("string", type(next(t)))
    assert.equal(1, rawlen(t))
    assert.same({ false, nil }, { check({ n = 1, tags = t }, true) })
    -- nesting past encode's 100 levels is doubted, not a deep C recursion
    local deep = { kind = "boolean" }
    for _ = 1, 6000 do deep = { kind = "object", fields = { { name = "a", node = deep } } } end
    local v = true
    for _ = 1, 6000 do v = { a = v } end
    assert.is_false(qjson.shape(deep)(v, true))
    -- a text longer than the check writes (4 KiB) is left to encode
    local big = qjson.shape { kind = "object", fields = {
      { name = "s", node = { kind = "string" } } } }
    assert.same({ true, nil }, { big({ s = ("x"):rep(5000) }, true) })
    assert.equal('{"s":"' .. ("x"):rep(4000) .. '"}', select(2, big({ s = ("x"):rep(4000) }, true)))
  end)

  it("makes integers of integral floats in place, at any depth a decoder reaches", function()
    local json = require "quan.json"
    local v = { a = 5000.0, b = { 1.0, 2.5, { c = -0.0 } }, s = "7.0", big = 1e300, huge = 2.0 ^ 63,
      edge = 2.0 ^ 53, nan = 0 / 0, t = true, [3.0] = 4.0 }
    assert.equal(v, json.integers(v))
    assert.equal("integer", math.type(v.a))
    assert.same({ "integer", "float", "integer" }, { math.type(v.b[1]), math.type(v.b[2]), math.type(v.b[3].c) })
    assert.equal("7.0", v.s)                       -- strings stay strings
    assert.same({ "float", "float", "integer" }, { math.type(v.big), math.type(v.huge), math.type(v.edge) })
    assert.is_true(v.nan ~= v.nan)
    assert.equal("integer", math.type(v[3]))       -- keys as they are, values converted
    assert.equal("integer", math.type(json.integers(12.0)))
    assert.equal(1.5, json.integers(1.5))
    assert.equal("x", json.integers("x"))
    -- 1000 levels, cjson's decoding limit: the innermost number too
    assert.is_nil((require("cjson.safe").decode(("["):rep(1001) .. "1" .. ("]"):rep(1001))))
    local deep = require("cjson").decode(("["):rep(1000) .. "1" .. ("]"):rep(1000))
    json.integers(deep)
    for _ = 1, 999 do deep = deep[1] end
    assert.equal("integer", math.type(deep[1]))
  end)

  it("raises only for a missing argument", function()
    local json = require "quan.json"
    assert.has_error(function() json.encode() end, "bad argument #1 to 'encode' (value expected)")
    assert.has_error(function() json.integers() end, "bad argument #1 to 'integers' (value expected)")
  end)

  it("adds no globals", function()
    local sh = require "tests.support.sh"
    local out = sh.run(sh.quan .. [[ -e 'local g = {} for k in pairs(_G) do g[k] = true end
      require "quan.json" for k in pairs(_G) do if not g[k] then print(k) end end']])
    assert.equal("", out)
  end)

  it("runs the examples of docs/json.md", function()
    require("tests.support.mdexamples").run("docs/json.md", 1)
    require("tests.support.mdexamples").run("docs/json.md", 2)
  end)
end)
