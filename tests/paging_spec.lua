-- node:each{...}: every page of a list endpoint (docs/client.md, "Paging"),
-- against the sandbox.
local batchsbx = require "tests.support.batchsbx"
local async = require "quan.async"

describe("node:each", function()
  local h, wx
  local ids = {}

  setup(function()
    h = batchsbx.start()
    wx = h.wx
    for i = 1, 35 do ids[batchsbx.stock(h, 5)] = i end
  end)

  teardown(function()
    if h then h:stop() end
  end)

  -- requests(list) -> the offsets of the GETs of the stock list a client sent
  local function listing()
    local pages = {}
    local wechatpay = require "wechatpay"
    local before = wechatpay.hooks.before_send
    wechatpay.hooks.before_send = function(p)
      if p.method == "GET" and p.path:find("/v3/marketing/favor/stocks?", 1, true) then
        pages[#pages + 1] = p.path:match("[?&]offset=(%d+)") .. "/" .. p.path:match("[?&]limit=(%d+)")
      end
      if before then return before(p) end
    end
    return pages, function() wechatpay.hooks.before_send = before end
  end

  it("returns every one of 35 stocks across four pages of 10 (offset counts pages)", function()
    local pages, restore = listing()
    local pager = wx.v3.marketing.favor.stocks:each { query = { stock_creator_mchid = wx.mchid } }
    local seen, n, last = {}, 0, 0
    for stock, i in pager do
      n = n + 1
      assert.equal(n, i)
      assert.is_nil(seen[stock.stock_id], "a stock twice: " .. stock.stock_id)
      seen[stock.stock_id] = true
      last = i
    end
    restore()
    assert.equal(35, n)
    assert.equal(35, last)
    for id in pairs(ids) do assert.is_true(seen[id], "missing " .. id) end
    assert.same({ "0/10", "1/10", "2/10", "3/10" }, pages)
    assert.equal(4, pager.pages)
    assert.equal(35, pager.total_count)
  end)

  it("takes a page size and a first page, and passes every other option through", function()
    local pages, restore = listing()
    local list = assert(wx.v3.marketing.favor.stocks:each {
      query = { stock_creator_mchid = wx.mchid, limit = 8, offset = 1 },
      headers = { ["X-Spec"] = "paging" }, timeout = 20,
    }:all())
    restore()
    assert.equal(35 - 8, #list)
    assert.same({ "1/8", "2/8", "3/8", "4/8" }, pages)
  end)

  it("walks the pages inside a task without blocking the others", function()
    local got, got_when_other_ran, other_done = 0, nil, false
    async.spawn(function()
      for _ in wx.v3.marketing.favor.stocks:each { query = { stock_creator_mchid = wx.mchid, limit = 5 } } do
        got = got + 1
      end
    end)
    async.spawn(function()
      got_when_other_ran = got
      async.sleep(0)
      other_done = true
    end)
    async.run()
    assert.equal(35, got)
    -- the other task ran while the pager waited for its first page
    assert.equal(0, got_when_other_ran)
    assert.is_true(other_done)
  end)

  it("pages a stock's merchants by page index too", function()
    local id = next(ids)
    local list = assert(wx.v3.marketing.favor.stocks._stock_id_.merchants:each {
      stock_id = id, query = { stock_creator_mchid = wx.mchid },
    }:all())
    assert.same({ wx.mchid }, list)
  end)

  it("raises a page's error table in a loop; all() returns it", function()
    local pager = wx.v3.marketing.favor.stocks:each { query = { stock_creator_mchid = wx.mchid, status = "nonsense" } }
    local ok, err = pcall(function() for _ in pager do end end)
    assert.is_false(ok)
    assert.is_true(require("wechatpay").errors.is(err))
    assert.equal("validation", err.kind)
    local list, e = wx.v3.marketing.favor.stocks:each { query = { stock_creator_mchid = "1" }, validate = false }:all()
    assert.same({}, list)
    assert.is_nil(e)
  end)

  it("refuses a bad option where each is called, naming it", function()
    local node = wx.v3.marketing.favor.stocks
    assert.has_error(function() node:each { jsno = {} } end,
      "each GET /v3/marketing/favor/stocks: unknown option 'jsno'")
    assert.has_error(function() node:each { json = {} } end,
      "each GET /v3/marketing/favor/stocks: option 'json': a GET request has no body")
    assert.has_error(function() node:each { query = { limit = 0 } } end,
      "each GET /v3/marketing/favor/stocks: query 'limit' must be an integer >= 1, got 0")
    assert.has_error(function() wx:chain("v3/marketing/partner-things"):each {} end,
      "each GET /v3/marketing/partner-things: not a list endpoint of the schema; say how it pages: "
      .. "paging = \"page\" (offset counts pages) or \"item\" (offset counts rows)")
    assert.has_error(function() node:each { paging = "rows" } end,
      "each GET /v3/marketing/favor/stocks: option 'paging' must be \"page\" or \"item\", got rows")
  end)

  it("pages an endpoint the schema does not know as it is told (paging = \"item\")", function()
    local wechatpay = require "wechatpay"
    local before = wechatpay.hooks.before_send
    local asked = {}
    wechatpay.hooks.before_send = function(p)
      local offset = tonumber(p.path:match("offset=(%d+)"))
      asked[#asked + 1] = offset
      local data = {}
      for i = offset + 1, math.min(offset + 3, 7) do data[#data + 1] = "row" .. i end
      return { status = 200, headers = {},
        body = require("cjson").encode { total_count = 7, offset = offset, limit = 3, data = data } }
    end
    local list = assert(wx:chain("v3/other/list"):each { paging = "item", query = { limit = 3 } }:all())
    wechatpay.hooks.before_send = before
    assert.same({ "row1", "row2", "row3", "row4", "row5", "row6", "row7" }, list)
    assert.same({ 0, 3, 6 }, asked)
  end)

  it("stops at an answer that is not paged (more rows than asked for)", function()
    local wechatpay = require "wechatpay"
    local before = wechatpay.hooks.before_send
    local calls = 0
    wechatpay.hooks.before_send = function()
      calls = calls + 1
      return { status = 200, headers = {},
        body = '{"total_count":12,"offset":0,"limit":10,"data":[1,2,3,4,5,6,7,8,9,10,11,12]}' }
    end
    local list = assert(wx.v3.marketing.favor.users._openid_.coupons:each {
      openid = "o1", query = { appid = "wx1", available_mchid = wx.mchid } }:all())
    wechatpay.hooks.before_send = before
    assert.equal(12, #list)
    assert.equal(1, calls)
  end)
end)
