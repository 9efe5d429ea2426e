-- Results coming back (issue #16): redemptions in the sandbox, each a
-- COUPON.USE notification through the outbox and its retries; the use-flow
-- and refund-flow files the sandbox makes of them; and the client's flow
-- files (wx:flow, wechatpay.flow): downloaded to disk, hash checked, rows
-- typed, read a line at a time.
local sh = require "tests.support.sh"
local sbx = require "tests.support.sandbox"
local crypto = require "quan.crypto"
local http = require "quan.http"
local qos = require "quan.os"
local time = require "quan.time"
local cjson = require "cjson"
local flow = require "wechatpay.flow"

local P = "/v3/marketing/favor"
local DAY = 86400

local USE_HEADER = "批次id,优惠id,优惠类型,优惠金额（元）,订单总金额（元）,交易类型,支付单号,消耗时间,消耗商户号,设备号,银行流水号,单品信息"
local REFUND_HEADER = "批次id,优惠id,优惠类型,优惠金额（元）,订单总金额（元）,交易类型,支付单号,退款单号,退款时间,消耗商户号,设备号,"
  .. "银行流水号,单品信息"

local h, wx -- one sandbox, and a client of it, for the whole file

-- control(path[, body]) -> status, answer: a control endpoint (unsigned)
local function control(path, body)
  local res = assert(http.request { method = body and "POST" or "GET", url = h.base_url .. path,
    cafile = h.state .. "/ca.pem", body = body and cjson.encode(body), headers = { "Content-Type: application/json" } })
  return res.status, cjson.decode(res.body), res
end

local function now() return sbx.now(h) end

local function advance(seconds)
  local status = control("/sandbox/clock", { advance_seconds = seconds })
  assert.equal(200, status)
end

local function redeem(body)
  local status, answer = control("/sandbox/redemptions", body)
  assert.equal(200, status, cjson.encode(answer))
  return answer
end

local function redemptions(stock_id)
  local status, answer = control("/sandbox/redemptions?stock_id=" .. stock_id)
  assert.equal(200, status)
  return answer.data
end

-- stock{n =, amount =, minimum =, merchants =} -> stock_id, {coupon_id...}:
-- a running stock whose n coupons went to n users (openid "<stock>-u<i>")
local function stock(o)
  local n, amount, minimum = o.n or 10, o.amount or 100, o.minimum or 200
  local cap = math.max(n, 5) -- the API's least max_coupons
  local body = sbx.stock_body(h, {
    stock_use_rule = { max_coupons = cap, max_amount = cap * amount, max_coupons_per_user = 1 },
    coupon_use_rule = { fixed_normal_coupon = { coupon_amount = amount, transaction_minimum = minimum },
      available_merchants = o.merchants },
  })
  local id = assert(wx.v3.marketing.favor.couponStocks:post { json = body }).json.stock_id
  assert(wx.v3.marketing.favor.stocks._stock_id_.start:post { stock_id = id, json = { stock_creator_mchid = wx.mchid } })
  local coupons = {}
  for i = 1, n do
    coupons[i] = assert(wx.v3.marketing.favor.users._openid_.coupons:post { openid = id .. "-u" .. i, json = {
      stock_id = id, out_request_no = id .. "n" .. i, appid = h.appid, stock_creator_mchid = wx.mchid } }).json.coupon_id
  end
  return id, coupons
end

-- coupon(stock_id, coupon_id, openid) -> the coupon as the API answers
local function coupon(openid, coupon_id)
  return assert(wx.v3.marketing.favor.users._openid_.coupons._coupon_id_:get { openid = openid, coupon_id = coupon_id,
    query = { appid = h.appid } }).json
end

local function refused(status, answer, want_status, code, field)
  assert.equal(want_status, status, cjson.encode(answer))
  assert.equal(code, answer.code, cjson.encode(answer))
  if field then assert.equal(field, answer.detail and answer.detail.field, cjson.encode(answer)) end
end

-- files_from(stock_id) -> when its flow files can be had: 10:00 Beijing
-- time the day after its end, computed here from the stock's end
local function files_from(stock_id)
  local s = assert(wx.v3.marketing.favor.stocks._stock_id_:get { stock_id = stock_id,
    query = { stock_creator_mchid = wx.mchid } }).json
  local ending = time.parse(s.available_end_time)
  local date = time.beijing(ending + DAY, "%Y-%m-%d")
  return time.parse(date .. "T10:00:00+08:00")
end

-- to_files(stock_id): the business clock moved past the moment its files are made
local function to_files(stock_id)
  local wait = files_from(stock_id) - now()
  if wait > 0 then advance(wait + 5) end
end

local function yuan(fen) return ("%d.%02d"):format(fen // 100, fen % 100) end
local function wall(rfc) return time.beijing(time.parse(rfc), "%Y-%m-%d %H:%M:%S") end

describe("sandbox redemptions", function()
  setup(function()
    h = sbx.start()
    wx = require("tests.support.batchsbx").client(h)
  end)
  teardown(function() if h then h:stop() end end)

  describe("POST /sandbox/redemptions", function()
    it("refuses a value out of its bounds with 400 naming the field, and schedules nothing", function()
      local id = stock { n = 3 }
      for _, c in ipairs {
        { {}, "share" },
        { { share = 0 }, "share" }, { { share = 1.5 }, "share" }, { { share = "half" }, "share" },
        { { share = 0.5, count = 1 }, "share" },
        { { count = 0 }, "count" }, { { count = 1.5 }, "count" }, { { count = 1000001 }, "count" },
        { { count = 1, over_seconds = -1 }, "over_seconds" }, { { count = 1, over_seconds = 0.5 }, "over_seconds" },
        { { count = 1, over_seconds = 90 * DAY + 1 }, "over_seconds" },
        { { count = 1, refunds = -1 }, "refunds" }, { { count = 1, refunds = "1" }, "refunds" },
        { { count = 1, seed = -1 }, "seed" }, { { count = 1, seed = 2 ^ 53 }, "seed" }, { { count = 1, seed = 0.5 }, "seed" },
        { { count = 1, ca_file = "" }, "ca_file" }, { { count = 1, shares = 1 }, "shares" },
        { { count = 1, stock_id = 5 }, "stock_id" }, { { count = 1, stock_id = false }, "stock_id" },
      } do
        local body = c[1]
        if body.stock_id == nil then body.stock_id = id elseif body.stock_id == false then body.stock_id = nil end
        local status, answer = control("/sandbox/redemptions", body)
        refused(status, answer, 400, "PARAM_ERROR", c[2])
        assert.matches(c[2], answer.message, 1, true)
      end
      -- what the state says: too many, more refunds than redemptions, past the stock's end
      local status, answer = control("/sandbox/redemptions", { stock_id = id, count = 4 })
      refused(status, answer, 400, "PARAM_ERROR", "count")
      assert.matches("only 3 of the stock's coupons are unused", answer.message, 1, true)
      status, answer = control("/sandbox/redemptions", { stock_id = id, count = 2, refunds = 3 })
      refused(status, answer, 400, "PARAM_ERROR", "refunds")
      status, answer = control("/sandbox/redemptions", { stock_id = id, count = 1, over_seconds = 8 * DAY })
      refused(status, answer, 400, "PARAM_ERROR", "over_seconds")
      assert.matches("would go past the stock's end", answer.message, 1, true)
      status, answer = control("/sandbox/redemptions", { stock_id = "99999999", count = 1 })
      refused(status, answer, 404, "RESOURCE_NOT_EXISTS", "stock_id")
      status, answer = control("/sandbox/redemptions", "[1]")
      refused(status, answer, 400, "PARAM_ERROR")
      assert.same({}, redemptions(id))
    end)

    it("refuses a stock whose coupons cannot be used now", function()
      -- not begun: a stock whose window starts in an hour
      local later = sbx.stock_body(h, { available_begin_time = sbx.iso(now() + 3600) })
      local id = assert(wx.v3.marketing.favor.couponStocks:post { json = later }).json.stock_id
      local status, answer = control("/sandbox/redemptions", { stock_id = id, share = 1 })
      refused(status, answer, 400, "INVALID_REQUEST", "stock_id")
      assert.matches("usable from", answer.message, 1, true)
    end)

    it("redeems a share of the unused coupons, at their times on the business clock", function()
      local id, coupons = stock { n = 8 }
      local start = now()
      local a = redeem { stock_id = id, share = 0.5, over_seconds = 3600, seed = 11 }
      assert.equal(4, a.count)
      assert.equal(11, a.seed)
      assert.equal(4, #a.data)
      local t0, t1 = time.parse(a.from), time.parse(a.to)
      assert.equal(3600, t1 - t0)
      assert.is_true(t0 >= start)
      local last = t0
      for _, r in ipairs(a.data) do
        local at = time.parse(r.consume_time)
        assert.is_true(at >= last and at <= t1, r.consume_time) -- in their order, inside the hour
        last = at
        assert.equal(at <= now() and "done" or "scheduled", r.state)
      end
      -- a second request takes only the coupons not scheduled yet
      local b = redeem { stock_id = id, count = 4, seed = 11 }
      local seen = {}
      for _, r in ipairs(a.data) do seen[r.coupon_id] = true end
      for _, r in ipairs(b.data) do
        assert.is_nil(seen[r.coupon_id], r.coupon_id)
        seen[r.coupon_id] = true
        assert.equal("done", r.state) -- over_seconds 0: all of them now
      end
      local n = 0
      for _, c in ipairs(coupons) do if seen[c] then n = n + 1 end end
      assert.equal(8, n)
      local status, answer = control("/sandbox/redemptions", { stock_id = id, count = 1 })
      refused(status, answer, 400, "PARAM_ERROR", "count")
      -- the clock reaches the first hour: all done, the coupons USED with the redemption's data
      advance(3601)
      for _, r in ipairs(redemptions(id)) do
        assert.equal("done", r.state)
        local c = coupon(r.openid, r.coupon_id)
        assert.equal("USED", c.status)
        assert.is_nil(c.consume_information) -- as on the API, only the notification carries it
      end
    end)

    it("draws realistic payments: orders over the threshold, the stock's merchants, unique transaction ids, a few refunds", function()
      local merchants = { wx.mchid, "1900000002", "1900000003" }
      local id = stock { n = 30, amount = 1000, minimum = 10000, merchants = merchants }
      local a = redeem { stock_id = id, share = 1, over_seconds = 6 * DAY, refunds = 5, seed = 3 }
      assert.equal(30, a.count)
      local files = files_from(id)
      local ids, used, refunds = {}, {}, 0
      for _, r in ipairs(a.data) do
        assert.equal(1000, r.coupon_amount)
        assert.is_true(r.order_amount >= 10000 and r.order_amount <= 20010, tostring(r.order_amount))
        assert.equal(0, r.order_amount % 10) -- prices in 角
        used[r.consume_mchid] = true
        assert.matches("^4200%d+$", r.transaction_id)
        assert.equal(28, #r.transaction_id)
        assert.equal(time.beijing(time.parse(r.consume_time), "%Y%m%d"), r.transaction_id:sub(11, 18))
        assert.is_nil(ids[r.transaction_id])
        ids[r.transaction_id] = true
        if r.refund_id then
          refunds = refunds + 1
          assert.matches("^503%d+$", r.refund_id)
          assert.equal(29, #r.refund_id)
          local rt, ct = time.parse(r.refund_time), time.parse(r.consume_time)
          assert.is_true(rt > ct and rt <= ct + 3 * DAY and rt < files, r.refund_time)
        end
      end
      assert.equal(5, refunds)
      local n = 0
      for m in pairs(used) do
        n = n + 1
        assert.is_true(m == merchants[1] or m == merchants[2] or m == merchants[3], m)
      end
      assert.is_true(n >= 2, "30 payments at one of 3 merchants only")
    end)

    it("draws the same redemptions from the same seed, and others from another", function()
      -- two stocks alike: the same seed picks the same coupons (by position) with the same draws
      local function run(seed)
        local id, coupons = stock { n = 12 }
        local position = {}
        for i, c in ipairs(coupons) do position[c] = i end
        local a = redeem { stock_id = id, count = 5, over_seconds = 7200, refunds = 2, seed = seed }
        local start = time.parse(a.from)
        local out = {}
        for i, r in ipairs(a.data) do
          out[i] = { position[r.coupon_id], time.parse(r.consume_time) - start, r.order_amount,
            r.consume_mchid, r.transaction_id:sub(5, 10), r.refund_id ~= nil }
        end
        return out
      end
      local one, two, other = run(424242), run(424242), run(7)
      assert.same(one, two)
      assert.are_not.same(one, other)
    end)
  end)

  describe("COUPON.USE notifications", function()
    -- with_receiver(fail, fn(got)): a merchant endpoint (a certificate of
    -- the sandbox's CA) answering 500 to its first `fail` requests, set as
    -- the callback URL during fn; got: the file of what it received
    local function with_receiver(fail, fn)
      local got = sh.tmpdir() .. "/got"
      local srv = assert(require("quan.server").start { handler = "tests.support.notify_handler",
        arg = got .. "#fail=" .. fail,
        cert = "file://" .. h.state .. "/server.pem", key = "file://" .. h.state .. "/server.key.pem" })
      local ok, err = pcall(function()
        assert(wx.v3.marketing.favor.callbacks:post { json = { mchid = wx.mchid,
          notify_url = "https://127.0.0.1:" .. srv:port() .. "/notify" } })
        fn(got)
      end)
      srv:stop()
      assert(wx.v3.marketing.favor.callbacks:post { json = { mchid = wx.mchid,
        notify_url = "https://merchant.quan.invalid/notify", switch = false } })
      control("/sandbox/notifications", { retry_interval = 60, retries = 9 })
      assert(ok, err)
    end

    local function received(got)
      local out = {}
      local f = io.open(got)
      if f then
        for line in f:lines() do out[#out + 1] = cjson.decode(line) end
        f:close()
      end
      return out
    end

    it("sends one COUPON.USE per redemption, retried until answered: N redemptions, N events", function()
      with_receiver(3, function(got)
        control("/sandbox/notifications", { retry_interval = 0.2, retries = 5 })
        local id = stock { n = 12, amount = 500, minimum = 3000 }
        local a = redeem { stock_id = id, count = 10, over_seconds = 600, refunds = 2, seed = 99 }
        advance(601) -- the clock reaches all of them
        local by_coupon = {}
        for _, r in ipairs(a.data) do by_coupon[r.coupon_id] = r end
        -- wait until 10 distinct events came through, each answered 200 once
        local events, deadline = {}, qos.now() + 60
        repeat
          qos.sleep(0.1)
          events = {}
          for _, call in ipairs(received(got)) do
            local ev = cjson.decode(call.body)
            events[ev.id] = call
          end
          local n = 0
          for _ in pairs(events) do n = n + 1 end
        until n >= 10 and #received(got) >= 13 or qos.now() > deadline
        local calls = received(got)
        assert.equal(13, #calls) -- 10 events, 3 of them sent twice (the first three answers were 500)
        local n, coupons = 0, {}
        for event_id, call in pairs(events) do
          n = n + 1
          local ev = assert(wx:notification(call.headers, call.body))
          assert.equal(event_id, ev.id)
          assert.equal("COUPON.USE", ev.event_type)
          local d, r = ev.data, by_coupon[ev.data.coupon_id]
          assert.truthy(r, d.coupon_id)
          assert.is_nil(coupons[d.coupon_id]) -- one event per redemption
          coupons[d.coupon_id] = true
          assert.equal(id, d.stock_id)
          assert.equal("USED", d.status)
          assert.same({ coupon_amount = 500, transaction_minimum = 3000 }, d.normal_coupon_information)
          assert.same({ consume_time = r.consume_time, consume_mchid = r.consume_mchid, transaction_id = r.transaction_id },
            d.consume_information)
          assert.equal(r.consume_time, ev.create_time) -- the event is the payment
        end
        assert.equal(10, n)
        -- and the outbox says each was delivered
        local _, list = control("/sandbox/notifications")
        local delivered = 0
        for _, e in ipairs(list.data) do
          if events[e.event_id] then
            assert.equal("delivered", e.state)
            delivered = delivered + 1
          end
        end
        assert.equal(10, delivered)
      end)
    end)

    it("sends nothing for a redemption still ahead on the business clock", function()
      with_receiver(0, function(got)
        local id = stock { n = 2 }
        local a = redeem { stock_id = id, count = 2, over_seconds = 7200, seed = 5 }
        local ahead = 0
        for _, r in ipairs(a.data) do if r.state == "scheduled" then ahead = ahead + 1 end end
        assert.is_true(ahead >= 1)
        qos.sleep(0.5) -- several ticks of the main thread
        assert.equal(2 - ahead, #received(got))
      end)
    end)
  end)

  describe("flow files", function()
    local id, plan

    setup(function()
      -- 12 coupons: 9 redeemed over two hours, 2 of them refunded; one used by hand
      local coupons
      id, coupons = stock { n = 12, amount = 300, minimum = 1000, merchants = { wx.mchid, "1900000009" } }
      plan = redeem { stock_id = id, count = 9, over_seconds = 7200, refunds = 2, seed = 2024 }
      local scheduled = {}
      for _, r in ipairs(plan.data) do scheduled[r.coupon_id] = true end
      for i, c in ipairs(coupons) do
        if not scheduled[c] then
          local status, answer = control("/sandbox/coupons/use", { coupon_id = c, openid = id .. "-u" .. i,
            transaction_id = "4200000000123", order_amount = 1234 })
          assert.equal(200, status, cjson.encode(answer))
          break
        end
      end
    end)

    it("are not there before 10:00 Beijing time the day after the stock ends: RESOURCE_NOT_EXISTS", function()
      local f, err = wx:flow("use-flow", id)
      assert.is_nil(f)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal("RESOURCE_NOT_EXISTS", err.code)
      assert.matches("账单文件不存在", err.message, 1, true)
      advance(files_from(id) - now() - 60) -- a minute before
      f, err = wx:flow("refund-flow", id)
      assert.equal("RESOURCE_NOT_EXISTS", err.code)
      advance(65)
    end)

    it("hold the sandbox's redemptions, row for row, in the API's layout", function()
      local done = {}
      for _, r in ipairs(redemptions(id)) do
        assert.equal("done", r.state)
        done[#done + 1] = r
      end
      assert.equal(10, #done) -- 9 redeemed, 1 used by hand
      local path = sh.tmpdir() .. "/use.csv"
      local f = assert(wx:flow("use-flow", id, { path = path }))
      assert.equal(path, f.path)
      assert.is_false(f.temporary)
      assert.equal(10, f.count)
      assert.same({ "stock_id", "coupon_id", "coupon_type", "coupon_amount", "order_amount", "trade_type",
        "transaction_id", "consume_time", "consume_mchid", "device_no", "bank_serial_no", "goods_info" }, f.fields)
      local rows = {}
      for row in f:rows() do rows[#rows + 1] = row end
      assert.equal(10, #rows)
      for i, r in ipairs(done) do
        assert.same({ stock_id = id, coupon_id = r.coupon_id, coupon_type = "全场代金券", coupon_amount = 300,
          order_amount = r.order_amount, trade_type = "支付", transaction_id = r.transaction_id,
          consume_time = r.consume_time, consume_mchid = r.consume_mchid, device_no = "", bank_serial_no = "",
          goods_info = "" }, rows[i])
      end
      -- the bytes: the header, backquoted fields, 元 with two decimals, CRLF, the trailer
      local want = { USE_HEADER }
      for _, r in ipairs(done) do
        want[#want + 1] = ("`%s,`%s,`全场代金券,`%s,`%s,`支付,`%s,`%s,`%s,\"\",\"\",\"\""):format(id, r.coupon_id,
          yuan(r.coupon_amount), yuan(r.order_amount), r.transaction_id, wall(r.consume_time), r.consume_mchid)
      end
      want[#want + 1] = "总条数"
      want[#want + 1] = "`10"
      local text = sh.read(path)
      assert.equal(table.concat(want, "\r\n") .. "\r\n", text)
      assert.equal(crypto.sha1(text), f.sha1)
      assert.equal(f.hash_value, f.sha1)
      assert.equal(#text, f.size)
      -- the one used by hand: its order amount
      local by_hand = 0
      for _, row in ipairs(rows) do
        if row.transaction_id == "4200000000123" then
          by_hand = by_hand + 1
          assert.equal(1234, row.order_amount)
        end
      end
      assert.equal(1, by_hand)
      f:close()
      assert.truthy(qos.stat(path), "a path of the caller's stays")
    end)

    it("list the refunds in the refund-flow file, the sandbox's own layout", function()
      local refunded = {}
      for _, r in ipairs(redemptions(id)) do
        if r.refund_id then refunded[#refunded + 1] = r end
      end
      table.sort(refunded, function(a, b) return a.refund_time < b.refund_time end)
      assert.equal(2, #refunded)
      local f = assert(wx:flow("refund-flow", id))
      assert.is_true(f.temporary)
      local text = sh.read(f.path)
      assert.equal(REFUND_HEADER .. "\r\n", text:sub(1, #REFUND_HEADER + 2))
      local rows = {}
      for row in f:rows() do rows[#rows + 1] = row end
      assert.equal(2, #rows)
      for i, r in ipairs(refunded) do
        assert.same({ stock_id = id, coupon_id = r.coupon_id, coupon_type = "全场代金券", coupon_amount = 300,
          order_amount = r.order_amount, trade_type = "退款", transaction_id = r.transaction_id, refund_id = r.refund_id,
          refund_time = r.refund_time, consume_mchid = r.consume_mchid, device_no = "", bank_serial_no = "",
          goods_info = "" }, rows[i])
      end
      assert.matches("\r\n总条数\r\n`2\r\n$", text)
      f:close()
      assert.is_nil(qos.stat(f.path), "a temporary file goes with close")
      -- a stock without refunds has no refund-flow file
      local other = stock { n = 1 }
      redeem { stock_id = other, count = 1 }
      to_files(other)
      local none, err = wx:flow("refund-flow", other)
      assert.is_nil(none)
      assert.equal("RESOURCE_NOT_EXISTS", err.code)
      assert.matches("no refund", err.message, 1, true)
      assert(wx:flow("use-flow", other)):close()
    end)

    it("fail the hash check when a byte is flipped", function()
      -- on the way: the sandbox alters the download (tamper=body changes one digit)
      local link = assert(wx.v3.marketing.favor.stocks._stock_id_["use-flow"]:get { stock_id = id }).json
      assert.equal("SHA1", link.hash_type)
      assert.matches("^%x+$", link.hash_value)
      assert.equal(40, #link.hash_value)
      local dir = sh.tmpdir()
      assert.equal(200, (control("/sandbox/faults", { spec = "tamper=body" })))
      local got, derr = wx:download(link.url, { path = dir .. "/tampered.csv" })
      control("/sandbox/faults", { spec = "" })
      assert(got, derr)
      assert.equal("", got.body)
      assert.equal(dir .. "/tampered.csv", got.path)
      local f, err = flow.open(got.path, link.hash_value, link.hash_type)
      assert.is_nil(f)
      assert.equal("verify", err.kind)
      assert.equal("hash_mismatch", err.code)
      assert.matches("is not the hash_value " .. link.hash_value, err.message, 1, true)
      -- at rest: one byte in every 97 of a good file (from the first), one at a time, changed
      local good = assert(wx:flow("use-flow", id, { path = dir .. "/good.csv" }))
      local text = sh.read(good.path)
      for i = 1, #text, 97 do
        local flipped = text:sub(1, i - 1) .. string.char(text:byte(i) ~ 1) .. text:sub(i + 1)
        sh.write(dir .. "/flipped.csv", flipped)
        local bad, why = flow.open(dir .. "/flipped.csv", good.hash_value, "SHA1")
        assert.is_nil(bad, "byte " .. i)
        assert.equal("hash_mismatch", why.code, "byte " .. i)
      end
      -- cut short
      sh.write(dir .. "/short.csv", text:sub(1, -4))
      assert.equal("hash_mismatch", select(2, flow.open(dir .. "/short.csv", good.hash_value)).code)
      assert.truthy(flow.open(good.path, good.hash_value:upper()))
    end)

    it("download through a signed request, answered unsigned, with a link of 30 s", function()
      local link = assert(wx.v3.marketing.favor.stocks._stock_id_["refund-flow"]:get { stock_id = id }).json
      local target = link.url:match("^https://127%.0%.0%.1:%d+(/v3/billdownload/file%?token=.+)$")
      assert.truthy(target, link.url)
      local res = assert(sbx.request(h, "GET", target))
      assert.equal(200, res.status)
      assert.equal(link.hash_value, crypto.sha1(res.body))
      assert.is_nil(res.headers["wechatpay-signature"])
      assert.is_nil(res.headers["wechatpay-serial"])
      assert.equal("application/octet-stream", res.headers["content-type"])
      -- unsigned: refused as every API request
      res = assert(sbx.raw(h, "GET", target))
      assert.equal(401, res.status)
      -- a forged or expired token: no file
      res = assert(sbx.request(h, "GET", target:gsub("%x%x%x%x$", "0000")))
      assert.equal(404, res.status)
      assert.equal("RESOURCE_NOT_EXISTS", res.json.code)
      local payload = ("refund-flow~%s~%d"):format(id, math.floor(qos.time()) - 1)
      local mac = crypto.hmac_sha256(sh.read(h.state .. "/apiv3.key"), "quan sandbox flow token " .. payload):sub(1, 32)
      res = assert(sbx.request(h, "GET", "/v3/billdownload/file?token=" .. require("quan.url").encode(payload .. "~" .. mac)))
      assert.equal(404, res.status)
      assert.matches("expired", res.json.message, 1, true)
      res = assert(sbx.request(h, "GET", "/v3/billdownload/file"))
      assert.equal(400, res.status)
      assert.equal("token", res.json.detail.field)
    end)

    it("are answered for the stock's creator only", function()
      local res = assert(sbx.request(h, "GET", P .. "/stocks/99999999/use-flow"))
      assert.equal(404, res.status)
      assert.equal("RESOURCE_NOT_EXISTS", res.json.code)
    end)
  end)

  describe("quan sandbox redeem", function()
    local q = sh.quote(sh.quan)

    it("schedules through the running sandbox and says what it did", function()
      local id = stock { n = 4 }
      local out, err, code = sh.run(q .. " sandbox redeem " .. id .. " --count 2 --over 1h --refunds 1 --seed 8 --state "
        .. sh.quote(h.state))
      assert.equal(0, code, err)
      assert.equal("", err)
      assert.matches("^stock " .. id .. ": 2 redemptions %(seed 8%) from %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d to "
        .. "%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d %(Beijing time%), 1 of them refunded\n%d made now, %d as the business clock "
        .. "reaches them %(quan sandbox clock moves it%)\n$", out)
      out, err, code = sh.run(q .. " sandbox redeem " .. id .. " --share 1 --json --state " .. sh.quote(h.state))
      assert.equal(0, code, err)
      local answer = cjson.decode(out)
      assert.equal(2, answer.count)
      assert.equal(1, answer.seed)
      assert.equal(4, #redemptions(id))
    end)

    it("exits 1 with the sandbox's refusal, or when no sandbox serves the state", function()
      local id = stock { n = 1 }
      local out, err, code = sh.run(q .. " sandbox redeem " .. id .. " --count 2 --state " .. sh.quote(h.state))
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("^quan sandbox redeem: the sandbox refused: 400 PARAM_ERROR: count: only 1 of the stock's coupons", err)
      local empty = sh.tmpdir()
      _, err, code = sh.run(q .. " sandbox redeem 1 --count 1 --state " .. sh.quote(empty))
      assert.equal(1, code)
      assert.matches("no sandbox state in " .. empty:gsub("%p", "%%%0") .. " %(start one: quan sandbox %-%-state", err)
    end)

    it("exits 2 for a usage error, and is listed by quan sandbox --help", function()
      for _, c in ipairs {
        { "1", "%-%-share X or %-%-count N is required" },
        { "1 --share 0.5 --count 2", "give %-%-share or %-%-count, not both" },
        { "1 --share 2", "%-%-share wants a share above 0 and at most 1" },
        { "1 --count 1 --over 2 hours", "unexpected argument 'hours'" },
        { "1 --count 1 --over 2y", "%-%-over wants a duration like 90s, 30m, 2h or 1d12h, got '2y'\n" },
        { "1 --count 1 --over 99999999d", "%-%-over wants at most 90d %(a stock's longest window%), got '99999999d'\n" },
        { "1 --count -1", "%-%-count wants a positive integer" },
        { "--count 1", "expected STOCK_ID" },
        -- the sandbox reads it later, from its own folder: it was taken as given, unchecked
        { "1 --count 1 --ca-file /nonexistent/ca.pem", "%-%-ca%-file /nonexistent/ca%.pem: no such file" },
        { "1 --count 1 --ca-file /", "%-%-ca%-file /: not a file" },
      } do
        local out, err, code = sh.run(q .. " sandbox redeem " .. c[1] .. " --state /nonexistent")
        assert.equal(2, code, c[1])
        assert.equal("", out)
        assert.matches("^quan sandbox redeem: " .. c[2], err)
      end
      local out = sh.run(q .. " sandbox --help")
      assert.matches("\nsub%-commands:\n  quan sandbox redeem  redeem a share", out)
      assert.equal(out, (sh.run(q .. " help sandbox")))
      out = sh.run(q .. " sandbox redeem --help")
      assert.matches("^usage: quan sandbox redeem %[options%] STOCK_ID\n", out)
      assert.matches("\n  %-%-over DURATION +spread over the next DURATION of the business clock", out)
    end)
  end)
end)

describe("wechatpay.flow", function()
  local dir
  setup(function() dir = sh.tmpdir() end)

  local function file(name, text)
    return sh.write(dir .. "/" .. name, text), crypto.sha1(text)
  end

  local function read_all(f)
    local rows = {}
    for row in f:rows() do rows[#rows + 1] = row end
    return rows
  end

  it("reads the real file of 2020 (the research's sample)", function()
    local text = USE_HEADER .. "\r\n`15*****5,`1818****032,`全场代金券,`1.00,`2.00,`支付,`42000************999,"
      .. '`2020-11-27 16:23:05,`1******9,"1******0","",""\r\n总条数\r\n`1\r\n'
    local path, sha = file("real.csv", text)
    local f = assert(flow.open(path, sha, "SHA1"))
    assert.equal(1, f.count)
    assert.equal(#text, f.size)
    assert.same({ { stock_id = "15*****5", coupon_id = "1818****032", coupon_type = "全场代金券", coupon_amount = 100,
      order_amount = 200, trade_type = "支付", transaction_id = "42000************999",
      consume_time = "2020-11-27T16:23:05+08:00", consume_mchid = "1******9", device_no = "1******0", bank_serial_no = "",
      goods_info = "" } }, read_all(f))
    assert.equal("wechatpay.flow " .. path .. " (1 rows)", tostring(f))
  end)

  it("reads quoted fields, unknown columns, a BOM and bare LF line ends", function()
    local text = "\239\187\191批次id,优惠金额（元）,是否合单订单,单品信息\n`1,`0.05,`否,\"{\"\"a\"\":1},x\"\n`2,`12,`是,\"\"\n总条数\n`2"
    local path, sha = file("variant.csv", text)
    local f = assert(flow.open(path, sha))
    assert.same({ "stock_id", "coupon_amount", "是否合单订单", "goods_info" }, f.fields)
    assert.same({ { stock_id = "1", coupon_amount = 5, ["是否合单订单"] = "否", goods_info = '{"a":1},x' },
      { stock_id = "2", coupon_amount = 1200, ["是否合单订单"] = "是", goods_info = "" } }, read_all(f))
  end)

  it("refuses what does not read as a flow file, naming the line", function()
    for _, c in ipairs {
      { USE_HEADER .. "\r\n`1,`2\r\n总条数\r\n`1\r\n", "line 2: 2 fields, the header has 12" },
      { "批次id,优惠金额（元）\r\n`1,`1.005\r\n总条数\r\n`1\r\n", "line 2: 优惠金额（元） '1.005' is not an amount in 元" },
      { "批次id,消耗时间\r\n`1,`2020-11-27T16:23:05\r\n总条数\r\n`1\r\n", "line 2: 消耗时间 '2020-11-27T16:23:05' is not a time" },
      { "批次id,消耗时间\r\n`1,`2020-02-30 16:23:05\r\n总条数\r\n`1\r\n", "line 2: 消耗时间 '2020-02-30 16:23:05' is not a time" },
      { "批次id\r\n`1\r\n`2\r\n", "no 总条数 and count at the end (an incomplete file)" },
      { "批次id\r\n`1\r\n总条数\r\n`2\r\n", "总条数 says 2 rows, the file has 1" },
      { "批次id\r\n`1\r\n总条数\r\nmany\r\n", "line 4: the count after 总条数 is not a number" },
      { "批次id\r\n`1\r\n总条数\r\n`1\r\n`1\r\n", "line 5: a line after the count" },
      { "批次id,单品信息\r\n`1,\"open\r\n总条数\r\n`1\r\n", "line 2: a quoted field is not closed" },
      { "批次id,批次id\r\n总条数\r\n`0\r\n", "line 1: header: column '批次id' twice" },
      { "", "the file is empty" },
    } do
      local path, sha = file("bad.csv", c[1])
      local f, err = flow.open(path, sha)
      assert.is_nil(f, c[2])
      assert.equal("verify", err.kind)
      assert.equal("bad_flow", err.code, c[2])
      assert.matches(c[2], err.message, 1, true)
    end
    -- the hash is checked first: a file that is neither
    local path = file("bad.csv", "nonsense")
    assert.equal("hash_mismatch", select(2, flow.open(path, crypto.sha1("other"))).code)
    assert.equal("hash_type", select(2, flow.open(path, crypto.sha1("nonsense"), "MD5")).code)
    assert.equal("io", select(2, flow.open(dir .. "/none.csv", "00")).code)
    -- false: no hash to compare (a file checked before)
    local ok = file("ok.csv", "批次id\r\n`1\r\n总条数\r\n`1\r\n")
    assert.equal(1, assert(flow.open(ok, false)).count)
  end)

  it("raises for wrong arguments", function()
    assert.has_error(function() flow.open(nil, "x") end, "flow.open: expected a file path")
    assert.has_error(function() flow.open("x") end,
      "flow.open: expected the hash_value of the answer (a string; false compares none)")
    assert.has_error(function() flow.open("x", "y", 1) end, "flow.open: hash_type must be a string")
    assert.has_error(function() wx:flow("use", "1") end, 'flow: kind must be "use-flow" or "refund-flow", got use')
    assert.has_error(function() wx:flow("use-flow", 1) end, "flow: expected a stock_id (a string)")
    assert.has_error(function() wx:flow("use-flow", "1", { paht = "x" }) end, "flow: unknown option 'paht'")
    assert.has_error(function() wx.flow("use-flow", "1") end, "flow: call it with ':' (wx:flow(kind, stock_id))")
    assert.has_error(function() wx:download("/v3/billdownload/file", { path = 1 }) end, "download: opts.path must be a file path")
    assert.has_error(function() wx:download("/v3/billdownload/file", { out = "x" }) end, "download: unknown option 'out'")
  end)

  it("reads a large file a line at a time, never holding it", function()
    -- 120000 rows, about 16 MB
    local path = dir .. "/large.csv"
    local out = assert(io.open(path, "wb"))
    local digest = crypto.digest("sha1")
    local function put(s)
      out:write(s)
      digest:update(s)
    end
    put(USE_HEADER .. "\r\n")
    local rows = 120000
    for i = 1, rows, 1000 do
      local chunk = {}
      for j = i, i + 999 do
        chunk[#chunk + 1] = ("`16000001,`%d,`全场代金券,`10.00,`%d.%02d,`支付,`4200000000202612010%09d,`2026-12-01 10:%02d:%02d,"
          .. '`1900000001,"","",""\r\n'):format(98000000000 + j, 100 + j % 50, j % 100, j, j % 60, j % 60)
      end
      put(table.concat(chunk))
    end
    put("总条数\r\n`" .. rows .. "\r\n")
    out:close()
    local sha = digest:final()
    collectgarbage("collect")
    local base, peak = collectgarbage("count"), 0
    local f = assert(flow.open(path, sha))
    peak = math.max(peak, collectgarbage("count"))
    assert.equal(rows, f.count)
    assert.is_true(f.size > 16e6, tostring(f.size))
    local n, total = 0, 0
    for row in f:rows() do
      n = n + 1
      total = total + row.order_amount
      if n % 5000 == 0 then peak = math.max(peak, collectgarbage("count")) end
    end
    assert.equal(rows, n)
    local want = 0
    for j = 1, rows do want = want + (100 + j % 50) * 100 + j % 100 end
    assert.equal(want, total)
    -- the Lua heap never held more than a few chunks' worth (the file is 16 MB)
    assert.is_true((peak - base) < 8 * 1024, ("heap grew by %.0f KiB"):format(peak - base))
  end)
end)
