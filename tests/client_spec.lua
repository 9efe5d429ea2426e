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
    assert.equal("ERR QUAN_TIMEOUT: expected a positive number of seconds, got 'soon'", out)
  end)

  it("refuses inline secrets and names the key", function()
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { a = { mchid = '1', private_key = '-----BEGIN PRIVATE KEY-----' } } }")
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

  it("names a profile asked for when there is no config file", function()
    assert.equal("ERR profile 'prod': no config file (searched " .. cwd .. "/quan.config.lua, " .. home .. "/.config/quan/config.lua)",
      (show(cwd, "HOME=" .. q(home), "prod")))
  end)

  it("warns when a key file is readable by group or others", function()
    local qos = require "quan.os"
    qos.mkdir(cwd .. "/keys")
    sh.write(cwd .. "/keys/m.pem", "x")
    qos.chmod(cwd .. "/keys/m.pem", tonumber("644", 8))
    sh.write(cwd .. "/quan.config.lua", "return { profiles = { a = { mchid = '1', private_key = 'file://keys/m.pem' } } }")
    local out, err = show(cwd, "HOME=" .. q(home))
    assert.matches("^a\t1\t", out)
    assert.equal("quan: warning: private_key file " .. cwd .. "/keys/m.pem is readable by group or others (mode 644); run chmod 600 on it\n", err)
    qos.chmod(cwd .. "/keys/m.pem", tonumber("600", 8))
    out, err = show(cwd, "HOME=" .. q(home))
    assert.equal("", err)
  end)
end)
