-- Copy as curl (docs/client.md, "Copy as curl"): a request as a shell
-- command, signed anew, that the sandbox accepts when run as printed.
local sh = require "tests.support.sh"
local batchsbx = require "tests.support.batchsbx"
local curl = require "wechatpay.curl"
local cjson = require "cjson"

-- shell(text) -> stdout, stderr, exit code of text run by /bin/sh
local function shell(text)
  local file = sh.write(sh.tmpdir() .. "/cmd.sh", text)
  return sh.run("sh " .. sh.quote(file))
end

-- status_of(out) -> the HTTP status of the last answer curl -i printed
local function status_of(out)
  local status
  for s in out:gmatch("HTTP/[%d.]+ (%d+)") do status = tonumber(s) end
  return status
end

-- body_of(out) -> the body curl -i printed (after the blank line)
local function body_of(out)
  return out:match("\r?\n\r?\n(.*)$")
end

describe("wechatpay.curl.quote", function()
  it("makes any text one word of sh", function()
    for _, s in ipairs {
      "plain", "", "it's", "'", "''", "a\nb\n", "满10减1 it's \"quoted\"", "$HOME `id` $(id) \\ *",
      "\t tab", "-n", "a;b|c&d>e<f", ("x"):rep(5000) .. "'",
    } do
      local out = sh.run("printf '%s' " .. curl.quote(s))
      assert.equal(s, out)
    end
  end)
end)

describe("copy as curl", function()
  local h, wx

  setup(function()
    h = batchsbx.start()
    wx = h.wx
  end)

  teardown(function()
    if h then h:stop() end
  end)

  local function stock_body(no, extra)
    local now = os.time()
    local function at(t) return os.date("!%Y-%m-%dT%H:%M:%S+08:00", t + 8 * 3600) end
    local b = {
      stock_name = "满10减1", belong_merchant = wx.mchid, stock_type = "NORMAL", no_cash = false,
      available_begin_time = at(now + 600), available_end_time = at(now + 86400),
      stock_use_rule = { max_coupons = 5, max_amount = 500, max_coupons_per_user = 1,
                         natural_person_limit = false, prevent_api_abuse = false },
      coupon_use_rule = { fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 200 },
                          coupon_available_time = {} },
      out_request_no = no,
    }
    for k, v in pairs(extra or {}) do b[k] = v end
    return b
  end

  -- created(out) -> the stock a create-stock command made (its answer read
  -- from the output of curl -i, the stock read back through the client)
  local function created(out)
    assert.equal(200, status_of(out), out)
    local id = cjson.decode(body_of(out)).stock_id
    return assert(wx.v3.marketing.favor.stocks._stock_id_:get {
      stock_id = id, query = { stock_creator_mchid = wx.mchid } }).json
  end

  it("prints a GET that the sandbox answers, signed now, with the sandbox's CA", function()
    local text = assert(wx.v3.marketing.favor.stocks:curl("get", {
      query = { offset = 0, limit = 10, stock_creator_mchid = wx.mchid } }))
    assert.matches("^# GET /v3/marketing/favor/stocks%?limit=10&offset=0&stock_creator_mchid=%d+  %(条件查询批次列表%)\n", text)
    assert.matches("\n# signed at %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d with a new nonce; valid for five minutes, until %d%d:%d%d:%d%d Beijing time\n", text)
    assert.matches("\ncurl %-sS %-i %-X GET 'https://127%.0%.0%.1:%d+/v3/", text)
    assert.matches("--cacert " .. h.ca_file:gsub("%p", "%%%0"), text)
    local out = shell(text)
    assert.equal(200, status_of(out), out)
    assert.equal(0, cjson.decode(body_of(out)).offset)
  end)

  it("keeps any body exact: single quotes, newlines, Chinese text", function()
    local no = "curl" .. os.time() .. "a"
    -- a raw body, laid out on several lines, signed as it is
    local body = cjson.encode(stock_body(no, { comment = "it's 满减 'x'" })):gsub(",", ",\n  ")
    assert.matches("\n", body)
    local text = assert(wx.v3.marketing.favor.couponStocks:curl("post", { body = body, validate = false }))
    assert.matches("it'\\''s 满减", text, 1, true)
    assert.equal("满10减1", created(shell(text)).stock_name)
  end)

  it("sends a body no shell word holds (a NUL byte) through printf, byte for byte", function()
    local text = assert(wx:curl("POST", "v3/marketing/favor/stocks/1/start",
      { body = '{"stock_creator_mchid":"a\0b"}', validate = false }))
    assert.matches("\nprintf '", text)
    assert.matches("--data-binary @-", text, 1, true)
    local out = shell(text)
    -- signed over the exact bytes: the sandbox gets past the signature to
    -- the body, which it refuses as a request (not 401 SIGN_ERROR)
    local status = status_of(out)
    assert.is_not_nil(status, out)
    assert.are_not.equal(401, status, out)
  end)

  it("copies the request of an error table, signed anew: err:curl()", function()
    local res, err = wx.v3.marketing.favor.stocks._stock_id_:get {
      stock_id = "404404", query = { stock_creator_mchid = wx.mchid } }
    assert.is_nil(res)
    local first = assert(err:curl())
    local second = assert(wx:curl(err))
    local nonce = function(t) return t:match('nonce_str="([^"]+)"') end
    assert.are_not.equal(nonce(first), nonce(second))
    local out = shell(first)
    assert.equal(404, status_of(out), out)
    assert.equal("RESOURCE_NOT_EXISTS", cjson.decode(body_of(out)).code)
  end)

  it("copies the request of a result, and of a request the validator refused", function()
    local res = assert(wx.v3.marketing.favor.stocks:get {
      query = { offset = 0, limit = 1, stock_creator_mchid = wx.mchid } })
    local out = shell(assert(wx:curl(res)))
    assert.equal(200, status_of(out), out)
    local _, err = wx.v3.marketing.favor.couponStocks:post { json = { stock_name = "x" } }
    assert.equal("validation", err.kind)
    local text = assert(err:curl())
    assert.matches('--data-binary \'{"stock_name":"x"}\'', text, 1, true)
    assert.is_nil(wx:curl({}))
  end)

  it("copies an upload as curl -F parts that the sandbox accepts", function()
    local dir = sh.tmpdir()
    local png = sh.write(dir .. "/logo;1.png", "\137PNG\r\n\26\n" .. ("\0"):rep(64))
    local text = assert(wx.v3.marketing.favor.media.imageUpload:curl("post", { file = png }))
    assert.not_matches("multipart/form%-data; boundary", text)
    local out = shell(text)
    assert.equal(200, status_of(out), out)
    assert.matches("^https://", cjson.decode(body_of(out)).media_url)
  end)

  it("holds no secret: neither key appears", function()
    local text = assert(wx.v3.marketing.favor.stocks:curl("get", {
      query = { offset = 0, limit = 1, stock_creator_mchid = wx.mchid } }))
    local f = assert(io.open(h.state .. "/apiv3.key", "rb"))
    local apiv3 = f:read("a"):gsub("%s+$", "")
    f:close()
    assert.is_nil(text:find(apiv3, 1, true))
    assert.not_matches("PRIVATE KEY", text)
    f = assert(io.open(h.state .. "/merchant.key.pem", "rb"))
    local pem = f:read("a")
    f:close()
    local line = pem:match("\n([A-Za-z0-9+/=]+)\n")
    assert.is_nil(text:find(line, 1, true))
  end)

  it("prints a curl command in --dry-run that the sandbox accepts when run as printed", function()
    local dir = sh.tmpdir()
    local no = "dry" .. os.time()
    local script = sh.write(dir .. "/create.lua", ([[
      local wx = require("wechatpay").client()
      local body = %s
      body.belong_merchant = wx.mchid
      assert(wx.v3.marketing.favor.couponStocks:post { json = body })
    ]]):format(require("quan.pretty").format(stock_body(no))))
    local out, err, code = sh.run("QUAN_CONFIG=" .. sh.quote(h.config_path) .. " " .. sh.quote(sh.quan)
      .. " run --dry-run " .. sh.quote(script))
    assert.equal(0, code, err)
    -- the one request of the script: its command is the rest of the output
    local text = out:match("\nas curl:\n(.*)$")
    assert.is_not_nil(text, out)
    assert.matches("^# POST /v3/marketing/favor/coupon%-stocks", text)
    assert.equal("满10减1", created(shell(text)).stock_name)
  end)
end)
