-- Typo hints wherever a name is looked up (docs/client.md, "Typo hints"):
-- the API tree of a family the schema knows, a client's fields, the options
-- of a verb, query parameters, profile keys. All through quan.suggest.
local sh = require "tests.support.sh"
local batchsbx = require "tests.support.batchsbx"

describe("quan.suggest", function()
  local suggest = require "quan.suggest"

  it("counts another spelling of the same name as the same name", function()
    for _, c in ipairs {
      { "mchId", { "serial", "mchid" }, "mchid" },
      { "privateKey", { "private_key", "apiv3_key" }, "private_key" },
      { "private-key", { "private_key" }, "private_key" },
      { "app_id", { "appid", "mchid" }, "appid" },
      { "stokcs", { "users", "stocks" }, "stocks" },
      { "zzz", { "stocks" }, nil },
    } do
      assert.equal(c[3], suggest.closest(c[1], c[2]), c[1])
    end
  end)

  it("lists the nearest names first, never the word itself", function()
    assert.same({ "start", "stop" }, suggest.nearest("stat", { "stop", "start", "users" }))
    assert.same({}, suggest.nearest("stock", { "stock" }))
    assert.same({ "ab" }, suggest.nearest("abc", { "ab", "a", "b" }, 1))
    assert.equal(" (did you mean start or stop?)", suggest.hint("stat", { "start", "stop", "users" }))
    assert.equal("", suggest.hint("xyzzy", { "start" }))
  end)
end)

describe("typo hints of the client", function()
  local h, wx

  setup(function()
    h = batchsbx.start()
    wx = h.wx
  end)

  teardown(function()
    if h then h:stop() end
  end)

  -- raised(f) -> the message f raises (without its place)
  local function raised(f)
    local ok, msg = pcall(f)
    assert.is_false(ok, "no error")
    return (tostring(msg):gsub("^[^:]+:%d+: ", ""))
  end

  it("refuses a misspelt segment under the favor family, naming the closest", function()
    assert.equal("/v3/marketing/favor/stokcs: no endpoint of /v3/marketing/favor has a segment 'stokcs' here "
      .. "(did you mean stocks?); known here: callbacks, couponStocks, media, stocks, users",
      raised(function() return wx.v3.marketing.favor.stokcs end))
    assert.equal("/v3/marketing/favor/coupon-stock: no endpoint of /v3/marketing/favor has a segment 'couponStock' "
      .. "here (did you mean couponStocks?); known here: callbacks, couponStocks, media, stocks, users",
      raised(function() return wx.v3.marketing.favor.couponStock end))
    assert.matches("segment 'strat' here %(did you mean start%?%)",
      raised(function() return wx.v3.marketing.favor.stocks._stock_id_.strat end))
    assert.equal("/v3/marketing/favor/stocks/{stockid}: the path variable here is _stock_id_, not _stockid_",
      raised(function() return wx.v3.marketing.favor.stocks._stockid_ end))
    assert.equal("/v3/marketing/favour: no such API path (did you mean favor?)",
      raised(function() return wx.v3.marketing.favour end))
    -- path forms are answered in path form
    assert.matches("segment 'stokcs' here %(did you mean stocks%?%); known here: callbacks, coupon%-stocks",
      raised(function() return wx["v3/marketing/favor/stokcs/{stock_id}"] end))
    assert.matches("^/v3/marketing/favor/stokcs: no endpoint",
      raised(function() return wx:chain("v3/marketing/favor/stokcs") end))
    assert.matches("^request: /v3/marketing/favor/stokcs: no endpoint",
      raised(function() return wx:request("GET", "v3/marketing/favor/stokcs") end))
    -- the error names the caller's line
    local ok, msg = pcall(function() return wx.v3.marketing.favor.stokcs end)
    assert.is_false(ok)
    assert.matches("hints_spec%.lua:%d+: ", msg)
  end)

  it("lets every path outside the known families through, and values in a variable's place", function()
    assert.equal("wechatpay.node /v3/marketing/busifavor/stocks", tostring(wx.v3.marketing.busifavor.stocks))
    assert.equal("wechatpay.node /v3/pay/transactions/jsapi", tostring(wx["v3/pay/transactions/jsapi"]))
    assert.equal("wechatpay.node /v3/marketing/favor/stocks/98065001/start",
      tostring(wx["v3/marketing/favor/stocks/98065001/start"]))
    assert.equal("wechatpay.node /v3/marketing/favor/stocks?offset=0",
      tostring(wx["v3/marketing/favor/stocks?offset=0"]))
  end)

  it("says a client has no such field instead of making an API node (wx.mchId)", function()
    assert.equal("wx.mchId: a client has no field 'mchId' (did you mean mchid?); the API tree starts at wx.v3",
      raised(function() return wx.mchId end))
    assert.matches("'requset' %(did you mean request%?%)", raised(function() return wx.requset end))
    assert.is_nil(wx.sandbox)
    assert.equal(wx.mchid, wx.mchid)
  end)

  it("names the closest option of a verb, and a path variable", function()
    assert.equal("GET /v3/marketing/favor/stocks/{stock_id}: unknown option 'stockid' (did you mean stock_id?)",
      raised(function() return wx.v3.marketing.favor.stocks._stock_id_:get { stockid = "1" } end))
    assert.equal("POST /v3/marketing/favor/coupon-stocks: unknown option 'jsno' (did you mean json?)",
      raised(function() return wx.v3.marketing.favor.couponStocks:post { jsno = {} } end))
    assert.equal("GET /v3/marketing/favor/stocks: option 'json': a GET request has no body",
      raised(function() return wx.v3.marketing.favor.stocks:get { json = {} } end))
  end)

  it("names the closest query parameter", function()
    local res, err = wx.v3.marketing.favor.stocks:get {
      query = { offset = 0, limit = 10, stock_creater_mchid = wx.mchid } }
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.matches("stock_creater_mchid: unknown field %(did you mean stock_creator_mchid%?%)", err.message)
  end)

  describe("profile keys", function()
    -- run(edit) -> stderr, exit code of building the client of the
    -- sandbox's profile edited by edit(config text)
    local function run(edit)
      local f = assert(io.open(h.config_path))
      local text = edit(f:read("a"))
      f:close()
      local cfg = sh.write(sh.tmpdir() .. "/config.lua", text)
      local out, err, code = sh.run("QUAN_CONFIG=" .. sh.quote(cfg) .. " " .. sh.quote(sh.quan) .. " -e "
        .. sh.quote("local wx = require('wechatpay').client() print(wx.profile.appid, wx.profile.region)"))
      return err, code, out
    end

    it("refuses another SDK's spelling or a misspelling, naming the intended key", function()
      local err, code = run(function(t) return (t:gsub("private_key =", "privateKey =")) end)
      assert.equal(1, code)
      assert.matches("profile 'sandbox': unknown key 'privateKey' %(did you mean private_key%?%)", err)
      err, code = run(function(t) return (t:gsub("appid =", "app_id =")) end)
      assert.equal(1, code)
      assert.matches("profile 'sandbox': unknown key 'app_id' %(did you mean appid%?%)", err)
      err, code = run(function(t) return (t:gsub("base_url =", "base_ulr =")) end)
      assert.equal(1, code)
      assert.matches("unknown key 'base_ulr' %(did you mean base_url%?%)", err)
    end)

    it("keeps other extra keys (appid, region)", function()
      local err, code, out = run(function(t) return (t:gsub("appid =", "region = \"south\", appid =")) end)
      assert.equal(0, code, err)
      assert.matches("^wx%w+\tsouth\n$", out)
    end)

    it("names the closest key of wechatpay.new", function()
      local ok, e = pcall(require("wechatpay").new, { mchid = "1", privateKey = "x" })
      assert.is_false(ok)
      assert.equal("wechatpay.new: unknown option 'privateKey' (did you mean private_key?)", e.message)
    end)
  end)
end)
