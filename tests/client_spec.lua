-- The wechatpay client: segments, signing, verification, errors, profiles,
-- and full round trips against tests/support/fake_wechatpay.py, a python
-- stand-in that verifies quan's signatures independently.
local sh = require "tests.support.sh"

local have_natives = pcall(require, "quan.crypto") and pcall(require, "quan.async")

local function globals()
  local g = {}
  for k in pairs(_G) do g[k] = true end
  return g
end

describe("wechatpay modules", function()
  it("add no globals", function()
    local before = globals()
    for _, m in ipairs { "wechatpay", "wechatpay.client", "wechatpay.chain", "wechatpay.config",
      "wechatpay.errors", "wechatpay.json", "wechatpay.multipart", "wechatpay.sign",
      "wechatpay.trace", "wechatpay.verify" } do
      require(m)
    end
    for k in pairs(_G) do assert.is_true(before[k], "new global " .. tostring(k)) end
  end)
end)

describe("wechatpay.chain", function()
  local chain = require "wechatpay.chain"

  it("normalizes segments as the PHP and Node SDKs do", function()
    for _, case in ipairs {
      { "couponStocks", "coupon-stocks" },
      { "CouponStocks", "coupon-stocks" },
      { "imageUpload", "image-upload" },
      { "useFlow", "use-flow" },
      { "coupon-stocks", "coupon-stocks" },
      { "v3", "v3" },
      { "_stock_id_", "{stock_id}" },
      { "_stockId_", "{stockId}" },
      { "{coupon_id}", "{coupon_id}" },
    } do
      assert.equal(case[2], chain.normalize(case[1]), case[1])
    end
    assert.same({ "v3", "marketing", "favor", "coupon-stocks" }, chain.split("v3/marketing/favor/couponStocks"))
    assert.same({ "v3", "a", "{x}" }, chain.split("/v3//a/_x_/"))
  end)

  it("percent-encodes values, keeping only RFC 3986 unreserved characters", function()
    assert.equal("AbZ09-._~", chain.encode("AbZ09-._~"))
    assert.equal("a%2Bb%20c%2F%3F%26%3D%25", chain.encode("a+b c/?&=%"))
    assert.equal("%E5%88%B8", chain.encode("券"))
  end)

  it("fills path variables from values that never pass through the segment rules", function()
    assert.equal("v3/marketing/favor/stocks/AbC%2B9Z/use-flow",
      chain.expand("v3/marketing/favor/stocks/{stock_id}/use-flow", { stock_id = "AbC+9Z" }))
    assert.equal("v3/x/12", chain.expand("v3/x/{n}", { n = 12 }))
  end)

  it("builds the query with sorted keys, encoded so +08:00 survives", function()
    assert.equal("limit=10&offset=0&start_time=2027-03-01T00%3A00%3A00%2B08%3A00&status=running",
      chain.query { status = "running", start_time = "2027-03-01T00:00:00+08:00", offset = 0, limit = 10 })
    assert.equal("a=1&a=2&b=true", chain.query { b = true, a = { 1, 2 } })
    assert.equal("", chain.query {})
    assert.equal("f=1.5&n=3", chain.query { n = 3.0, f = 1.5 })
  end)

  it("refuses NaN and infinities in the query and in path variables, naming them", function()
    local function usage(fn, ...)
      local ok, e = pcall(fn, ...)
      assert.is_false(ok)
      return e.message
    end
    assert.equal("query 'x' must be a finite number (got NaN)", usage(chain.query, { x = 0 / 0 }))
    assert.equal("query 'y' must be a finite number (got inf)", usage(chain.query, { y = math.huge }))
    assert.equal("query 'z' must be a finite number (got -inf)", usage(chain.query, { z = { 1, -math.huge } }))
    assert.equal("path variable 'n' must be a finite number (got NaN)", usage(chain.expand, "v3/x/{n}", { n = 0 / 0 }))
  end)
end)

describe("wechatpay.sign", function()
  local sign = require "wechatpay.sign"

  it("builds the five-line string to sign, body bytes exact", function()
    assert.equal("POST\n/v3/x?a=1\n1700000000\nNONCE\n{\"a\":1}\n",
      sign.message("POST", "/v3/x?a=1", "1700000000", "NONCE", '{"a":1}'))
    assert.equal("GET\n/v3/x\n1\nN\n\n", sign.message("GET", "/v3/x", "1", "N", ""))
  end)

  it("formats and redacts the Authorization header", function()
    local h = sign.authorization("1900000001", "ABC", "1700000000", "N0", "c2ln+/==")
    assert.equal('WECHATPAY2-SHA256-RSA2048 mchid="1900000001",serial_no="ABC",'
      .. 'timestamp="1700000000",nonce_str="N0",signature="c2ln+/=="', h)
    assert.equal('WECHATPAY2-SHA256-RSA2048 mchid="1900000001",serial_no="ABC",'
      .. 'timestamp="1700000000",nonce_str="N0",signature="[redacted]"', sign.redact(h))
  end)
end)

describe("wechatpay.verify (with a stand-in key)", function()
  local verify = require "wechatpay.verify"
  local sign = require "wechatpay.sign"
  local NOW = 1800000000
  -- a key that accepts exactly the signature "good:" .. message
  local key = {}
  function key:verify(msg, sig)
    if sig == "good:" .. msg then return true end
    return false, "mismatch"
  end
  local keys = { PUB_KEY_ID_01 = key, ["7132D72A03E9"] = key }

  local function headers(over)
    local h = {
      ["wechatpay-timestamp"] = tostring(NOW), ["wechatpay-nonce"] = "n1",
      ["wechatpay-serial"] = "PUB_KEY_ID_01",
    }
    for k, v in pairs(over or {}) do h[k] = v end
    if h["wechatpay-signature"] == nil then
      h["wechatpay-signature"] = "good:" .. sign.response_message(h["wechatpay-timestamp"] or "", h["wechatpay-nonce"] or "", "{}")
    end
    if h["wechatpay-signature"] == false then h["wechatpay-signature"] = nil end
    return h
  end

  it("accepts a good response, and a hex serial in any case", function()
    assert.is_true(verify.check(headers(), "{}", keys, NOW))
    assert.is_true(verify.check(headers { ["wechatpay-serial"] = "7132d72a03e9" }, "{}", keys, NOW))
    assert.is_true(verify.check(headers { ["wechatpay-timestamp"] = tostring(NOW + 300) }, "{}", keys, NOW))
    assert.is_true(verify.check(headers { ["wechatpay-timestamp"] = tostring(NOW - 300) }, "{}", keys, NOW))
  end)

  it("names the failed check", function()
    for _, name in ipairs { "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial" } do
      local h = headers()
      h[name:lower()] = nil
      local ok, code, msg = verify.check(h, "{}", keys, NOW)
      assert.is_false(ok)
      assert.equal("missing_header", code)
      assert.equal("response header " .. name .. " missing", msg)
    end
    local ok, code, msg = verify.check(headers { ["wechatpay-serial"] = "PUB_KEY_ID_99" }, "{}", keys, NOW)
    assert.is_false(ok)
    assert.equal("unknown_serial", code)
    assert.equal("response signed by unknown serial PUB_KEY_ID_99", msg)
    assert.equal("unknown_serial", select(2, verify.check(headers { ["wechatpay-serial"] = "pub_key_id_01" }, "{}", keys, NOW)))
    for _, d in ipairs { 301, -301 } do
      ok, code, msg = verify.check(headers { ["wechatpay-timestamp"] = tostring(NOW + d) }, "{}", keys, NOW)
      assert.is_false(ok)
      assert.equal("clock_skew", code)
      assert.matches("is " .. (-d) .. " s from now", msg, 1, true)
    end
    ok, code = verify.check(headers { ["wechatpay-signature"] = "bad" }, "{}", keys, NOW)
    assert.is_false(ok)
    assert.equal("bad_signature", code)
    ok, code = verify.check(headers(), "{ }", keys, NOW)
    assert.equal("bad_signature", code)
    ok, code = verify.check(headers { ["wechatpay-timestamp"] = "12a" }, "{}", keys, NOW)
    assert.equal("bad_timestamp", code)
  end)

  it("reads a number as its decimal text, an array as its one string; refuses other values", function()
    assert.is_true(verify.check(headers { ["wechatpay-timestamp"] = NOW, ["wechatpay-signature"] =
      "good:" .. sign.response_message(tostring(NOW), "n1", "{}") }, "{}", keys, NOW))
    assert.is_true(verify.check(headers { ["wechatpay-timestamp"] = NOW + 0.0, ["wechatpay-signature"] =
      "good:" .. sign.response_message(tostring(NOW), "n1", "{}") }, "{}", keys, NOW))
    assert.is_true(verify.check(headers { ["wechatpay-serial"] = { "PUB_KEY_ID_01" } }, "{}", keys, NOW))
    assert.same({ false, "unknown_serial", "response signed by unknown serial 12345" },
      { verify.check(headers { ["wechatpay-serial"] = 12345 }, "{}", keys, NOW) })
    assert.same({ false, "bad_timestamp", "response timestamp '1.5' is not epoch seconds" },
      { verify.check(headers { ["wechatpay-timestamp"] = 1.5 }, "{}", keys, NOW) })
    for _, case in ipairs {
      { { "a", "b" }, "a table of 2 values" },
      { {}, "a table of 0 values" },
      { { x = "a" }, "a table of 1 value" },
      { { 7 }, "a table holding a number" },
      { true, "a boolean" },
    } do
      local ok, code, msg = verify.check(headers { ["wechatpay-serial"] = case[1] }, "{}", keys, NOW)
      assert.is_false(ok)
      assert.equal("bad_header", code)
      assert.equal("response header Wechatpay-Serial is " .. case[2] .. ", not one string", msg)
    end
    assert.same({ nil, "header Wechatpay-Nonce is a table of 2 values, not one string" },
      { verify.header({ ["Wechatpay-Nonce"] = { "a", "b" } }, "Wechatpay-Nonce") })
  end)

  it("skips only the file download path", function()
    assert.is_true(verify.skip("/v3/billdownload/file?token=x"))
    assert.is_false(verify.skip("/v3/marketing/favor/stocks/1/use-flow"))
  end)
end)

describe("wechatpay.errors", function()
  local errors = require "wechatpay.errors"

  it("prints itself with status, code and request id", function()
    local e = errors.new { kind = "http", status = 400, code = "PARAM_ERROR",
      message = "POST /v3/x: PARAM_ERROR: bad", request_id = "R1" }
    assert.equal("POST /v3/x: PARAM_ERROR: bad (status 400, request-id R1)", tostring(e))
    assert.is_false(e.retryable)
    assert.is_true(errors.is(e))
    e = errors.new { kind = "network", code = "timeout", message = "GET /v3/x: timed out", retryable = true }
    assert.equal("GET /v3/x: timed out (code timeout)", tostring(e))
  end)

  it("marks 429 and 5xx retryable, never a business 4xx", function()
    assert.is_true(errors.retryable_status(429))
    assert.is_true(errors.retryable_status(500))
    assert.is_true(errors.retryable_status(503))
    assert.is_false(errors.retryable_status(400))
    assert.is_false(errors.retryable_status(404))
  end)

  it("raises on a bad kind", function()
    assert.has_error(function() errors.new { kind = "nope" } end, "errors.new: unknown kind 'nope'")
  end)
end)

describe("wechatpay.json", function()
  local json = require "wechatpay.json"

  it("decodes integral numbers as integers, recursively", function()
    local v = json.decode('{"a":5000,"b":[1,2.5,{"c":3}],"s":"98065001","n":-1,"f":1.0}')
    assert.equal("integer", math.type(v.a))
    assert.equal("integer", math.type(v.b[1]))
    assert.equal("float", math.type(v.b[2]))
    assert.equal("integer", math.type(v.b[3].c))
    assert.equal("98065001", v.s)
    assert.equal(-1, v.n)
    assert.equal("integer", math.type(v.f))
    assert.is_nil((json.decode("{bad")))
  end)

  it("encodes empty tables as objects and arrays as arrays", function()
    assert.equal("{}", json.encode {})
    assert.equal("[0,1,2]", json.encode { 0, 1, 2 })
    assert.has_error(function() json.encode { f = print } end)
  end)

  it("encodes object keys sorted, so every process sends the same bytes for a table", function()
    assert.equal('{"a":{"c":[3,{"e":1,"f":2}],"d":true},"b":"x\\/y","z":null}',
      json.encode { z = json.null, b = "x/y", a = { d = true, c = { 3, { f = 2, e = 1 } } } })
    local t, keys = {}, {}
    for i = 1, 40 do t["k" .. i] = i; keys[#keys + 1] = "k" .. i end
    table.sort(keys)
    local want = {}
    for i, k in ipairs(keys) do want[i] = ('"%s":%d'):format(k, t[k]) end
    assert.equal("{" .. table.concat(want, ",") .. "}", json.encode(t))
    -- another process (another hash seed) writes the same bytes
    local out = sh.run(sh.quan .. " -e " .. sh.quote(
      "local t = {} for i = 1, 40 do t['k' .. i] = i end io.write(require('wechatpay.json').encode(t))"))
    assert.equal(json.encode(t), out)
  end)

  it("writes integers in full and refuses what JSON cannot hold", function()
    assert.equal('{"f":0.5,"n":12345678901234567}', json.encode { n = 12345678901234567, f = 0.5 })
    assert.equal('[1000,1000000000000000,-3,0.5]', json.encode { 1000.0, 1e15, -3.0, 0.5 })
    assert.equal("[1,null,3]", json.encode { 1, json.null, 3 }) -- a null said on purpose
    assert.has_error(function() json.encode { 1, nil, 3 } end,
      "json: is a sparse array (2 values under keys up to 3, none at [2]); use a sequence 1..n")
    assert.has_error(function() json.encode { a = { [1] = 1, [20] = 2 } } end,
      "json: field a: is a sparse array (2 values under keys up to 20, none at [2]); use a sequence 1..n")
    assert.has_error(function() json.encode { a = "\xff\xfe" } end, "json: field a: is not valid UTF-8 (at byte 1)")
    assert.has_error(function() json.encode { a = { b = 0 / 0 } } end, "json: field a.b: is not a finite number (NaN)")
    local loop = {}
    loop.self = loop
    assert.has_error(function() json.encode(loop) end, "json: nested more than 1000 deep (a table that contains itself?)")
    assert.has_error(function() json.encode { a = { [true] = 1 } } end,
      "json: field a: has a key that is a boolean (keys must be strings or numbers)")
    assert.has_error(function() json.encode { a = { b = { 1, print } } } end, "json: field a.b[2]: a function is not a JSON value")
  end)

  it("names the field that holds a client node instead of a value (a typo such as wx.mchId)", function()
    local wx = setmetatable({}, { __index = function() return setmetatable({}, {
      __name = "wechatpay.node", __tostring = function() return "wechatpay.node /mch-id" end }) end })
    assert.has_error(function() json.encode { stock_creator_mchid = wx.mchId } end,
      "json: field stock_creator_mchid: is wechatpay.node /mch-id, not a value (a misspelt field of the client, such as wx.mchId for wx.mchid?)")
  end)
end)

describe("wechatpay.multipart", function()
  local mp = require "wechatpay.multipart"

  it("puts the meta part first, byte-identical to the signed meta", function()
    local meta = mp.meta("logo.png", ("a"):rep(64))
    assert.equal('{"filename":"logo.png","sha256":"' .. ("a"):rep(64) .. '"}', meta)
    local body, ctype = mp.build { boundary = "BND", meta = meta, filename = "logo.png",
      data = "\137PNG", content_type = "image/png" }
    assert.equal("multipart/form-data; boundary=BND", ctype)
    assert.equal("--BND\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n"
      .. meta .. "\r\n--BND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"logo.png\"\r\n"
      .. "Content-Type: image/png\r\n\r\n\137PNG\r\n--BND--\r\n", body)
    assert.equal("image/jpeg", mp.content_type("a.JPG"))
    assert.equal("image/bmp", mp.content_type("x/a.bmp"))
    assert.equal("application/octet-stream", mp.content_type("noext"))
  end)
end)

describe("wechatpay.config (profiles)", function()
  local q = sh.quote
  -- run(dir, env, code) -> stdout, stderr, exit code of quan -e code in dir
  local function run(dir, env, code)
    return sh.run("cd " .. q(dir) .. " && env -u QUAN_PROFILE -u QUAN_CONFIG " .. (env or "") .. " "
      .. q(sh.quan) .. " -e " .. q(code))
  end
  local SHOW = [[
    local config = require "wechatpay.config"
    local ok, p, name, path = pcall(config.load, NAME)
    if not ok then print("ERR " .. tostring(p)) return end
    if not p then print("NONE") return end
    print(name, p.mchid, p.base_url, p.private_key, p.timeout, p.appid, path)
  ]]
  local function show(dir, env, name)
    local out, err = run(dir, env, "local NAME = " .. (name and ("%q"):format(name) or "nil") .. "\n" .. SHOW)
    return out:gsub("\n$", ""), err
  end

  local function profile(mchid, extra)
    return ([[{ mchid = "%s", serial = "AB12", private_key = "file://keys/m.pem",
      apiv3_key = "file:///abs/v3.key", certs = {}, base_url = "https://h%s", appid = "wx%s" %s }]])
      :format(mchid, mchid, mchid, extra or "")
  end

  local home, cwd
  before_each(function()
    home = sh.tmpdir()
    cwd = sh.tmpdir()
  end)

  it("finds nothing on a fresh machine", function()
    assert.equal("NONE", (show(cwd, "HOME=" .. q(home))))
  end)

  it("searches $QUAN_CONFIG, then ./quan.config.lua, then ~/.config/quan/config.lua", function()
    require("quan.os").mkdir(home .. "/.config")
    require("quan.os").mkdir(home .. "/.config/quan")
    sh.write(home .. "/.config/quan/config.lua", "return { profiles = { home = " .. profile("1") .. " } }")
    local out = show(cwd, "HOME=" .. q(home))
    assert.equal("home\t1\thttps://h1\tfile://" .. home .. "/.config/quan/keys/m.pem\tnil\twx1\t"
      .. home .. "/.config/quan/config.lua", out)
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { here = " .. profile("2") .. " } }")
    out = show(cwd, "HOME=" .. q(home))
    assert.matches("^here\t2\t", out)
    -- the real working directory, not a stale $PWD (a process started with
    -- another working directory)
    out = show(cwd, "HOME=" .. q(home) .. " PWD=" .. q(home))
    assert.matches("^here\t2\t.-\t" .. cwd:gsub("%p", "%%%0") .. "/quan.config.lua$", out)
    local other = sh.write(cwd .. "/other.lua", "return { profiles = { named = " .. profile("3") .. " } }")
    out = show(cwd, "HOME=" .. q(home) .. " QUAN_CONFIG=" .. q(other))
    assert.matches("^named\t3\t", out)
    out = show(cwd, "HOME=" .. q(home) .. " QUAN_CONFIG=" .. q(cwd .. "/missing.lua"))
    assert.equal("ERR config file " .. cwd .. "/missing.lua (QUAN_CONFIG or --config) not found", out)
  end)

  it("picks the named profile, then QUAN_PROFILE, then default, then the only one", function()
    sh.write(cwd .. "/quan.config.lua", "return { default = 'b', profiles = { a = " .. profile("1")
      .. ", b = " .. profile("2") .. ", c = " .. profile("3") .. " } }")
    assert.matches("^b\t2\t", (show(cwd, "HOME=" .. q(home))))
    assert.matches("^c\t3\t", (show(cwd, "HOME=" .. q(home) .. " QUAN_PROFILE=c")))
    assert.matches("^a\t1\t", (show(cwd, "HOME=" .. q(home) .. " QUAN_PROFILE=c", "a")))
    assert.equal("ERR config file " .. cwd .. "/quan.config.lua: no profile 'zz' (profiles: a, b, c)",
      (show(cwd, "HOME=" .. q(home), "zz")))
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { a = " .. profile("1") .. ", b = " .. profile("2") .. " } }")
    assert.equal("ERR config file " .. cwd .. "/quan.config.lua: several profiles (a, b) and no default; pick one with --profile NAME",
      (show(cwd, "HOME=" .. q(home))))
  end)

  it("lets the environment override non-secret keys", function()
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { a = " .. profile("1") .. " } }")
    local out = show(cwd, "HOME=" .. q(home) .. " QUAN_MCHID=42 QUAN_BASE_URL=https://x QUAN_TIMEOUT=2.5")
    assert.matches("^a\t42\thttps://x\t.-\t2.5\twx1\t", out)
    out = show(cwd, "HOME=" .. q(home) .. " QUAN_TIMEOUT=soon")
    for _, bad in ipairs { "soon", "1e999", "-inf", "nan", "0", "-2" } do
      out = show(cwd, "HOME=" .. q(home) .. " QUAN_TIMEOUT=" .. bad)
      assert.equal("ERR QUAN_TIMEOUT: expected a positive, finite number of seconds, got '" .. bad .. "'", out)
    end
  end)

  it("refuses inline secrets and names the key", function()
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { a = { mchid = '1', private_key = '-----BEGIN ' .. 'PRIVATE KEY-----' } } }")
    assert.equal("ERR profile 'a': private_key must be a file:// path in the config file, not inline text",
      (show(cwd, "HOME=" .. q(home))))
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { a = { mchid = '1', apiv3_key = '0123456789abcdef0123456789abcdef' } } }")
    assert.equal("ERR profile 'a': apiv3_key must be a file:// path in the config file, not inline text",
      (show(cwd, "HOME=" .. q(home))))
  end)

  it("reports a config file that does not load", function()
    sh.write(cwd .. "/quan.config.lua", "return { profiles = ")
    assert.matches("^ERR config file " .. cwd:gsub("%p", "%%%0") .. "/quan.config.lua: .*unexpected symbol", (show(cwd, "HOME=" .. q(home))))
    sh.write(cwd .. "/quan.config.lua", "return 42")
    assert.equal("ERR config file " .. cwd .. "/quan.config.lua: must return a table", (show(cwd, "HOME=" .. q(home))))
  end)

  it("stops a config file that runs too long, with a config error", function()
    for _, text in ipairs { "while true do end", "local function f() return f() end f()", "repeat until false" } do
      sh.write(cwd .. "/quan.config.lua", text)
      local out, err, code = sh.run("cd " .. q(cwd) .. " && env -u QUAN_PROFILE -u QUAN_CONFIG HOME=" .. q(home)
        .. " timeout 20 " .. q(sh.quan) .. " -e " .. q([[
          local ok, e = pcall(require("wechatpay").client)
          print(ok, type(e) == "table" and e.kind, tostring(e))
          print(debug.gethook() == nil)]]))
      assert.equal(0, code, text .. "\n" .. err)
      assert.equal("false\tconfig\tconfig file " .. cwd .. "/quan.config.lua takes too long to run (a loop?)\ntrue\n", out)
    end
  end)

  it("says that a profile is not a table", function()
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { a = 5 } }")
    assert.equal("ERR config file " .. cwd .. "/quan.config.lua: profile 'a' is not a table (it is a number)",
      (show(cwd, "HOME=" .. q(home))))
    assert.equal("ERR config file " .. cwd .. "/quan.config.lua: profile 'a' is not a table (it is a number)",
      (show(cwd, "HOME=" .. q(home), "a")))
  end)

  it("names a profile asked for when there is no config file", function()
    assert.equal("ERR profile 'prod': no config file (searched " .. cwd .. "/quan.config.lua, " .. home .. "/.config/quan/config.lua)",
      (show(cwd, "HOME=" .. q(home), "prod")))
  end)

  it("refuses a key file open to group or others (to others only, when another user owns it), as ssh does", function()
    local qos = require "quan.os"
    qos.mkdir(cwd .. "/keys")
    local key = sh.write(cwd .. "/keys/m.pem", "x")
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { a = { mchid = '1', private_key = 'file://keys/m.pem' } } }")
    for _, mode in ipairs { "644", "640", "604", "660", "602", "620" } do
      qos.chmod(key, tonumber(mode, 8))
      local out = show(cwd, "HOME=" .. q(home))
      assert.equal("ERR private_key file " .. key .. " is readable or writable by group or others (mode " .. mode
        .. "); quan refuses an unprotected key: run chmod 600 " .. key, out, mode)
    end
    for _, mode in ipairs { "600", "400" } do
      qos.chmod(key, tonumber(mode, 8))
      local out, err = show(cwd, "HOME=" .. q(home))
      assert.matches("^a\t1\t", out)
      assert.equal("quan: using config file " .. cwd .. "/quan.config.lua (found in the current directory)\n", err)
    end
    if qos.geteuid() ~= 0 then return end -- root alone can give a file to another user
    sh.run("chown 65534:0 " .. q(key))
    qos.chmod(key, tonumber("640", 8)) -- another user's key shared with a group: that owner's choice
    assert.matches("^a\t1\t", (show(cwd, "HOME=" .. q(home))))
    qos.chmod(key, tonumber("644", 8))
    assert.equal("ERR private_key file " .. key .. " is readable or writable by others (mode 644); "
      .. "quan refuses an unprotected key: run chmod o-rwx " .. key, (show(cwd, "HOME=" .. q(home))))
  end)

  it("announces a config file found in the current directory on stderr, once; not one the user named", function()
    require("quan.os").mkdir(home .. "/.config")
    require("quan.os").mkdir(home .. "/.config/quan")
    local own = sh.write(home .. "/.config/quan/config.lua", "return { profiles = { home = " .. profile("1") .. " } }")
    local out, err = show(cwd, "HOME=" .. q(home))
    assert.matches("^home\t1\t", out)
    assert.equal("", err) -- the user's own: nothing to say
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { here = " .. profile("2") .. " } }")
    out, err = run(cwd, "HOME=" .. q(home), [[
      local config = require "wechatpay.config"
      print(select(2, config.load()), (select(2, config.load())))]])
    assert.equal("here\there\n", out)
    assert.equal("quan: using config file " .. cwd .. "/quan.config.lua (found in the current directory)\n", err)
    out, err = show(cwd, "HOME=" .. q(home) .. " QUAN_CONFIG=" .. q(own))
    assert.matches("^home\t1\t", out)
    assert.equal("", err)
    local other = sh.write(home .. "/other.lua", "return { profiles = { other = " .. profile("3") .. " } }")
    out, err = show(cwd, "HOME=" .. q(home) .. " QUAN_CONFIG=" .. q(other))
    assert.matches("^other\t3\t", out)
    assert.equal("", err) -- named by the user: theirs
  end)

  it("refuses a config file, certs or ca_file that another user could change, naming the fix", function()
    local qos = require "quan.os"
    local file = sh.write(cwd .. "/quan.config.lua", "return { profiles = { a = " .. profile("1") .. " } }")
    for _, mode in ipairs { "664", "646", "666", "622" } do
      qos.chmod(file, tonumber(mode, 8))
      assert.equal("ERR config file " .. file .. " is writable by group or others (mode " .. mode
        .. "); quan refuses a config file another user can change: run chmod go-w " .. file,
        (show(cwd, "HOME=" .. q(home))), mode)
    end
    qos.chmod(file, tonumber("644", 8))
    -- its folder: others could put another file in its place
    qos.chmod(cwd, tonumber("777", 8))
    assert.equal("ERR config file " .. file .. ": its folder " .. cwd .. " is writable by group or others (mode 777), "
      .. "so another user could replace the file; quan refuses it: run chmod go-w " .. cwd, (show(cwd, "HOME=" .. q(home))))
    qos.chmod(cwd, tonumber("1777", 8)) -- sticky, as /tmp: only a file's owner may replace it
    assert.matches("^a\t1\t", (show(cwd, "HOME=" .. q(home))))
    qos.chmod(cwd, tonumber("700", 8))
    -- the files it names that decide whom quan trusts
    local pem = sh.write(cwd .. "/platform.pem", "x")
    local ca = sh.write(cwd .. "/ca.pem", "x")
    sh.write(file, "return { profiles = { a = " .. profile("1", ", ca_file = 'ca.pem', certs = { PUB_KEY_ID_1 = 'file://platform.pem' }") .. " } }")
    assert.matches("^a\t1\t", (show(cwd, "HOME=" .. q(home))))
    qos.chmod(pem, tonumber("664", 8))
    assert.equal('ERR certs["PUB_KEY_ID_1"] file ' .. pem .. " is writable by group or others (mode 664); "
      .. 'quan refuses a certs["PUB_KEY_ID_1"] file another user can change: run chmod go-w ' .. pem,
      (show(cwd, "HOME=" .. q(home))))
    qos.chmod(pem, tonumber("644", 8))
    qos.chmod(ca, tonumber("646", 8))
    assert.equal("ERR ca_file " .. ca .. " is writable by group or others (mode 646); "
      .. "quan refuses a ca_file another user can change: run chmod go-w " .. ca, (show(cwd, "HOME=" .. q(home))))
    qos.chmod(ca, tonumber("644", 8))
    if qos.geteuid() ~= 0 then return end -- root alone can give a file to another user
    sh.run("chown 65534 " .. q(file))
    assert.equal("ERR config file " .. file .. " is owned by uid 65534, neither you (uid 0) nor root; quan refuses "
      .. "a config file another user can change: make it yours (chown) or use a copy of your own",
      (show(cwd, "HOME=" .. q(home))))
    sh.run("chown 0 " .. q(file) .. " && chown 65534 " .. q(cwd))
    assert.equal("ERR config file " .. file .. ": its folder " .. cwd .. " is owned by uid 65534, neither you (uid 0) "
      .. "nor root, so another user could replace the file; quan refuses it: move the file into a folder of your own",
      (show(cwd, "HOME=" .. q(home))))
    sh.run("chown 0 " .. q(cwd))
  end)

  it("evaluates a config file in a child process, bounded in time and memory, and gets back only data", function()
    -- a pattern that backtracks for hours inside one C call, which no
    -- instruction count interrupts
    sh.write(cwd .. "/quan.config.lua", [[
      local s = ("a"):rep(5000)
      s:find(".-.-.-.-.-b")
      return { profiles = {} }]])
    local t0 = require("quan.os").now()
    local out = show(cwd, "HOME=" .. q(home) .. " timeout 60") -- (env runs `timeout 60 quan ...`)
    local took = require("quan.os").now() - t0
    assert.equal("ERR config file " .. cwd .. "/quan.config.lua takes too long to run (stopped after 5 s)", out)
    assert.is_true(took >= 5 and took < 30, took)
    for _, c in ipairs {
      { "local s = 'x' for _ = 1, 40 do s = s .. s end return {}", ": not enough memory" },
      { "return { profiles = { a = { hook = function() end } } }",
        ": profiles.a.hook is a function: a config file returns data (tables, strings, numbers, booleans)" },
      { "local t = {} t.me = t return { profiles = { a = t } }", ": profiles.a.me contains itself" },
      { "return { profiles = { [{}] = 1 } }", ": profiles has a table as a key: keys are strings, numbers or booleans" },
      { "return { profiles = { big = ('x'):rep(2 << 20) } }",
        ": the table it returns is too large (over 1048576 bytes written out)" },
      { "return 'text'", ": must return a table" },
    } do
      sh.write(cwd .. "/quan.config.lua", c[1])
      assert.equal("ERR config file " .. cwd .. "/quan.config.lua" .. c[2], (show(cwd, "HOME=" .. q(home))), c[1])
    end
    -- what comes back: strings with any byte, integers, floats, booleans, nested tables
    sh.write(cwd .. "/quan.config.lua", [[
      return { profiles = { a = { mchid = "1", bytes = "a\0b\n\"\255", n = 3, x = 0.1, huge = 1/0, yes = true,
        list = { 1, { 2, [1.5] = false } }, ["odd key"] = -0x7fffffffffffffff - 1 } } }]])
    out = run(cwd, "HOME=" .. q(home), [[
      local a = require("wechatpay.config").load()
      print(a.bytes == "a\0b\n\"\255", math.type(a.n), a.x == 0.1, a.huge, a.yes, a.list[2][1], a.list[2][1.5],
        a["odd key"] == math.mininteger)]])
    assert.equal("true\tinteger\ttrue\tinf\ttrue\t2\tfalse\ttrue\n", out)
    -- nothing left behind in the temporary folder
    local tmp = sh.tmpdir()
    run(cwd, "HOME=" .. q(home) .. " TMPDIR=" .. q(tmp), "require('wechatpay.config').load()")
    assert.same({}, require("quan.os").list(tmp))
  end)
end)

-- The seed's request (shared/seed/000_3ec811569fb18aa1.txt), its empty and
-- zero values filled so that it is a valid create-stock request.
local DAY = 24 * 3600
local BEGIN = ((os.time() + 8 * 3600) // DAY + 1) * DAY - 8 * 3600
local function rfc3339(t) return os.date("!%Y-%m-%dT%H:%M:%S.000+08:00", t + 8 * 3600) end

local function seed_request(out_request_no, mchid)
  mchid = mchid or "1900000001"
  return {
    stock_name = "微信支付代金券批次",
    available_begin_time = rfc3339(BEGIN),
    available_end_time = rfc3339(BEGIN + 30 * DAY - 1),
    stock_use_rule = {
      max_coupons = 100, max_amount = 10000, max_amount_by_day = 1000,
      max_coupons_per_user = 1, natural_person_limit = true, prevent_api_abuse = true,
    },
    no_cash = true,
    stock_type = "NORMAL",
    comment = "零售批次",
    belong_merchant = mchid,
    pattern_info = {
      description = "满10元减1元", merchant_logo = "https://qpic.cn/logo",
      merchant_name = "示例商户", background_color = "Color010", coupon_image = "https://qpic.cn/image",
    },
    coupon_use_rule = {
      coupon_available_time = {
        available_begin_time = rfc3339(BEGIN),
        available_end_time = rfc3339(BEGIN + 30 * DAY - 1),
        fix_available_time = { available_week_day = { 0, 1, 2, 3, 4, 5, 6 }, begin_time = 3600, end_time = 86399 },
        second_day_available = true,
      },
      fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 1000 },
      goods_tag = { "123321" },
      limit_pay = { "ICBC_CREDIT" },
      limit_card = { name = "精粹白金", bin = { "62123456" } },
      trade_type = { "MICROAPP" },
      available_items = { "123321" },
      unavailable_items = { "789987" },
      available_merchants = { mchid },
    },
    out_request_no = out_request_no,
    ext_info = '{"exinfo1":"1234","exinfo2":"3456"}',
  }
end

local describe_live = have_natives and describe or pending

describe_live("wechatpay client against the stand-in server", function()
  local wechatpay = require "wechatpay"
  local wxfake = require "tests.support.wxfake"
  local fake, wx
  local n = 0
  local function ref()
    n = n + 1
    return ("quan%s%04d"):format(os.date("%H%M%S"), n)
  end

  setup(function()
    fake = wxfake.start()
    wx = wechatpay.new(fake.options())
  end)
  teardown(function()
    if fake then fake.stop() end
  end)

  local function fails(kind, code, res, err)
    assert.is_nil(res)
    assert.is_table(err)
    assert.equal(kind, err.kind)
    assert.equal(code, err.code)
    return err
  end

  describe("construction", function()
    local function config_error(opts)
      local ok, e = pcall(wechatpay.new, opts)
      assert.is_false(ok)
      assert.is_true(wechatpay.errors.is(e), tostring(e))
      assert.equal("config", e.kind)
      return tostring(e)
    end

    it("keeps the profile without secrets and the merchant id", function()
      assert.equal(wxfake.MCHID, wx.mchid)
      assert.equal(fake.base_url, wx.profile.base_url)
      assert.is_nil(wx.profile.private_key)
      assert.is_nil(wx.profile.apiv3_key)
      assert.is_nil(wx.sandbox)
    end)

    it("refuses a key file given to new that is open to group or others", function()
      local dir = sh.tmpdir()
      local key = dir .. "/open.key.pem"
      sh.write(key, sh.read(fake.dir .. "/merchant.key.pem"))
      require("quan.os").chmod(key, tonumber("644", 8))
      assert.equal("private_key file " .. key .. " is readable or writable by group or others (mode 644); "
        .. "quan refuses an unprotected key: run chmod 600 " .. key, config_error(fake.options { private_key = "file://" .. key }))
      require("quan.os").chmod(key, tonumber("600", 8))
      assert.equal(wxfake.MCHID, wechatpay.new(fake.options { private_key = "file://" .. key }).mchid)
    end)

    it("raises a config error naming the key", function()
      local own = fake.options()
      own.certs[wxfake.MERCHANT_SERIAL] = "file://" .. fake.dir .. "/merchant.crt.pem"
      assert.matches('certs%["' .. wxfake.MERCHANT_SERIAL .. "\"%]: is the merchant's own certificate serial", config_error(own))
      local lower = fake.options()
      lower.certs = { [wxfake.MERCHANT_SERIAL:lower()] = "file://" .. fake.dir .. "/platform.pub.pem" }
      assert.matches("is the merchant's own certificate serial", config_error(lower))
      local wrong = fake.options()
      wrong.certs = { ["0ABC"] = "file://" .. fake.dir .. "/platcert.crt.pem" }
      assert.equal('certs["0ABC"]: the certificate\'s serial is ' .. wxfake.PLATFORM_SERIAL, config_error(wrong))
      assert.matches('^certs%["PUB_KEY_ID_1"%]: not a certificate or public key',
        config_error(fake.options { certs = { PUB_KEY_ID_1 = "not a pem" } }))
      assert.matches("^private_key: ", config_error(fake.options { private_key = "file://" .. fake.dir .. "/missing.pem" }))
      assert.equal("private_key: expected a file:// path or PEM text", config_error(fake.options { private_key = 42 }))
      assert.equal("mchid: expected the merchant id (digits)", config_error(fake.options { mchid = "abc" }))
      assert.equal("serial: expected the merchant certificate serial in hex", config_error(fake.options { serial = "xyz" }))
      assert.equal("apiv3_key: expected 32 bytes, got 5", config_error(fake.options { apiv3_key = "short" }))
      assert.equal("base_url: expected https://host[:port], got http://x", config_error(fake.options { base_url = "http://x" }))
      assert.equal("ca_file: cannot read /nonexistent/ca.pem: No such file or directory",
        config_error(fake.options { ca_file = "/nonexistent/ca.pem" }))
      assert.equal("wechatpay.new: unknown option 'mchId' (did you mean mchid?)", config_error(fake.options { mchId = "1" }))
      for _, bad in ipairs { 0 / 0, math.huge, -math.huge, 0, -1, "5" } do
        assert.equal("timeout: expected a positive, finite number of seconds, got " .. tostring(bad),
          config_error(fake.options { timeout = bad }))
      end
      assert.equal("wechatpay.new: expected a table of options, got nil", config_error(nil))
    end)
  end)

  describe("the API tree", function()
    it("keeps property-chain nodes but not array-style paths or ids", function()
      local a = wx.v3.marketing.favor.couponStocks
      assert.equal(a, wx.v3.marketing.favor.couponStocks)
      for i = 1, 50 do
        local n = wx["v3/marketing/favor/stocks/" .. i]
        assert.equal("wechatpay.node /v3/marketing/favor/stocks/" .. i, tostring(n))
        assert.equal(tostring(n), tostring(wx.v3.marketing.favor.stocks[tostring(i)]))
      end
      assert.is_nil(rawget(wx, "v3/marketing/favor/stocks/7"))
      assert.is_nil(rawget(wx.v3.marketing.favor.stocks, "7"))
      assert.is_not_nil(rawget(wx, "v3"))
    end)
  end)

  describe("the six forms of the seed", function()
    local function check(res, no)
      assert.equal(200, res.status)
      assert.equal("SID-" .. no, res.json.stock_id)
      assert.is_string(res.json.create_time)
      assert.matches("^FAKE%-", res.request_id)
      -- the raw bytes as the server wrote them (python's ", " and ": "), not a re-encoding
      assert.matches('^{"stock_id": "SID%-' .. no:gsub("%p", "%%%0") .. '", "concurrent": %d+, "create_time": "', res.body)
    end

    it("sync property chain", function()
      local no = ref()
      check(assert(wx.v3.marketing.favor.couponStocks:post { json = seed_request(no) }), no)
    end)
    it("sync declarative chain", function()
      local no = ref()
      check(assert(wx:chain("v3/marketing/favor/coupon-stocks"):post { json = seed_request(no) }), no)
    end)
    it("sync array-style key", function()
      local no = ref()
      check(assert(wx["v3/marketing/favor/coupon-stocks"]:post { json = seed_request(no) }), no)
    end)
    it("async property chain, :next then :wait", function()
      local no = ref()
      local got = wx.v3.marketing.favor.couponStocks:postAsync { json = seed_request(no) }
        :next(function(res) return res.json.stock_id end):wait()
      assert.equal("SID-" .. no, got)
    end)
    it("async declarative chain", function()
      local no = ref()
      check(wx:chain("v3/marketing/favor/coupon-stocks"):postAsync { json = seed_request(no) }:wait(), no)
    end)
    it("async array-style key", function()
      local no = ref()
      check(wx["v3/marketing/favor/coupon-stocks"]:postAsync { json = seed_request(no) }:wait(), no)
    end)
  end)

  describe("the request on the wire", function()
    it("encodes path variables and the query; values keep their capitals and +", function()
      local res = assert(wx.v3.marketing.favor.stocks._stock_id_.useFlow:get {
        stock_id = "AbC+9/é", query = { stock_creator_mchid = "1900000001", t = "2027-03-01T00:00:00+08:00" },
      })
      local e = res.json
      assert.equal("GET", e.method)
      assert.equal("/v3/marketing/favor/stocks/AbC%2B9%2F%C3%A9/use-flow?stock_creator_mchid=1900000001"
        .. "&t=2027-03-01T00%3A00%3A00%2B08%3A00", e.target)
      assert.equal("/v3/marketing/favor/stocks/AbC+9/é/use-flow", e.path)
      assert.equal("", e.body)
    end)

    it("sends the headers the protocol asks for", function()
      local e = assert(wx.v3.echo:post { json = { a = 1 } }).json
      assert.equal("application/json", e.headers["accept"])
      assert.equal("application/json", e.headers["content-type"])
      assert.equal("quan/" .. wechatpay._VERSION, e.headers["user-agent"])
      assert.equal(wxfake.PUBKEY_ID, e.headers["wechatpay-serial"])
      assert.matches('^WECHATPAY2%-SHA256%-RSA2048 mchid="1900000001",serial_no="' .. wxfake.MERCHANT_SERIAL
        .. '",timestamp="%d+",nonce_str="%w+",signature="[%w+/=]+"$', e.headers["authorization"])
      assert.equal('{"a":1}', e.body)
    end)

    it("sends a raw body and extra headers as given, for every verb", function()
      for _, verb in ipairs { "get", "post", "put", "patch", "delete" } do
        local body = '{"x": 1 }'
        if verb == "get" then body = nil end
        local e = assert(wx.v3.echo[verb](wx.v3.echo, { body = body, headers = { ["X-Extra"] = "yes" } })).json
        assert.equal(verb:upper(), e.method)
        assert.equal(verb == "get" and "" or '{"x": 1 }', e.body)
        assert.equal("yes", e.headers["x-extra"])
      end
    end)

    it("signs the path prefix of a base_url that has one (a gateway)", function()
      local gw = wechatpay.new(fake.options { base_url = fake.base_url .. "/gw/" })
      local e = assert(gw.v3.echo:get { query = { a = "1" } }).json
      assert.equal("/gw/v3/echo?a=1", e.target)
    end)

    it("decodes integral numbers as integers and keeps strings", function()
      local j = assert(wx.v3.echo:get()).json
      assert.equal("integer", math.type(j.numbers.int))
      assert.equal(5000, j.numbers.int)
      assert.equal(12345678901, j.numbers.big)
      assert.equal(1.5, j.numbers.float)
    end)

    it("gives res.json nil for a body of JSON null; a huge integer stays a float", function()
      local function answer(body)
        wechatpay.hooks.before_send = function() return { status = 200, headers = {}, body = body } end
        local res, err = wx.v3.echo:get()
        wechatpay.hooks.before_send = nil
        return res, err
      end
      local res = assert(answer("null"))
      assert.is_nil(res.json)
      assert.equal("null", res.body)
      res = assert(answer(" null "))
      assert.is_nil(res.json)
      assert.is_false(assert(answer("false")).json)
      local _, err = answer("nul")
      assert.equal("bad_json", err.code)
      res = assert(answer('{"n":123456789012345678901234567890,"m":9007199254740993}'))
      assert.equal("float", math.type(res.json.n))
      assert.equal(1.2345678901234568e29, res.json.n)
      assert.equal(9007199254740992, res.json.m) -- past 2^53: a double's nearest
    end)

    it("uploads an image: meta first, signed over the meta only", function()
      local png = sh.write(fake.dir .. "/logo.png", "\137PNG\r\n\26\n" .. ("x"):rep(300))
      local res = assert(wx.v3.marketing.favor.media.imageUpload:post { file = png })
      local sha = require("quan.crypto").sha256(sh.read(png))
      assert.equal("https://fake.example/" .. sha, res.json.media_url)
      assert.equal('{"filename":"logo.png","sha256":"' .. sha .. '"}', res.json.meta)
      assert.equal("image/png", res.json.file_type)
    end)

    it("uploads only a regular file of 1 byte to 2 MB, refused before it is read otherwise", function()
      local up = wx.v3.marketing.favor.media.imageUpload
      local ctx = "POST /v3/marketing/favor/media/image-upload: option 'file': "
      local dir = sh.tmpdir()
      assert.equal(2 * 1024 * 1024, require("wechatpay.client").UPLOAD_LIMIT)
      for _, path in ipairs { dir, "/dev/zero" } do
        assert.has_error(function() up:post { file = path } end, ctx .. path .. " is not a regular file")
      end
      assert.has_error(function() up:post { file = dir .. "/none.png" } end,
        ctx .. "cannot read " .. dir .. "/none.png: No such file or directory")
      local big = sh.write(dir .. "/big.png", ("x"):rep(2 * 1024 * 1024 + 1))
      assert.has_error(function() up:post { file = big } end,
        ctx .. big .. " is 2097153 bytes, over the upload limit of 2097152 bytes (2 MB)")
      local empty = sh.write(dir .. "/empty.png", "")
      assert.has_error(function() up:post { file = empty } end, ctx .. empty .. " is empty")
      -- exactly the limit goes out (answered by a hook: nothing sent)
      local full = sh.write(dir .. "/full.png", ("x"):rep(2 * 1024 * 1024))
      local sent
      wechatpay.hooks.before_send = function(req) sent = #req.body return { status = 200, headers = {}, body = "{}" } end
      local ok, res = pcall(up.post, up, { file = full })
      wechatpay.hooks.before_send = nil
      assert(ok, res)
      assert.is_true(sent > 2 * 1024 * 1024)
    end)

    it("refuses a header that would break the request, before signing, at the caller's line", function()
      local signed = 0
      for _, case in ipairs {
        { { X = "a\r\nB: c" }, "header 'X': the value has a CR, LF or NUL byte" },
        { { X = "a\nb" }, "header 'X': the value has a CR, LF or NUL byte" },
        { { X = "a\0b" }, "header 'X': the value has a CR, LF or NUL byte" },
        { { "X: a\r\nB: c" }, "header 'X': the value has a CR, LF or NUL byte" },
        { { [""] = "a" }, "header '': the name is empty" },
        { { ": a" }, "header '': the name is empty" },
        { { ["X\r\nY"] = "a" }, "header 'X\\x0D\\x0AY': the name is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)" },
        { { ["X\0"] = "a" }, "header 'X\\x00': the name is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)" },
        { { "X Y: a" }, "header 'X Y': the name is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)" },
        { { "Authorization: x" }, "header 'Authorization' is the client's to set" },
        { { X = 0 / 0 }, "header 'X' must be a string or a finite number" },
        { { X = {} }, "header 'X' must be a string" },
        { { 5 }, "option 'headers': line 1 must be a string 'Name: value'" },
        { { [true] = "x" }, "option 'headers': key true is neither a header name nor a line 1..0" },
        { { "NoColon" }, "header 'NoColon' is not 'Name: value'" },
      } do
        wechatpay.hooks.before_send = function() signed = signed + 1 return { status = 200, headers = {}, body = "{}" } end
        local line = debug.getinfo(1, "l").currentline + 1
        local ok, msg = pcall(function() local r = wx.v3.echo:post { json = {}, headers = case[1] } return r end)
        wechatpay.hooks.before_send = nil
        assert.is_false(ok)
        assert.equal("tests/client_spec.lua:" .. line .. ": POST /v3/echo: " .. case[2], msg)
      end
      assert.equal(0, signed)
      -- what is fine: a name with token punctuation, a number, a line with spaces around the colon
      local e = assert(wx.v3.echo:post { json = {}, headers = { ["X-A.b_c~1"] = 1.0, "X-Line :  v" } }).json
      assert.equal("1", e.headers["x-a.b_c~1"])
      assert.equal("v", e.headers["x-line"])
    end)

    it("refuses a body or query WeChat Pay would misread, with or without the validator", function()
      for _, validate in ipairs { true, false } do
        for _, case in ipairs {
          { { json = { [1] = 1, [3] = 3 } }, "option 'json': is a sparse array (2 values under keys up to 3, none at [2]); use a sequence 1..n" },
          { { json = { a = { "x", nil, "z" } } }, "option 'json': field a: is a sparse array (2 values under keys up to 3, none at [2]); use a sequence 1..n" },
          { { json = { a = "\xff\xfe" } }, "option 'json': field a: is not valid UTF-8 (at byte 1)" },
          { { json = { ["k\xff"] = 1 } }, "option 'json': has a key that is not valid UTF-8 (at byte 2)" },
          { { json = { a = 0 / 0 } }, "option 'json': field a: is not a finite number (NaN)" },
          { { query = { x = 0 / 0, y = 1 } }, "query 'x' must be a finite number (got NaN)" },
          { { query = { y = math.huge } }, "query 'y' must be a finite number (got inf)" },
        } do
          local opts = case[1]
          opts.validate = validate
          local line = debug.getinfo(1, "l").currentline + 1
          local ok, msg = pcall(function() local r = wx.v3.echo:post(opts) return r end)
          assert.is_false(ok)
          assert.equal("tests/client_spec.lua:" .. line .. ": POST /v3/echo: " .. case[2], msg)
        end
      end
      local dir = sh.tmpdir()
      local png = sh.write(dir .. "/logo.png", "\137PNG")
      assert.has_error(function() wx.v3.marketing.favor.media.imageUpload:post { file = png, filename = "\xfflogo.png" } end,
        "POST /v3/marketing/favor/media/image-upload: option 'filename' is not valid UTF-8")
    end)

    it("raises on programmer errors, naming the request", function()
      assert.has_error(function() wx.v3.echo:post { josn = {} } end, "POST /v3/echo: unknown option 'josn' (did you mean json?)")
      assert.has_error(function() wx.v3.stocks._stock_id_:get {} end,
        "GET /v3/stocks/{stock_id}: missing path variable 'stock_id'")
      assert.has_error(function() wx.v3.echo:post "x" end, "POST /v3/echo: expected a table of options, got string")
      assert.has_error(function() wx.v3.echo:post { json = {}, body = "" } end,
        "POST /v3/echo: options 'json', 'body' and 'file' exclude each other")
      assert.has_error(function() wx.v3.echo:get { query = { t = { x = 1 } } } end,
        "GET /v3/echo: query 't' must be a string, number, boolean or an array of them")
      assert.has_error(function() wx.v3.echo.post { json = {} } end, "post: call it with ':' (node:post{...})")
      for _, bad in ipairs { 0 / 0, math.huge, 0, -1, "5" } do
        assert.has_error(function() wx.v3.echo:get { timeout = bad } end,
          "GET /v3/echo: option 'timeout' must be a positive, finite number of seconds (got " .. tostring(bad) .. ")")
      end
      assert.has_error(function() wx:chain(1) end, "chain: expected a path string, got number")
      -- raised at the caller's line
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, msg = pcall(function() local _ = wx.v3.echo:getAsync { nope = 1 } end)
      assert.is_false(ok)
      assert.equal("tests/client_spec.lua:" .. line .. ": GET /v3/echo: unknown option 'nope'", msg)
      assert.equal("wechatpay.node /v3/client/segments", tostring(wx.v3.client.segments))
    end)
  end)

  describe("verification of 2xx answers", function()
    local function tamper(spec)
      return wx.v3.echo:get { headers = { ["X-Fake"] = spec } }
    end

    it("fails when any of the four headers is missing", function()
      for _, name in ipairs { "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial" } do
        local err = fails("verify", "missing_header", tamper("missing=" .. name))
        assert.equal(200, err.status)
        assert.equal(1, tostring(err):find("GET /v3/echo: verify: response header " .. name .. " missing", 1, true))
        assert.is_false(err.retryable)
      end
    end)

    it("fails on a skew of 301 s either way, passes at 300", function()
      -- the server stamps now + 301 in whole seconds; when the client's clock
      -- passes a second boundary before it checks, the skew it sees is 300.
      -- Up to three tries: without the check every one passes.
      local res, err
      for _ = 1, 3 do
        res, err = tamper("skew=301")
        if not res then break end
      end
      fails("verify", "clock_skew", res, err)
      fails("verify", "clock_skew", tamper("skew=-301"))
      assert(tamper("skew=300"))
    end)

    it("fails on an unknown serial, accepts a hex serial in lower case", function()
      local err = fails("verify", "unknown_serial", tamper("serial=PUB_KEY_ID_0000000000000000000000000000"))
      assert.matches("unknown serial PUB_KEY_ID_0000000000000000000000000000", err.message)
      assert(tamper("signer=" .. wxfake.PLATFORM_SERIAL))
      assert(tamper("signer=" .. wxfake.PLATFORM_SERIAL .. ",serial_lower"))
    end)

    it("fails on a bad signature, a SIGNTEST probe and one changed body byte", function()
      fails("verify", "bad_signature", tamper("badsig"))
      fails("verify", "bad_signature", tamper("signtest"))
      local err = fails("verify", "bad_signature", tamper("flip"))
      assert.matches("^GET /v3/echo: verify: response signature does not verify", err.message)
    end)

    it("does not verify the unsigned file download of use-flow and refund-flow URLs", function()
      local url = fake.base_url .. "/v3/billdownload/file?token=T0K%2B"
      local res = assert(wx:download(url))
      assert.equal("stock_id,coupon_id\n1,2\n", res.body)
      assert.is_nil(res.json)
      res = assert(wx.v3.billdownload.file:get { query = { token = "T0K+" } })
      assert.equal(200, res.status)
      assert.has_error(function() wx:download("https://elsewhere.example/v3/billdownload/file") end,
        "download: URL is not on " .. fake.base_url)
      -- a download keeps up to DOWNLOAD_LIMIT bytes (1 GiB), past it: too_large
      local client = require "wechatpay.client"
      assert.equal(1024 * 1024 * 1024, client.DOWNLOAD_LIMIT)
      client.DOWNLOAD_LIMIT = 10
      local ok, r, e = pcall(wx.download, wx, url)
      client.DOWNLOAD_LIMIT = 1024 * 1024 * 1024
      assert(ok, r)
      assert.is_nil(r)
      assert.equal("network", e.kind)
      assert.equal("too_large", e.code)
    end)

    it("verifies an empty 204 answer", function()
      local res = assert(tamper("empty"))
      assert.equal(204, res.status)
      assert.equal("", res.body)
      assert.is_nil(res.json)
    end)
  end)

  describe("notifications", function()
    it("decrypts a resource with the APIv3 key", function()
      local crypto = require "quan.crypto"
      local key = sh.read(fake.dir .. "/apiv3.key")
      local ct = crypto.aes_gcm_encrypt(key, "0123456789ab", "coupon", '{"coupon_id":"9"}')
      assert.equal('{"coupon_id":"9"}', wx:decrypt { ciphertext = ct, nonce = "0123456789ab", associated_data = "coupon" })
      local plain, err = wx:decrypt { ciphertext = ct, nonce = "0123456789ab", associated_data = "other" }
      assert.is_nil(plain)
      assert.is_true(require("wechatpay.errors").is(err))
      assert.equal("verify", err.kind)
      assert.equal("decrypt", err.code)
      assert.is_false(err.retryable)
      assert.matches("^decrypt: the resource does not decrypt with the APIv3 key", err.message)
      assert.matches("authentication failed", tostring(err))
      -- a ciphertext that is not even base64 fails the same way
      plain, err = wx:decrypt { ciphertext = "%%%", nonce = "0123456789ab" }
      assert.is_nil(plain)
      assert.equal("decrypt", err.code)
    end)

    -- notice{...} -> headers, body: a COUPON.USE notification as WeChat Pay
    -- sends it, signed with the fake's platform key; fields of the table
    -- change one part (plain, algorithm, key, body, ts, type, serial)
    local function notice(o)
      o = o or {}
      local crypto = require "quan.crypto"
      local cjson = require "cjson"
      local platform = assert(crypto.private_key("file://" .. fake.dir .. "/platform.key.pem"))
      local nonce = "0123456789ab"
      local plain = o.plain or '{"coupon_id":"98000000001","status":"USED","stock_id":"9876"}'
      local body = o.body or cjson.encode {
        id = "EV-2026112812000012345", create_time = "2026-11-28T12:00:00+08:00", event_type = "COUPON.USE",
        resource_type = "encrypt-resource", summary = "用券成功",
        resource = { original_type = "coupon", algorithm = o.algorithm or "AEAD_AES_256_GCM", associated_data = "coupon",
          nonce = nonce, ciphertext = crypto.aes_gcm_encrypt(o.key or sh.read(fake.dir .. "/apiv3.key"), nonce, "coupon", plain) },
      }
      local ts = tostring(o.ts or os.time())
      local n = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
      return {
        ["Wechatpay-Timestamp"] = ts, ["Wechatpay-Nonce"] = n, ["Wechatpay-Serial"] = o.serial or wxfake.PUBKEY_ID,
        ["Wechatpay-Signature"] = platform:sign(ts .. "\n" .. n .. "\n" .. body .. "\n"),
        ["Wechatpay-Signature-Type"] = o.type or "WECHATPAY2-SHA256-RSA2048", ["Request-ID"] = "08F78BB5AF0610D3-0",
      }, body
    end

    it("verifies a notification over its raw body and decrypts its resource", function()
      local headers, body = notice()
      local ev = assert(wx:notification(headers, body))
      assert.equal("COUPON.USE", ev.event_type)
      assert.equal("EV-2026112812000012345", ev.id)
      assert.same({ coupon_id = "98000000001", status = "USED", stock_id = "9876" }, ev.data)
      assert.equal("08F78BB5AF0610D3-0", ev.request_id)
      for _, spell in ipairs { string.lower, string.upper } do -- as servers hand them over
        local h = {}
        for k, v in pairs(headers) do h[spell(k)] = v end
        assert.equal("USED", assert(wx:notification(h, body)).data.status)
      end
    end)

    it("names the check a notification fails", function()
      local function code(headers, body, opts)
        local ev, err = wx:notification(headers, body, opts)
        assert.is_nil(ev)
        assert.equal("verify", err.kind)
        assert.matches("^notification: ", err.message)
        return err.code
      end
      local headers, body = notice()
      assert.equal("bad_signature", code(headers, (body:gsub("COUPON", "COUPOM"))))
      for _, name in ipairs { "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial" } do
        local h = {}
        for k, v in pairs(headers) do if k ~= name then h[k] = v end end
        assert.equal("missing_header", code(h, body), name)
      end
      assert.equal("unknown_serial", code(notice { serial = "PUB_KEY_ID_0000000000000000000000000000" }))
      local old = os.time() - 301
      assert.equal("clock_skew", code(notice { ts = old }))
      headers, body = notice { ts = old }
      assert(wx:notification(headers, body, { max_skew = false }))      -- a replay, accepted on purpose
      assert(wx:notification(headers, body, { now = old + 300 }))
      assert.equal("signature_type", code(notice { type = "WECHATPAY2-SM2-WITH-SM3" }))
      assert.equal("algorithm", code(notice { algorithm = "AEAD_SM4_GCM" }))
      assert.equal("decrypt", code(notice { key = "0123456789abcdef0123456789abcdeX" }))
      assert.equal("bad_plaintext", code(notice { plain = "not json" }))
      assert.equal("bad_json", code(notice { body = "[1, 2]" }))
      assert.equal("bad_resource", code(notice { body = '{"id":"EV-1","resource":{"algorithm":"AEAD_AES_256_GCM"}}' }))
    end)

    -- answer(entries, signer) -> a crafted GET /v3/certificates answer for
    -- before_send: entries {serial, pem}, signed by signer {key, serial}
    local function certificates_answer(entries, signer, body)
      local crypto = require "quan.crypto"
      local cjson = require "cjson"
      local apiv3 = sh.read(fake.dir .. "/apiv3.key")
      local data = {}
      for i, e in ipairs(entries) do
        data[i] = { serial_no = e.serial, effective_time = "2099-01-01T00:00:00+08:00", expire_time = "2099-12-31T00:00:00+08:00",
          encrypt_certificate = { algorithm = "AEAD_AES_256_GCM", nonce = "0123456789ab", associated_data = "certificate",
            ciphertext = crypto.aes_gcm_encrypt(apiv3, "0123456789ab", "certificate", e.pem) } }
      end
      body = body or cjson.encode { data = data }
      local ts, n = tostring(os.time()), "N0NCE"
      return { status = 200, body = body, headers = {
        ["Wechatpay-Timestamp"] = ts, ["Wechatpay-Nonce"] = n, ["Wechatpay-Serial"] = signer.serial,
        ["Wechatpay-Signature"] = signer.key:sign(ts .. "\n" .. n .. "\n" .. body .. "\n") } }
    end

    it("takes from a certificates answer only what passes every check", function()
      local crypto = require "quan.crypto"
      local platform = { key = assert(crypto.private_key("file://" .. fake.dir .. "/platform.key.pem")), serial = wxfake.PUBKEY_ID }
      local other = crypto.generate_rsa(2048)
      local function cert(serial, key)
        return crypto.make_certificate { key = key or other, subject = "/CN=platform", serial = serial }:pem()
      end
      local function try(answer)
        wechatpay.hooks.before_send = function() return answer end
        local list, err = wx:certificates()
        wechatpay.hooks.before_send = nil
        return list, err
      end
      -- a new certificate, signed by the key the client holds: taken; times from the certificate
      local list = assert(try(certificates_answer({ { serial = "0a0b", pem = cert("0A0B") } }, platform)))
      assert.equal("0A0B", list[1].serial_no)
      assert.not_equal("2099-12-31T00:00:00+08:00", list[1].expire_time)
      local function code(answer)
        local l, err = try(answer)
        assert.is_nil(l)
        assert.equal("verify", err.kind)
        return err.code, err.message
      end
      -- a certificate under a serial the client holds, with another key (any case): refused
      local known = wxfake.PLATFORM_SERIAL
      assert.equal("bad_plaintext", code(certificates_answer({ { serial = known:lower(), pem = cert(known) } }, platform)))
      -- and it cannot sign in that serial's place
      assert.equal("bad_signature", code(certificates_answer({ { serial = known:lower(), pem = cert(known) } },
        { key = other, serial = known:lower() })))
      -- twice the same serial; the merchant's own serial; no certificates; not a PEM certificate
      assert.equal("bad_resource", code(certificates_answer({ { serial = "0A0B", pem = cert("0A0B") },
        { serial = "0a0b", pem = cert("0A0B") } }, platform)))
      assert.equal("bad_resource", code(certificates_answer({ { serial = wxfake.MERCHANT_SERIAL,
        pem = cert(wxfake.MERCHANT_SERIAL) } }, platform)))
      assert.equal("bad_json", code(certificates_answer({}, platform, '{"data":[]}')))
      assert.equal("bad_plaintext", code(certificates_answer({ { serial = "0A0B", pem = "file://" .. fake.dir .. "/platcert.crt.pem" } }, platform)))
      -- signed under a serial neither held nor carried
      assert.equal("unknown_serial", code(certificates_answer({ { serial = "0A0B", pem = cert("0A0B") } },
        { key = other, serial = "0C0D" })))
      -- a signer header that is not one string
      local twice = certificates_answer({ { serial = "0A0B", pem = cert("0A0B") } }, platform)
      twice.headers["Wechatpay-Serial"] = { wxfake.PUBKEY_ID, "0A0B" }
      assert.same({ "bad_header", "GET /v3/certificates: verify: response header Wechatpay-Serial is a table of 2 values, not one string" },
        { code(twice) })
      -- signed by a known serial but garbled: the signature is what fails, before any decryption
      local bad = certificates_answer({ { serial = "0A0B", pem = cert("0A0B") } }, platform)
      bad.body = bad.body:gsub('"ciphertext":"', '"ciphertext":"AAAA', 1)
      assert.equal("bad_signature", code(bad))
      -- several certificates (a switch): all taken, one signing for the answer
      local key2 = crypto.generate_rsa(2048)
      list = assert(try(certificates_answer({ { serial = "0A0B", pem = cert("0A0B") }, { serial = "0E0F", pem = cert("0E0F", key2) } },
        { key = key2, serial = "0e0f" })))
      assert.equal(2, #list)
    end)

    it("takes header values a web framework hands over: numbers, one-string arrays; refuses others", function()
      local headers, body = notice()
      local function with(name, v)
        local h = {}
        for k, x in pairs(headers) do h[k] = x end
        h[name] = v
        return h
      end
      -- a timestamp as a number, a repeated header as an array of one
      assert(wx:notification(with("Wechatpay-Timestamp", tonumber(headers["Wechatpay-Timestamp"])), body))
      assert(wx:notification(with("Wechatpay-Serial", { headers["Wechatpay-Serial"] }), body))
      assert(wx:notification(with("Request-ID", { "R" }), body))
      local function fails_with(h)
        local ev, err = wx:notification(h, body)
        assert.is_nil(ev)
        assert.equal("verify", err.kind)
        return err.code, err.message
      end
      assert.same({ "bad_header", "notification: header Wechatpay-Serial is a table of 2 values, not one string" },
        { fails_with(with("Wechatpay-Serial", { "a", "b" })) })
      assert.same({ "bad_header", "notification: header Wechatpay-Signature is a boolean, not one string" },
        { fails_with(with("Wechatpay-Signature", true)) })
      assert.same({ "bad_header", "notification: header Wechatpay-Signature-Type is a table of 2 values, not one string" },
        { fails_with(with("Wechatpay-Signature-Type", { "a", "b" })) })
      assert.same({ "unknown_serial", "notification: signed by unknown serial 12345" },
        { fails_with(with("Wechatpay-Serial", 12345)) })
      local _, err = wx:notification(with("Request-ID", { "a", "b" }), "{}")
      assert.is_nil(err.request_id)
    end)

    it("raises for bad opts, naming the option", function()
      local headers, body = notice()
      for _, case in ipairs {
        { { now = "x" }, "notification: opts.now must be epoch seconds (a finite number)" },
        { { now = 0 / 0 }, "notification: opts.now must be epoch seconds (a finite number)" },
        { { now = math.huge }, "notification: opts.now must be epoch seconds (a finite number)" },
        { { max_skew = "5" }, "notification: opts.max_skew must be seconds (>= 0) or false" },
        { { maxskew = 5 }, "notification: unknown option 'maxskew'" },
        { { [1] = true }, "notification: unknown option '1'" },
      } do
        local line = debug.getinfo(1, "l").currentline + 1
        local ok, msg = pcall(function() local r = wx:notification(headers, body, case[1]) return r end)
        assert.is_false(ok)
        assert.equal("tests/client_spec.lua:" .. line .. ": " .. case[2], msg)
      end
    end)

    it("raises for what is not a notification's headers and body, or no APIv3 key", function()
      local headers, body = notice()
      assert.has_error(function() wx:notification("x", body) end,
        "notification: expected the request's headers (a table)")
      assert.has_error(function() wx:notification(headers, {}) end,
        "notification: expected the request's raw body (a string)")
      for _, bad in ipairs { "5", -1, 0 / 0 } do
        assert.has_error(function() wx:notification(headers, body, { max_skew = bad }) end,
          "notification: opts.max_skew must be seconds (>= 0) or false")
      end
      local opts = fake.options()
      opts.apiv3_key = nil
      local bare = wechatpay.new(opts)
      assert.has_error(function() bare:notification(headers, body) end,
        "notification: the client has no apiv3_key (it decrypts notifications)")
    end)
  end)

  describe("error tables", function()
    it("reports a business 4xx, not retryable", function()
      local err = fails("http", "PARAM_ERROR", wx.v3.echo:get { headers = { ["X-Fake"] = "status=400" } })
      assert.equal(400, err.status)
      assert.is_false(err.retryable)
      assert.equal("/x", err.detail.field)
      assert.matches("^FAKE%-", err.request_id)
      assert.equal("GET /v3/echo: PARAM_ERROR: fake status 400 (status 400, request-id " .. err.request_id .. ")", tostring(err))
    end)

    it("reports 5xx and 429 as retryable", function()
      local err = fails("http", "SYSTEM_ERROR", wx.v3.echo:get { headers = { ["X-Fake"] = "status=500" } })
      assert.equal(500, err.status)
      assert.is_true(err.retryable)
      err = fails("http", "RATELIMIT_EXCEED", wx.v3.echo:get { headers = { ["X-Fake"] = "status=429" } })
      assert.is_true(err.retryable)
    end)

    it("reports a signed 2xx answer that is not valid JSON, never a success without json", function()
      local err = fails("http", "bad_json", wx.v3.echo:get { headers = { ["X-Fake"] = "garble" } })
      assert.equal(200, err.status)
      assert.is_false(err.retryable)
      assert.matches("^FAKE%-", err.request_id)
      assert.matches("^GET /v3/echo: answer is not valid JSON: ", err.message)
      assert.is_string(err.body)
      -- the same from a hook's answer; a file download is no JSON and stays a success
      wechatpay.hooks.before_send = function() return { status = 200, headers = {}, body = '{"stock_id":' } end
      local res
      res, err = wx.v3.echo:get()
      wechatpay.hooks.before_send = nil
      fails("http", "bad_json", res, err)
      assert(wx:download(fake.base_url .. "/v3/billdownload/file?token=x"))
    end)

    it("reports an error answer without JSON (a proxy's HTML page) on one line", function()
      wechatpay.hooks.before_send = function()
        return { status = 502, headers = { ["content-type"] = "text/html" }, body = "<html>\n<body>Bad  Gateway</body>\n</html>\n" }
      end
      local res, err = wx.v3.echo:get()
      wechatpay.hooks.before_send = nil
      fails("http", "HTTP_502", res, err)
      assert.is_true(err.retryable)
      assert.equal("GET /v3/echo: HTTP_502: <html> <body>Bad Gateway</body> </html> ", err.message)
      assert.equal("<html>\n<body>Bad  Gateway</body>\n</html>\n", err.body)
    end)

    it("reports transport errors as retryable network errors", function()
      local err = fails("network", "recv", wx.v3.echo:get { headers = { ["X-Fake"] = "drop" } })
      assert.is_true(err.retryable)
      local closed = wechatpay.new(fake.options { base_url = "https://127.0.0.1:1" })
      err = fails("network", "connect", closed.v3.echo:get())
      assert.is_true(err.retryable)
      assert.matches("^GET /v3/echo: ", err.message)
    end)

    it("sends a GET without a body, and once more signed anew when a kept-alive connection turns out closed", function()
      local res = assert(wx.v3.echo:get())
      assert.is_nil(res.json.headers["content-length"])
      assert.is_nil(res.json.headers["transfer-encoding"])
      local stale = res.json.stale
      -- answered; the server then closes the next kept-alive connection a request arrives on
      assert(wx.v3.echo:get { headers = { ["X-Fake"] = "close_next" } })
      res = assert(wx.v3.echo:get { query = { again = "yes" } }) -- sent again on a new connection
      assert.equal(stale + 1, res.json.stale)
      assert.equal("again=yes", res.json.query)
      -- by the client, signed anew: the server that read the first never sees its nonce twice
      local function nonce(auth) return assert(auth:match('nonce_str="([^"]+)"')) end
      assert.not_equal(nonce(res.json.stale_auth), nonce(res.json.headers.authorization))
      -- a POST is never sent twice: its outcome is unknown, and the caller decides
      assert(wx.v3.echo:get { headers = { ["X-Fake"] = "close_next" } })
      local err = fails("network", "recv", wx.v3.echo:post { json = { once = true } })
      assert.matches("not sent again", err.message)
      assert.equal(stale + 2, assert(wx.v3.echo:get()).json.stale)
    end)

    it("rejects the promise of an Async verb; :wait() re-raises the table", function()
      local p = wx.v3.echo:getAsync { headers = { ["X-Fake"] = "status=400" } }
      local ok, err = pcall(p.wait, p)
      assert.is_false(ok)
      assert.equal("PARAM_ERROR", err.code)
      local code = wx.v3.echo:getAsync { headers = { ["X-Fake"] = "status=500" } }
        :catch(function(e) return e.code end):wait()
      assert.equal("SYSTEM_ERROR", code)
    end)
  end)

  describe("concurrency", function()
    local async = require "quan.async"

    it("completes promises from several Async calls together", function()
      local list = {}
      for i = 1, 5 do
        list[i] = wx.v3.marketing.favor.couponStocks:postAsync { json = seed_request("all" .. i),
          headers = { ["X-Fake"] = "sleep=0.5" } }
      end
      local all = async.all(list):wait()
      local most = 0
      for i = 1, 5 do
        assert.equal("SID-all" .. i, all[i].json.stock_id)
        most = math.max(most, all[i].json.concurrent)
      end
      -- the server saw them overlap (it counts requests in progress)
      assert.is_true(most >= 2, "at most " .. most .. " at once")
    end)

    it("runs 200 requests at 16 in flight, each result matched to its request", function()
      local results, inflight, peak = {}, 0, 0
      local next_i = 0
      local function worker()
        while next_i < 200 do
          next_i = next_i + 1
          local i = next_i
          inflight = inflight + 1
          if inflight > peak then peak = inflight end
          local res, err = wx.v3.marketing.favor.couponStocks:post { json = seed_request("c" .. i) }
          inflight = inflight - 1
          results[i] = res and res.json.stock_id or tostring(err)
        end
      end
      local tasks = {}
      for w = 1, 16 do tasks[w] = async.spawn(worker) end
      async.run()
      assert.equal(16, peak)
      for i = 1, 200 do assert.equal("SID-c" .. i, results[i]) end
    end)
  end)

  describe("hooks and validation", function()
    local saved_schema, saved_validate
    before_each(function()
      saved_schema = package.loaded["wechatpay.favor.schema"]
      saved_validate = package.loaded["wechatpay.favor.validate"]
    end)
    after_each(function()
      wechatpay.hooks.before_send = nil
      package.loaded["wechatpay.favor.validate"] = saved_validate
      package.loaded["wechatpay.favor.schema"] = saved_schema
    end)

    it("hands the prepared request to before_send and uses its answer", function()
      local seen
      package.loaded["wechatpay.favor.schema"] = {
        lookup = function(method, path) return { method = method, path = path, title = "stand-in" } end,
      }
      wechatpay.hooks.before_send = function(req)
        seen = req
        return { status = 200, headers = {}, body = '{"stock_id":"DRY"}' }
      end
      local res = assert(wx.v3.marketing.favor.couponStocks:post { json = { out_request_no = "h1" }, validate = false })
      assert.equal("DRY", res.json.stock_id)
      assert.equal("POST", seen.method)
      assert.equal(fake.base_url .. "/v3/marketing/favor/coupon-stocks", seen.url)
      assert.equal("/v3/marketing/favor/coupon-stocks", seen.path)
      assert.equal('{"out_request_no":"h1"}', seen.body)
      assert.equal("h1", seen.json.out_request_no)
      assert.same({ method = "POST", path = "/v3/marketing/favor/coupon-stocks", title = "stand-in" }, seen.endpoint)
      assert.matches("^POST\n/v3/marketing/favor/coupon%-stocks\n%d+\n%w+\n{\"out_request_no\":\"h1\"}\n$", seen.string_to_sign)
      local auth
      for _, h in ipairs(seen.headers) do auth = auth or h:match("^Authorization: (.*)") end
      assert.matches("^WECHATPAY2%-SHA256%-RSA2048 ", auth)
      local sig = auth:match('signature="([^"]+)"')
      local pub = require("quan.crypto").public_key("file://" .. fake.dir .. "/merchant.crt.pem")
      assert.is_true(pub:verify(seen.string_to_sign, sig))
    end)

    it("turns validator findings into a validation error, unless validate = false", function()
      local calls = {}
      package.loaded["wechatpay.favor.validate"] = {
        check = function(endpoint, body)
          calls[#calls + 1] = endpoint.method .. " " .. endpoint.path
          if body and body.bad then return false, { { path = "/bad", desc = "bad", rule = "enum", value = 1 } } end
          return true
        end,
        format = function(f) return f[1].path .. ": " .. f[1].rule end,
      }
      local err = fails("validation", "validation", wx.v3.marketing.favor.couponStocks:post { json = { bad = 1 } })
      assert.equal("POST /v3/marketing/favor/coupon-stocks: invalid request:\n/bad: enum", err.message)
      assert.equal("/bad", err.detail[1].path)
      assert.equal("POST /v3/marketing/favor/coupon-stocks", calls[1])
      assert.is_nil(err.retryable == true or nil)
      local p = wx.v3.marketing.favor.couponStocks:postAsync { json = { bad = 1 } }
      assert.equal("validation", select(2, pcall(p.wait, p)).kind)
      assert.equal(200, assert(wx.v3.echo:post { json = { bad = 1 }, validate = false }).status)
      assert(wx.v3.marketing.favor.stocks._stock_id_:get { stock_id = "9" })
      assert.equal("GET /v3/marketing/favor/stocks/{stock_id}", calls[#calls])
    end)

    it("validates the query as well, as the server reads it (what quan check reports, a run refuses)", function()
      local stocks = wx.v3.marketing.favor.stocks
      local err = fails("validation", "validation", stocks:get { query = { offset = 0, limit = 11, stock_creator_mchid = wx.mchid } })
      assert.equal("limit", err.detail[1].path)
      assert.equal(11, err.detail[1].value)
      err = fails("validation", "validation", stocks._stock_id_:get { stock_id = "9" })
      assert.equal("stock_creator_mchid", err.detail[1].path)
      assert.equal("required", err.detail[1].rule)
      -- numbers and strings alike, as they go out
      assert.equal(200, assert(stocks:get { query = { offset = "0", limit = 10, stock_creator_mchid = tonumber(wx.mchid) } }).status)
      assert.equal(200, assert(stocks:get { query = { limit = 11 }, validate = false }).status)
      -- a query written into the path is read the same way
      local inline = "v3/marketing/favor/stocks?offset=0&limit=%d&stock_creator_mchid=" .. wx.mchid
      assert.equal("limit", fails("validation", "validation", wx:chain(inline:format(11)):get()).detail[1].path)
      assert.equal(200, assert(wx:chain(inline:format(10)):get()).status)
    end)
  end)

  describe("profiles and the example", function()
    -- config(dir) -> path of a config file with a profile for the stand-in
    local function config(dir, extra)
      return sh.write(dir .. "/config.lua", ([[
        return { default = "fake", profiles = { fake = {
          mchid = %q, serial = %q, private_key = %q, apiv3_key = %q,
          certs = { [%q] = %q }, base_url = %q, ca_file = %q, appid = "wx1234" %s } } }
      ]]):format(wxfake.MCHID, wxfake.MERCHANT_SERIAL, "file://" .. fake.dir .. "/merchant.key.pem",
        "file://" .. fake.dir .. "/apiv3.key", wxfake.PUBKEY_ID, "file://" .. fake.dir .. "/platform.pub.pem",
        fake.base_url, fake.dir .. "/ca.pem", extra or ""))
    end

    it("builds a client from a profile: wx.profile without secrets, wx.mchid", function()
      local dir = sh.tmpdir()
      local cfg = config(dir)
      local out, err = sh.run("QUAN_CONFIG=" .. sh.quote(cfg) .. " " .. sh.quan .. " -e " .. sh.quote([[
        local wx = require("wechatpay").client()
        print(wx.mchid, wx.profile.appid, wx.profile.private_key, wx.profile.apiv3_key, wx.profile_name)
        print(assert(wx.v3.echo:get()).status)
      ]]))
      assert.equal(wxfake.MCHID .. "\twx1234\tnil\tnil\tfake\n200\n", out)
      assert.equal("", err)
    end)

    it("names the profile in a config error", function()
      local dir = sh.tmpdir()
      local cfg = config(dir, ", timeout = -1")
      local _, err, code = sh.run("QUAN_CONFIG=" .. sh.quote(cfg) .. " " .. sh.quan .. " -e " .. sh.quote(
        "require('wechatpay').client()"))
      assert.equal(1, code)
      -- the place of the failing call comes first (docs/errors.md)
      assert.equal(sh.quan .. ": (command line):1: profile 'fake': timeout: expected a positive, finite number of seconds, got -1\n", err)
    end)

    it("runs every example of docs/client.md", function()
      local md = require "tests.support.mdexamples"
      local dir = sh.tmpdir()
      local cfg = config(dir)
      local blocks = md.blocks("docs/client.md")
      assert.is_true(#blocks >= 6)
      for i, b in ipairs(blocks) do
        local file = sh.write(dir .. "/example" .. i .. ".lua", b.code)
        -- a block that says so runs as `quan run --sandbox` would (it uses
        -- the sandbox's control endpoints); the others against the stand-in
        local in_sandbox = b.code:find("^%-%- quan run %-%-sandbox") ~= nil
        local out, err, code = sh.run((in_sandbox and "QUAN_SANDBOX=1 " or "") .. "QUAN_CONFIG=" .. sh.quote(cfg)
          .. " " .. sh.quan .. " " .. file)
        assert.equal(0, code, "docs/client.md:" .. b.line .. "\n" .. out .. err)
        if in_sandbox then
          err = err:gsub("^quan: using a private sandbox at https://127%.0%.0%.1:%d+\n", "")
        end
        assert.equal("", err, "docs/client.md:" .. b.line)
      end
    end)

    it("runs scripts/examples/seed.lua: the seed in all six forms", function()
      local dir = sh.tmpdir()
      local cfg = config(dir)
      local out, err, code = sh.run("QUAN_CONFIG=" .. sh.quote(cfg) .. " " .. sh.quan .. " run scripts/examples/seed.lua")
      assert.equal(0, code, err)
      local forms = {}
      for form, id, t in out:gmatch("([^\n\t]+)\t(SID%-[^\t]+)\t([^\n]+)\n") do
        forms[#forms + 1] = form
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT", t)
        assert.matches("^SID%-" .. wxfake.MCHID .. "%d+$", id)
      end
      assert.same({ "async chain", "async declarative", "async property", "sync chain", "sync declarative",
        "sync property" }, forms)
    end)
  end)

  describe("seeing what happens", function()
    it("prints requests and responses on stderr with secrets redacted", function()
      local script = sh.write(fake.dir .. "/verbose.lua", ([[
        package.path = %q .. "/?.lua;" .. package.path
        local wx = require("wechatpay").new(%s)
        assert(wx.v3.marketing.favor.couponStocks:post { json = { out_request_no = "v1" }, validate = false })
        local _, err = wx.v3.marketing.favor.couponStocks:post { json = { out_request_no = "v2" },
          headers = { ["X-Fake"] = "badsig" }, validate = false }
        print(err.code)
      ]]):format(os.getenv("PWD"), "require('tests.support.wxfake').options_for(" .. ("%q"):format(fake.dir) .. ", " .. ("%q"):format(fake.base_url) .. ")"))
      local out, err = sh.run("QUAN_DEBUG=1 " .. sh.quan .. " " .. script)
      assert.equal("bad_signature\n", out)
      assert.matches("quan: > POST " .. fake.base_url:gsub("%p", "%%%0") .. "/v3/marketing/favor/coupon%-stocks", err)
      assert.matches('signature="%[redacted%]"', err)
      assert.matches('quan: > {"out_request_no":"v1"}', err, 1, true)
      assert.matches("quan: < 200 POST /v3/marketing/favor/coupon-stocks", err, 1, true)
      assert.matches("quan: ! POST /v3/marketing/favor/coupon-stocks: verify: response signature does not verify", err, 1, true)
      assert.not_matches('signature="[%w+/]+=*"', err)
      assert.matches("\nquan: < Wechatpay%-Signature: %[redacted%]\n", err)
      -- no secret appears: not the private key, not the APIv3 key
      for line in sh.read(fake.dir .. "/merchant.key.pem"):gmatch("[^\n]+") do
        if not line:find("^%-%-%-%-%-") then assert.is_nil(err:find(line, 1, true)) end
      end
      assert.is_nil(err:find(sh.read(fake.dir .. "/apiv3.key"), 1, true))
      local quiet = select(2, sh.run(sh.quan .. " " .. script))
      assert.equal("", quiet)
    end)
  end)
end)

local have_sandbox = have_natives and pcall(require, "quan.sandbox")

;(have_sandbox and describe or pending)("wechatpay client against the embedded sandbox", function()
  local wechatpay = require "wechatpay"
  local config = require "wechatpay.config"
  local h, wx

  setup(function()
    h = assert(require("quan.sandbox").start {})
    local p = config.profile(config.read(h.config_path), h.profile, h.config_path)
    local opts = {}
    for _, k in ipairs { "mchid", "serial", "private_key", "certs", "apiv3_key", "base_url", "ca_file" } do
      opts[k] = p[k]
    end
    wx = wechatpay.new(opts)
  end)
  teardown(function()
    if h then h:stop() end
  end)

  local function faults(spec)
    assert(wx:chain("sandbox/faults"):post { json = { spec = spec }, validate = false })
  end

  it("creates the seed's stock and reads it back", function()
    local no = wx.mchid .. os.date("!%Y%m%d%H%M%S") .. "sb1"
    local res = assert(wx.v3.marketing.favor.couponStocks:post { json = seed_request(no, wx.mchid) })
    local id = res.json.stock_id
    assert.is_string(id)
    local got = assert(wx.v3.marketing.favor.stocks._stock_id_:get {
      stock_id = id, query = { stock_creator_mchid = wx.mchid } })
    assert.equal(id, got.json.stock_id)
    assert.equal("微信支付代金券批次", got.json.stock_name)
    assert.equal("integer", math.type(got.json.stock_use_rule.max_coupons))
  end)

  it("fails verification of each tampered answer, naming the check", function()
    for _, case in ipairs {
      { "tamper=signature", "bad_signature" }, { "tamper=body", "bad_signature" },
      { "tamper=serial", "unknown_serial" }, { "tamper=timestamp", "clock_skew" },
    } do
      faults(case[1])
      local res, err = wx.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 10, stock_creator_mchid = wx.mchid } }
      faults("none")
      assert.is_nil(res, case[1])
      assert.equal("verify", err.kind, case[1])
      assert.equal(case[2], err.code, case[1])
    end
  end)

  describe("platform certificates", function()
    -- a merchant in certificate mode: its own sandbox (the shared one is in
    -- public-key mode, whose merchant has none)
    local ch, cwx
    local function client(certs, drop)
      local p = config.profile(config.read(ch.config_path), ch.profile, ch.config_path)
      local opts = {}
      for _, k in ipairs { "mchid", "serial", "private_key", "apiv3_key", "base_url", "ca_file" } do opts[k] = p[k] end
      opts.certs = certs
      if drop then opts[drop] = nil end
      return wechatpay.new(opts)
    end
    setup(function()
      ch = assert(require("quan.sandbox").start { key_mode = "certificate" })
      cwx = client(config.profile(config.read(ch.config_path), ch.profile, ch.config_path).certs)
    end)
    teardown(function()
      if ch then ch:stop() end
    end)

    it("is answered 404 RESOURCE_NOT_EXISTS in public-key mode, as a merchant since 2024 is", function()
      local list, err = wx:certificates()
      assert.is_nil(list)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal("RESOURCE_NOT_EXISTS", err.code)
      assert.matches("无可用的平台证书", err.message)
    end)

    it("downloads and decrypts them; a client with only the certificate verifies answers under it", function()
      local list = assert(cwx:certificates())
      assert.equal(1, #list)
      local c = list[1]
      assert.matches("^%x+$", c.serial_no)
      assert.equal(c.serial_no, c.certificate:serial():upper())
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", c.expire_time)
      assert.matches("BEGIN CERTIFICATE", c.pem)
      local only = client { [c.serial_no] = c.pem }
      local res = assert(only.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 5, stock_creator_mchid = only.mchid } })
      assert.equal(c.serial_no, res.headers["wechatpay-serial"])
    end)

    it("bootstraps from no certificate at all: the answer is signed under one it carries", function()
      local empty = client {}
      local res, err = empty.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 5, stock_creator_mchid = empty.mchid } }
      assert.is_nil(res)
      assert.equal("unknown_serial", err.code)
      assert.matches("certs is empty: get the platform certificates with wx:certificates%(%)", err.message)
      local list = assert(empty:certificates())
      assert.equal(1, #list)
      local filled = client { [list[1].serial_no] = list[1].pem }
      assert(filled.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 5, stock_creator_mchid = filled.mchid } })
    end)

    it("refuses a tampered answer and raises without an APIv3 key", function()
      assert(cwx:chain("sandbox/faults"):post { json = { spec = "tamper=signature" }, validate = false })
      local list, err = cwx:certificates()
      assert(cwx:chain("sandbox/faults"):post { json = { spec = "none" }, validate = false })
      assert.is_nil(list)
      assert.equal("verify", err.kind)
      assert.equal("bad_signature", err.code)
      local certs = config.profile(config.read(ch.config_path), ch.profile, ch.config_path).certs
      assert.has_error(function() client(certs, "apiv3_key"):certificates() end,
        "certificates: the client has no apiv3_key (it decrypts the certificates)")
    end)

    it("writes them with scripts/examples/certificates.lua", function()
      local dir = sh.tmpdir()
      local out, err, code = sh.run("QUAN_CONFIG=" .. sh.quote(ch.config_path) .. " " .. sh.quan
        .. " run scripts/examples/certificates.lua " .. dir .. "/certs")
      assert.equal(0, code, err)
      local serial, path = out:match('%["(%x+)"%] = "file://([^"]+)"')
      assert.is_string(serial, out)
      local cert = assert(require("quan.crypto").certificate("file://" .. path))
      assert.equal(serial, cert:serial():upper())
      -- a merchant in public-key mode is told why there are none
      _, err, code = sh.run(sh.quan .. " run --sandbox scripts/examples/certificates.lua " .. dir .. "/none")
      assert.equal(1, code)
      assert.matches("RESOURCE_NOT_EXISTS.*public key", err)
    end)
  end)

  it("turns the sandbox's error answers and faults into error tables", function()
    local res, err = wx.v3.marketing.favor.stocks._stock_id_:get { stock_id = "1", query = { stock_creator_mchid = wx.mchid } }
    assert.is_nil(res)
    assert.equal("http", err.kind)
    assert.equal(404, err.status)
    assert.is_false(err.retryable)
    faults("error500=1")
    res, err = wx.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 10, stock_creator_mchid = wx.mchid } }
    faults("none")
    assert.equal(500, err.status)
    assert.is_true(err.retryable)
    faults("error429=1")
    res, err = wx.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 10, stock_creator_mchid = wx.mchid } }
    faults("none")
    assert.equal(429, err.status)
    assert.is_true(err.retryable)
  end)

  it("runs the seed example with --sandbox, announced on stderr", function()
    local out, err, code = sh.run(sh.quan .. " run --sandbox scripts/examples/seed.lua")
    assert.equal(0, code, err)
    assert.matches("^quan: using a private sandbox at https://127%.0%.0%.1:%d+\n$", err)
    local n = 0
    for _ in out:gmatch("[^\n]+\t%S+\t%d%d%d%d%-%d%d%-%d%dT[^\n]+\n") do n = n + 1 end
    assert.equal(6, n, out)
  end)

  it("falls back to a sandbox when no profile is configured", function()
    local home, cwd = sh.tmpdir(), sh.tmpdir()
    local out, err, code = sh.run("cd " .. sh.quote(cwd) .. " && HOME=" .. sh.quote(home) .. " " .. sh.quan
      .. " -e " .. sh.quote("local wx = require('wechatpay').client() print(wx.sandbox ~= nil, wx.profile_name)"
      .. " assert(require('wechatpay').client().sandbox == wx.sandbox)"))
    assert.equal(0, code, err)
    assert.equal("true\tsandbox\n", out)
    assert.matches("^quan: no profile configured; using a private sandbox at https://127%.0%.0%.1:%d+\n$", err)
  end)
end)
