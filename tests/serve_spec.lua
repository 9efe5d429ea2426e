-- quan serve: the notification receiver, against the sandbox (docs/notifications.md)
local qos = require "quan.os"
local cjson = require "cjson"
local http = require "quan.http"
local sqlite = require "quan.sqlite"
local sh = require "tests.support.sh"
local batchsbx = require "tests.support.batchsbx"
local receiver = require "tests.support.receiver"
local notification = require "tests.support.notification"

local wait_until, read = receiver.wait_until, receiver.read

-- plain(s) -> s as a Lua pattern matching itself
local function plain(s)
  return (s:gsub("%p", "%%%0"))
end

-- handler(dir[, body]) -> path of a handler script that appends "begin ID
-- ATTEMPT" to dir/calls before `body` (Lua, with `event` in scope) and "end
-- ID ATTEMPT" after it
local function handler(dir, body)
  return sh.write(dir .. "/handler.lua", ([[
local calls = %q
local function note(what, event)
  local f = assert(io.open(calls, "a"))
  f:write(what, " ", event.id, " ", event.attempt, "\n")
  f:close()
end
return function(event)
  note("begin", event)
  %s
  note("end", event)
end
]]):format(dir .. "/calls", body or ""))
end

-- calls(dir) -> {begin = {id -> n}, ["end"] = {id -> n}, total = begins}
local function calls(dir)
  local t = { begin = {}, ["end"] = {}, total = 0 }
  for what, id in read(dir .. "/calls"):gmatch("(%a+) (%S+) %d+\n") do
    t[what][id] = (t[what][id] or 0) + 1
    if what == "begin" then t.total = t.total + 1 end
  end
  return t
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("quan serve", function()
  local h, stock

  local function control(path, body)
    local res = assert(http.request { method = body and "POST" or "GET", url = h.base_url .. path, cafile = h.ca_file,
      headers = { "Content-Type: application/json" }, body = body and cjson.encode(body) })
    return cjson.decode(res.body), res.status
  end

  local function callback(url)
    assert(h.wx.v3.marketing.favor.callbacks:post { json = { mchid = h.wx.mchid, notify_url = url } })
  end

  local serial = 0
  -- redeem() -> {coupon_id, event_id, delivery}: a coupon sent to a new
  -- user and used by a payment (the sandbox notifies the callback URL)
  local function redeem()
    serial = serial + 1
    local openid = ("oServe%d-%d"):format(qos.getpid(), serial)
    local sent = assert(h.wx.v3.marketing.favor.users._openid_.coupons:post { openid = openid, json = {
      stock_id = stock, out_request_no = ("serve-%d-%d"):format(qos.getpid(), serial), appid = h.appid,
      stock_creator_mchid = h.wx.mchid } })
    local used = control("/sandbox/coupons/use", { coupon_id = sent.json.coupon_id, openid = openid })
    return { coupon_id = sent.json.coupon_id, event_id = cjson.decode(used.notification.body).id,
      delivery = used.delivery }
  end

  -- delivered(ids) -> true when the sandbox delivered every notification of ids
  local function delivered(ids)
    local state = {}
    for _, e in ipairs(control("/sandbox/notifications").data) do state[e.event_id] = e.state end
    for _, id in ipairs(ids) do
      if state[id] ~= "delivered" then return false end
    end
    return true
  end

  setup(function()
    h = batchsbx.start()
    stock = batchsbx.stock(h, 500)
    -- retries every 0.2 s, so the specs need not wait a minute
    control("/sandbox/notifications", { retry_interval = 0.2, retries = 50 })
  end)

  teardown(function()
    h:stop()
  end)

  describe("against the sandbox's deliveries", function()
    it("stores N redemptions exactly once and calls the handler once each, through retries: receiver down, then up, and a store that fails",
      function()
        local dir = sh.tmpdir()
        local store = dir .. "/events.db"
        local port = receiver.free_port()
        callback(("http://127.0.0.1:%d/notify"):format(port))
        local ids = {}
        -- the receiver is down: the first attempts fail, the sandbox retries
        for _ = 1, 4 do
          local r = redeem()
          assert.equal("pending", r.delivery.state)
          ids[#ids + 1] = r.event_id
        end
        local r1 = receiver.start(h, { store = store, handler = handler(dir), listen = "127.0.0.1:" .. port })
        for _ = 1, 4 do ids[#ids + 1] = redeem().event_id end
        -- a store another process holds: the receiver answers 500 (after
        -- its busy timeout), WeChat Pay retries
        local db = assert(sqlite.open(store))
        assert(db:exec("BEGIN IMMEDIATE"))
        for _ = 1, 2 do
          local r = redeem()
          assert.same({ 500, "pending" }, { r.delivery.status, r.delivery.state })
          ids[#ids + 1] = r.event_id
        end
        assert(db:exec("ROLLBACK"))
        db:close()
        wait_until(function() return delivered(ids) end, 30, "the deliveries")
        wait_until(function() return calls(dir).total >= #ids end, 20, "the handler calls")
        local rows = receiver.rows(store)
        assert.equal(#ids, #rows)
        local stored = {}
        for _, row in ipairs(rows) do
          stored[row.id] = true
          assert.equal(1, row.deliveries) -- a 500 is no delivery: nothing was kept
          assert.equal(1, row.attempts)
          assert.is_number(row.handled)
          local data = cjson.decode(row.data)
          assert.equal("USED", data.status)
          assert.equal("COUPON.USE", row.event_type)
        end
        for _, id in ipairs(ids) do assert.is_true(stored[id], id) end
        local c = calls(dir)
        assert.equal(#ids, c.total)
        for _, id in ipairs(ids) do
          assert.equal(1, c.begin[id], id)
          assert.equal(1, c["end"][id], id)
        end
        local failed = r1:log("store_failed")
        assert.is_true(#failed >= 2) -- a retry may come while the store is still held
        assert.equal("busy", failed[1].code)
        assert.same({ "exit", 0 }, { r1:term() })
        assert.equal(1, #r1:log("stopped"))
      end)

    it("loses nothing and stores nothing twice when killed (-9) during deliveries and inside a handler; each event handled at least once, exactly once unless a kill interrupted its handler",
      function()
        local dir = sh.tmpdir()
        local store = dir .. "/events.db"
        local port = receiver.free_port()
        callback(("http://127.0.0.1:%d/notify"):format(port))
        -- the handler of the 12th coupon used blocks, the first time, until killed
        local body = ([[
          if event.data.coupon_id == io.open(%q):read("l") and not io.open(%q) then
            io.open(%q, "w"):close()
            require("quan.os").sleep(60)
          end]]):format(dir .. "/target", dir .. "/inside", dir .. "/inside")
        local script = handler(dir, body)
        sh.write(dir .. "/target", "none\n")
        -- a payment a few times a second, in another process
        local n = 20
        sh.write(dir .. "/redeem.lua", ([[
          local wx = require("wechatpay").client()
          local http, cjson, qos = require "quan.http", require "cjson", require "quan.os"
          local out = assert(io.open(%q, "w"))
          out:setvbuf("line")
          for i = 1, %d do
            local openid = ("oKill%%d-%%d"):format(qos.getpid(), i)
            local sent = assert(wx.v3.marketing.favor.users._openid_.coupons:post { openid = openid, json = {
              stock_id = %q, out_request_no = ("kill-%%d-%%d"):format(qos.getpid(), i), appid = wx.profile.appid,
              stock_creator_mchid = wx.mchid } })
            if i == 12 then
              local f = assert(io.open(%q, "w")); f:write(sent.json.coupon_id, "\n"); f:close()
            end
            local used = assert(http.request { method = "POST", url = wx.base_url .. "/sandbox/coupons/use",
              cafile = wx.profile.ca_file, body = cjson.encode { coupon_id = sent.json.coupon_id, openid = openid } })
            out:write(cjson.decode(cjson.decode(used.body).notification.body).id, "\n")
            qos.sleep(0.1)
          end
          out:close()
        ]]):format(dir .. "/ids", n, stock, dir .. "/target"))
        local r = receiver.start(h, { store = store, handler = script, listen = "127.0.0.1:" .. port })
        local payer = assert(qos.spawn({ "sh", "-c", "exec env QUAN_CONFIG=" .. sh.quote(h.config_path) .. " "
          .. sh.quote(sh.quan) .. " run " .. sh.quote(dir .. "/redeem.lua") }, { stdout = dir .. "/payer.out",
          stderr = dir .. "/payer.err" }))
        local kills = 0
        -- killed during deliveries, once some are stored
        wait_until(function() return #receiver.rows(store) >= 4 end, 30, "4 events stored")
        r:kill9()
        kills = kills + 1
        r = receiver.start(h, { store = store, handler = script, listen = "127.0.0.1:" .. port })
        -- killed inside the handler of the target
        wait_until(function() return io.open(dir .. "/inside") end, 60, "the handler of the 12th event")
        r:kill9()
        kills = kills + 1
        r = receiver.start(h, { store = store, handler = script, listen = "127.0.0.1:" .. port })
        assert.same({ "exit", 0 }, { qos.wait(payer) })
        local ids = {}
        for id in read(dir .. "/ids"):gmatch("%S+") do ids[#ids + 1] = id end
        assert.equal(n, #ids)
        wait_until(function() return delivered(ids) end, 30, "the deliveries")
        wait_until(function()
          for _, row in ipairs(receiver.rows(store)) do
            if not row.handled then return false end
          end
          return true
        end, 30, "every event handled")
        local rows = receiver.rows(store)
        assert.equal(n, #rows) -- the id is UNIQUE: n rows, n events
        local by_id = {}
        for _, row in ipairs(rows) do by_id[row.id] = row end
        local c = calls(dir)
        local attempts = 0
        for _, id in ipairs(ids) do
          local row = assert(by_id[id], "not stored: " .. id)
          attempts = attempts + row.attempts
          -- every call began is counted in the store, and one ended
          assert.equal(row.attempts, c.begin[id], id)
          assert.is_true((c["end"][id] or 0) >= 1, id)
          if row.attempts == 1 then assert.equal(1, c["end"][id], id) end
        end
        -- a kill interrupts at most one call: the one under way
        assert.is_true(attempts <= n + kills, ("%d calls for %d events and %d kills"):format(attempts, n, kills))
        local target = read(dir .. "/target"):match("%S+")
        for _, row in ipairs(rows) do
          if cjson.decode(row.data).coupon_id == target then
            assert.equal(2, row.attempts)
            assert.equal(1, c["end"][row.id])
          end
        end
        assert.same({ "exit", 0 }, { r:term() })
      end)

    it("stores the sandbox's bulk redemptions, made as its business clock moves, once each through a kill -9 and the retries",
      function()
        local dir = sh.tmpdir()
        local store = dir .. "/events.db"
        local port = receiver.free_port()
        callback(("http://127.0.0.1:%d/notify"):format(port))
        for i = 1, 30 do
          assert(h.wx.v3.marketing.favor.users._openid_.coupons:post { openid = ("oBulk%d-%d"):format(qos.getpid(), i),
            json = { stock_id = stock, out_request_no = ("bulk-%d-%d"):format(qos.getpid(), i), appid = h.appid,
              stock_creator_mchid = h.wx.mchid } })
        end
        local r = receiver.start(h, { store = store, handler = handler(dir), listen = "127.0.0.1:" .. port })
        local plan, status = control("/sandbox/redemptions", { stock_id = stock, count = 30, over_seconds = 3600,
          seed = 5 })
        assert.equal(200, status, cjson.encode(plan))
        local coupons = {}
        for _, d in ipairs(plan.data) do coupons[d.coupon_id] = true end
        assert.equal(30, count(coupons))
        -- an hour of business time in six steps; killed after the third
        for step = 1, 6 do
          control("/sandbox/clock", { advance_seconds = 600 })
          if step == 3 then
            wait_until(function() return #receiver.rows(store) > 0 end, 20, "some events stored")
            r:kill9()
            qos.sleep(0.5) -- deliveries meanwhile fail, the sandbox retries them
            r = receiver.start(h, { store = store, handler = handler(dir), listen = "127.0.0.1:" .. port })
          end
        end
        wait_until(function()
          local rows = receiver.rows(store)
          if #rows < 30 then return false end
          for _, row in ipairs(rows) do if not row.handled then return false end end
          return true
        end, 60, "30 events stored and handled")
        local rows = receiver.rows(store)
        assert.equal(30, #rows)
        local c = calls(dir)
        local attempts = 0
        for _, row in ipairs(rows) do
          local coupon = cjson.decode(row.data).coupon_id
          assert.is_true(coupons[coupon], coupon)
          coupons[coupon] = nil
          attempts = attempts + row.attempts
          assert.equal(row.attempts, c.begin[row.id], row.id)
          if row.attempts == 1 then assert.equal(1, c["end"][row.id], row.id) end
        end
        assert.equal(0, count(coupons)) -- every redemption is an event, none twice
        assert.is_true(attempts <= 31, attempts .. " calls for 30 events and one kill")
        assert.same({ "exit", 0 }, { r:term() })
      end)

    it("takes the sandbox's deliveries over TLS with a certificate and key given", function()
      local dir = sh.tmpdir()
      local r = receiver.start(h, { store = dir .. "/events.db", handler = handler(dir),
        args = { "--tls-cert", h.state .. "/server.pem", "--tls-key", h.state .. "/server.key.pem" } })
      assert.matches("^https://127%.0%.0%.1:%d+$", r.url)
      callback(r.url .. "/notify")
      local got = redeem()
      assert.same({ 200, "delivered" }, { got.delivery.status, got.delivery.state })
      wait_until(function() return calls(dir).total == 1 end, 10, "the handler call")
      assert.equal(got.event_id, receiver.rows(dir .. "/events.db")[1].id)
      assert.same({ "exit", 0 }, { r:term() })
    end)
  end)

  describe("the checks", function()
    local dir, r, maker, url

    setup(function()
      dir = sh.tmpdir()
      r = receiver.start(h, { store = dir .. "/events.db", handler = handler(dir) })
      maker = notification.new(h.state)
      url = r.url .. "/wechatpay/notify"
    end)

    teardown(function()
      assert.same({ "exit", 0 }, { r:term() })
    end)

    it("refuses a tampered notification naming the failed check in its log, and accepts WeChat Pay's retry of the genuine one",
      function()
        local genuine = maker:make()
        local function with(headers, body)
          local copy = {}
          for k, v in pairs(genuine.headers) do copy[k] = v end
          for k, v in pairs(headers or {}) do copy[k] = v ~= false and v or nil end
          return { headers = copy, body = body or genuine.body }
        end
        local stale = maker:sign(genuine.body, { timestamp = math.floor(qos.time()) - 3600 })
        local unknown = maker:sign(genuine.body, { serial = "PUB_KEY_ID_0114999999999999999999999999999999" })
        local cases = {
          { "a body byte changed", with(nil, (genuine.body:gsub("COUPON%.USE", "COUPON.USF"))), 401, "bad_signature" },
          { "another signature", with { ["Wechatpay-Signature"] = maker:sign("{}")["Wechatpay-Signature"] }, 401,
            "bad_signature" },
          { "a stale timestamp", with(stale), 401, "clock_skew" },
          { "an unknown serial", with(unknown), 401, "unknown_serial" },
          { "no signature", with { ["Wechatpay-Signature"] = false }, 400, "missing_header" },
        }
        for i, case in ipairs(cases) do
          local res = assert(receiver.post(url, case[2]))
          assert.equal(case[3], res.status, case[1])
          local answer = cjson.decode(res.body)
          assert.equal("FAIL", answer.code, case[1])
          assert.matches("^" .. case[4] .. ": ", answer.message, nil, case[1])
          local refused = r:log("refused")
          assert.equal(i, #refused, case[1])
          assert.equal(case[4], refused[i].check, case[1])
          assert.equal(case[3], refused[i].status, case[1])
          assert.matches("^notification: ", refused[i].message)
          assert.matches("^127%.0%.0%.1:%d+$", refused[i].remote)
        end
        assert.equal(0, #receiver.rows(dir .. "/events.db"))
        -- behind a proxy (docs/notifications.md): the client it reports is logged beside the peer
        for header, value in pairs { ["X-Forwarded-For"] = "203.0.113.7, 10.0.0.2", ["X-Real-IP"] = "203.0.113.8" } do
          local res = assert(receiver.post(url, with { ["Wechatpay-Signature"] = false, [header] = value }))
          assert.equal(400, res.status)
          local refused = r:log("refused")
          assert.same({ "missing_header", value }, { refused[#refused].check, refused[#refused].forwarded_for })
          assert.matches("^127%.0%.0%.1:%d+$", refused[#refused].remote)
        end
        -- WeChat Pay's retry: the same body, signed anew
        local retry = { headers = maker:sign(genuine.body), body = genuine.body }
        local res = assert(receiver.post(url, retry))
        assert.same({ 200, { code = "SUCCESS" } }, { res.status, cjson.decode(res.body) })
        -- and again: a repeat, answered 200, kept once
        res = assert(receiver.post(url, { headers = maker:sign(genuine.body), body = genuine.body }))
        assert.equal(200, res.status)
        local rows = receiver.rows(dir .. "/events.db")
        assert.equal(1, #rows)
        assert.same({ genuine.id, 2, genuine.body }, { rows[1].id, rows[1].deliveries, rows[1].body })
        assert.same(genuine.coupon, cjson.decode(rows[1].data))
        assert.equal(1, #r:log("stored"))
        assert.equal(1, #r:log("repeat"))
        wait_until(function() return calls(dir).total >= 1 end, 10, "the handler call")
        qos.sleep(0.2)
        assert.equal(1, calls(dir).total)
        -- the stored headers verify the stored body again, later
        local headers = cjson.decode(rows[1].headers)
        assert(h.wx:notification(headers, rows[1].body, { max_skew = false }))
      end)

    it("refuses a notification whose resource does not decrypt, or that has no event id", function()
      local bad = notification.new(h.state)
      bad.apiv3 = ("k"):rep(32)
      local res = assert(receiver.post(url, bad:make()))
      assert.equal(401, res.status)
      assert.equal("decrypt", r:log("refused")[#r:log("refused")].check)
      local body = cjson.encode { event_type = "COUPON.USE", resource = cjson.decode(maker:make().body).resource }
      res = assert(receiver.post(url, { headers = maker:sign(body), body = body }))
      assert.equal(400, res.status)
      assert.equal("event_id", r:log("refused")[#r:log("refused")].check)
    end)

    it("refuses a body or headers over the limits, and answers health, other paths and methods", function()
      local note = maker:make()
      local big = { headers = note.headers, body = note.body .. (" "):rep(70 * 1024) }
      local res = assert(receiver.post(url, big))
      assert.equal(413, res.status)
      res = assert(receiver.post(url, note, { "X-Padding: " .. ("p"):rep(20 * 1024) }))
      assert.equal(431, res.status)
      assert.equal("headers_too_large", r:log("refused")[#r:log("refused")].check)
      -- past libmicrohttpd's own bound (32 KiB for a request's head): refused too
      res = receiver.post(url, note, { "X-Padding: " .. ("p"):rep(100 * 1024) })
      assert.is_true(res == nil or res.status >= 400)
      res = assert(http.request { url = r.url .. "/health" })
      assert.equal(200, res.status)
      local health = cjson.decode(res.body)
      assert.is_true(health.ok)
      assert.is_number(health.events)
      assert.is_number(health.pending)
      res = assert(http.request { url = r.url .. "/wechatpay/notify" })
      assert.equal(404, res.status)
      res = assert(http.request { method = "PUT", url = url, body = "{}" })
      assert.equal(405, res.status)
      -- the receiver goes on: the same notification, within the limits
      assert.equal(200, assert(receiver.post(url, note)).status)
    end)
  end)

  describe("the handler", function()
    it("is retried with backoff while it fails, listed as pending meanwhile, and never delays an answer", function()
      local dir = sh.tmpdir()
      local store = dir .. "/events.db"
      -- fails twice (an error, then nil and a reason), then takes 4 s the first time
      local r = receiver.start(h, { store = store, args = { "--retry-max", "0.5" }, handler = handler(dir, ([[
        if event.attempt == 1 then error("the CRM is down") end
        if event.attempt == 2 then return nil, "the CRM said no" end
        if not io.open(%q) then io.open(%q, "w"):close(); require("quan.os").sleep(4) end]]):format(
        dir .. "/slept", dir .. "/slept")) })
      local maker = notification.new(h.state)
      local first = maker:make()
      assert.equal(200, assert(receiver.post(r.url, first)).status)
      wait_until(function() return #r:log("handler_failed") == 1 end, 10, "a failed call")
      local out, err, code = sh.run(sh.quote(sh.quan) .. " serve list --store " .. sh.quote(store))
      assert.equal(0, code, err)
      assert.matches(plain(first.id) .. "  .-  COUPON%.USE  coupon %d+  stock 16000001  pending after 1 call, next in %ds: ", out)
      assert.matches("the CRM is down", out)
      assert.matches("\n1 pending\n$", out)
      wait_until(function() return #r:log("handler_failed") == 2 end, 10, "a second failed call")
      local failed = r:log("handler_failed")
      assert.matches("the CRM is down", failed[1].error)
      assert.equal("the CRM said no", failed[2].error)
      assert.same({ 1, 2 }, { failed[1].attempt, failed[2].attempt })
      assert.same({ 0.5, 0.5 }, { failed[1].retry_in, failed[2].retry_in }) -- 1 s, 2 s: at most --retry-max
      -- the third call sleeps 4 s on the main thread: answers go on meanwhile
      wait_until(function() return calls(dir).total == 3 end, 10, "the third call")
      local t0 = qos.now()
      assert.equal(200, assert(receiver.post(r.url, maker:make())).status)
      assert.is_true(qos.now() - t0 < 3, "an answer waited for the handler")
      assert.equal(0, count(calls(dir)["end"])) -- still inside the call
      wait_until(function() return #r:log("handled") == 2 end, 20, "both handled")
      local rows = receiver.rows(store)
      assert.same({ 3, 3 }, { rows[1].attempts, rows[2].attempts }) -- each failed twice
      assert.is_nil(rows[1].last_error)
      out = sh.run(sh.quote(sh.quan) .. " serve list --store " .. sh.quote(store))
      assert.equal("0 pending\n", out)
      out = sh.run(sh.quote(sh.quan) .. " serve list --all --json --store " .. sh.quote(store))
      local listed = {}
      for line in out:gmatch("[^\n]+") do listed[#listed + 1] = cjson.decode(line) end
      assert.same({ first.id, "handled", 3 }, { listed[1].id, listed[1].state, listed[1].attempts })
      assert.equal(first.coupon.coupon_id, listed[1].data.coupon_id)
      assert.same({ "exit", 0 }, { r:term() })
    end)

    it("stops a call that runs past --handler-timeout, in its coroutines and tasks too, and one that catches the error; the event is called again", function()
      local dir = sh.tmpdir()
      local store = dir .. "/events.db"
      -- attempts 1 to 4 loop (plainly, catching every error, in a coroutine,
      -- in a quan.async task), 5 yields, 6 returns
      local r = receiver.start(h, { store = store, args = { "--retry-max", "0.2", "--handler-timeout", "0.5" },
        handler = handler(dir, [[
        local async = require "quan.async"
        if event.attempt == 1 then while true do end end
        if event.attempt == 2 then while true do pcall(function() while true do end end) end end
        if event.attempt == 3 then coroutine.wrap(function() while true do end end)() end
        if event.attempt == 4 then async.spawn(function() while true do end end); async.run() end
        if event.attempt == 5 then coroutine.yield() end]]) })
      local maker = notification.new(h.state)
      local note = maker:make()
      local t0 = qos.now()
      assert.equal(200, assert(receiver.post(r.url, note)).status)
      wait_until(function() return #r:log("handled") == 1 end, 30, "the sixth call")
      local failed = r:log("handler_failed")
      assert.equal(5, #failed)
      for i = 1, 4 do
        assert.equal(i, failed[i].attempt)
        assert.equal("the handler ran past 0.5 s (--handler-timeout)", failed[i].error)
        assert.is_true(failed[i].seconds >= 0.5 and failed[i].seconds < 2, "stopped at its limit: " .. failed[i].seconds)
      end
      assert.equal("the handler yielded outside a quan.async task", failed[5].error)
      assert.is_true(qos.now() - t0 < 20)
      local t = calls(dir)
      assert.same({ 6, 1 }, { t.total, t["end"][note.id] }) -- only the sixth call ended
      assert.equal(6, receiver.rows(store)[1].attempts)
      assert.same({ "exit", 0 }, { r:term() })
    end)

    it("runs again for an event replayed, and for the pending ones when skipped ahead", function()
      local dir = sh.tmpdir()
      local store = dir .. "/events.db"
      local r = receiver.start(h, { store = store, handler = handler(dir) })
      local maker = notification.new(h.state)
      local note = maker:make()
      assert.equal(200, assert(receiver.post(r.url, note)).status)
      wait_until(function() return calls(dir).total == 1 end, 10, "the call")
      local out, err, code = sh.run(sh.quote(sh.quan) .. " serve replay --store " .. sh.quote(store) .. " " .. note.id)
      assert.equal(0, code, err)
      assert.matches("^1 event due now", out)
      wait_until(function() return calls(dir).total == 2 end, 10, "the replayed call")
      assert.equal(2, receiver.rows(store)[1].attempts)
      out, err, code = sh.run(sh.quote(sh.quan) .. " serve replay --store " .. sh.quote(store) .. " no-such-event")
      assert.equal(1, code)
      assert.matches("no event no%-such%-event in the store", err)
      assert.equal("", out) -- not also "0 events due now"
      assert.same({ "exit", 0 }, { r:term() })
      -- stored while no handler ran: pending; the next receiver with one calls it
      r = receiver.start(h, { store = store })
      assert.equal(200, assert(receiver.post(r.url, maker:make())).status)
      assert.equal(1, #r:log("warning"))
      assert.same({ "exit", 0 }, { r:term() })
      out = sh.run(sh.quote(sh.quan) .. " serve list --store " .. sh.quote(store))
      assert.matches("pending, not called yet\n1 pending\n$", out)
      r = receiver.start(h, { store = store, handler = handler(dir) })
      wait_until(function() return calls(dir).total == 3 end, 10, "the pending event's call")
      assert.same({ "exit", 0 }, { r:term() })
    end)

    it("lets a running call finish on SIGTERM, stops taking requests and exits 0; a restart finds everything", function()
      local dir = sh.tmpdir()
      local store = dir .. "/events.db"
      local r = receiver.start(h, { store = store, handler = handler(dir, "require('quan.os').sleep(1)") })
      local maker = notification.new(h.state)
      assert.equal(200, assert(receiver.post(r.url, maker:make())).status)
      assert.equal(200, assert(receiver.post(r.url, maker:make())).status)
      wait_until(function() return calls(dir).total == 1 end, 10, "the first call")
      local url = r.url
      assert.same({ "exit", 0 }, { r:term() })
      local c = calls(dir)
      assert.equal(1, count(c["end"])) -- the call under way finished
      local stopping = r:log("stopping")
      assert.same({ "signal", "TERM" }, { stopping[1].reason, stopping[1].signal })
      assert.same({ 2, 1 }, { r:log("stopped")[1].events, r:log("stopped")[1].pending })
      assert.is_nil(http.request { url = url .. "/health", timeout = 2 })
      r = receiver.start(h, { store = store, handler = handler(dir) })
      assert.equal(1, r:log("start")[1].pending)
      wait_until(function() return count(calls(dir)["end"]) == 2 end, 10, "the second call")
      assert.same({ "exit", 0 }, { r:term() })
    end)
  end)

  describe("the command", function()
    it("runs the campaign file's handler and records its store in the campaign's state", function()
      local dir = sh.tmpdir()
      sh.write(dir .. "/spring.lua", ([[
        return { name = "spring-serve", stocks = {},
          notifications = { handler = function(event)
            local f = assert(io.open(%q, "a")); f:write(event.id, "\n"); f:close()
          end } }]]):format(dir .. "/handled"))
      local r = receiver.start(h, { campaign = "spring.lua", cwd = dir })
      local note = notification.new(h.state):make()
      assert.equal(200, assert(receiver.post(r.url, note)).status)
      wait_until(function() return read(dir .. "/handled") == note.id .. "\n" end, 10, "the campaign's handler")
      assert.equal("campaign spring-serve", r:log("start")[1].handler)
      assert.same({ "exit", 0 }, { r:term() })
      assert.equal(1, #receiver.rows(dir .. "/spring.lua.events"))
      local db = assert(sqlite.open(dir .. "/spring.lua.state"))
      local row = db:first("SELECT * FROM stores")
      db:close()
      assert.same({ "notifications", dir .. "/spring.lua.events" }, { row.name, row.path })
      -- a campaign without a handler: the start names none, the warning says the campaign declares none
      sh.write(dir .. "/bare.lua", 'return { name = "bare-serve", stocks = {} }')
      local bare = receiver.start(h, { campaign = "bare.lua", cwd = dir })
      assert.equal(cjson.null, bare:log("start")[1].handler)
      assert.matches("^campaign bare%-serve declares no handler %(notifications%.handler, c:handler%): events are stored",
        bare:log("warning")[1].message)
      assert.same({ "exit", 0 }, { bare:term() })
      local out, err, code = sh.run("cd " .. sh.quote(dir) .. " && " .. sh.quote(sh.quan) .. " serve list --all spring.lua")
      assert.equal(0, code, err)
      assert.matches("\n1 event\n$", "\n" .. out)
    end)

    it("holds its store: a second receiver on it exits 6", function()
      local dir = sh.tmpdir()
      local r = receiver.start(h, { store = dir .. "/events.db" })
      local _, err, code = sh.run(sh.quote(sh.quan) .. " --config " .. sh.quote(h.config_path) .. " serve --listen 127.0.0.1:0 --store "
        .. sh.quote(dir .. "/events.db"))
      assert.equal(6, code)
      assert.matches("store .*events%.db is in use by another receiver %(pid " .. r.pid .. "%)", err)
      assert.same({ "exit", 0 }, { r:term() })
    end)

    it("refuses bad command lines and what it cannot use, saying why", function()
      local dir = sh.tmpdir()
      sh.write(dir .. "/notfn.lua", "return 42\n")
      sh.write(dir .. "/empty.db", "")
      sh.write(dir .. "/c.lua", "return { name = 'c', stocks = {} }\n")
      assert(os.execute("mkfifo " .. sh.quote(dir .. "/fifo")))
      local cfg = "--config " .. sh.quote(h.config_path) .. " "
      for _, case in ipairs {
        { cfg .. "serve --store x.db --listen 0.0.0.0:8080", 2, "is not a loopback address.*%-%-allow%-remote" },
        { cfg .. "serve --store x.db --listen 192.168.1.1:80", 2, "not a loopback address" },
        { cfg .. "serve --store x.db --listen nowhere", 2, "%-%-listen wants an IPv4 address and a port" },
        { cfg .. "serve --store x.db --listen 127.0.0.1:70000", 2, "port 70000 is out of range" },
        { cfg .. "serve --store x.db --tls-cert " .. sh.quote(h.state .. "/server.pem"), 2, "go together" },
        { cfg .. "serve --store x.db --tls-cert nope.pem --tls-key nope.pem", 2, "%-%-tls%-cert nope%.pem cannot be read" },
        -- named before the server starts (its own refusal names no file)
        { cfg .. "serve --store x.db --tls-cert c.lua --tls-key c.lua", 2, "^quan serve: %-%-tls%-cert c%.lua is not a PEM certificate" },
        { cfg .. "serve --store x.db --tls-cert " .. sh.quote(h.state .. "/server.pem") .. " --tls-key c.lua", 2,
          "^quan serve: %-%-tls%-key c%.lua is not a PEM private key" },
        { cfg .. "serve --store x.db --tls-cert " .. sh.quote(h.state .. "/server.pem") .. " --tls-key "
          .. sh.quote(h.state .. "/merchant.key.pem"), 2, "^quan serve: %-%-tls%-key .-merchant%.key%.pem is not the key of %-%-tls%-cert" },
        { cfg .. "serve --listen 127.0.0.1:0", 2, "no store: give %-%-store PATH" },
        { cfg .. "serve --handler notfn.lua c.lua", 2, "give either, not both" },
        { cfg .. "serve --store x.db --handler missing.lua", 2, "%-%-handler missing%.lua cannot be read" },
        { cfg .. "serve --store x.db --handler notfn.lua --listen 127.0.0.1:0", 1, "returns function%(event%).-returned number" },
        { cfg .. "serve --store x.db --workers 0", 2, "%-%-workers" },
        -- a ready file is replaced, then removed: never a fifo or a device
        { cfg .. "serve --store x.db --ready-file fifo", 2, "^quan serve: %-%-ready%-file fifo is a fifo, not a file: "
          .. "it would be replaced, then removed\n" },
        { cfg .. "--sandbox serve --store x.db --listen 127.0.0.1:0", 2, "private sandbox" },
        { "serve --store x.db --listen 127.0.0.1:0", 1, "no profile configured" },
        { cfg .. "serve list --workers 2 --store x.db", 2, "^quan serve list: unknown option '%-%-workers'.-usage: quan serve list " },
        { cfg .. "serve list --store missing.db", 1, "store missing%.db: no such file" },
        { cfg .. "serve list --store fifo", 1, "^quan serve list: store fifo cannot be opened: a fifo, not a database file\n" },
        { cfg .. "serve list", 2, "^quan serve list: no store: give %-%-store PATH.-usage: quan serve list " },
        { cfg .. "serve replay --all --store x.db", 2, "unknown option '%-%-all'" },
        { cfg .. "serve a.lua b.lua", 2, "unexpected argument 'b%.lua'" },
        { cfg .. "serve --listen 127.0.0.1:0 --store /nonexistent/x.db", 2,
          "^quan serve: store /nonexistent/x%.db cannot be used: its lock /nonexistent/x%.db%.lock: No such file or directory\n" },
        { cfg .. "serve --listen 127.0.0.1:0 --store .", 2, "^quan serve: store .-/%. is a directory %(%-%-store names the store file%)\n" },
        { cfg .. "serve list --store .", 1, "^quan serve list: store %. is a directory" },
        { cfg .. "serve list --store empty.db", 1, "^quan serve list: store empty%.db: an empty file %(no receiver has stored anything there yet%)\n" },
        -- the server's limit, said before anything starts (it was a traceback of quan.server.start)
        { cfg .. "serve --store x.db --workers 1025", 2, "^quan serve: %-%-workers wants at most 1024 threads\n" },
        { cfg .. "serve --listen 127.0.0.1:0 --store notfn.lua", 2, "store .-notfn%.lua cannot be opened: file is not a database\n" },
      } do
        local _, err, code = sh.run("cd " .. sh.quote(dir) .. " && env -u QUAN_CONFIG timeout 30 " .. sh.quote(sh.quan) .. " " .. case[1])
        assert.equal(case[2], code, case[1] .. ": " .. err)
        assert.matches(case[3], err, nil, case[1])
      end
      assert.is_nil(io.open(dir .. "/x.db")) -- refused before anything was made
      assert.equal("fifo", qos.stat(dir .. "/fifo").kind)
    end)

    it("logs JSON lines when its stderr is not a terminal, text lines when asked", function()
      local dir = sh.tmpdir()
      local r = receiver.start(h, { store = dir .. "/events.db", log_format = "text" })
      local note = notification.new(h.state):make()
      assert.equal(200, assert(receiver.post(r.url, note)).status)
      assert.same({ "exit", 0 }, { r:term() })
      local text = read(r.err_path)
      assert.matches("quan serve: start ", text)
      assert.matches("quan serve: stored coupon_id=%d+ event_type=COUPON.USE id=" .. plain(note.id), text)
      r = receiver.start(h, { store = dir .. "/events.db" })
      assert.equal(200, assert(receiver.post(r.url, note)).status)
      assert.same({ "exit", 0 }, { r:term() })
      for line in read(r.err_path):gmatch("[^\n]+") do
        local t = assert(cjson.decode(line), line)
        assert.is_number(t.ts)
        assert.is_string(t.event)
      end
      assert.equal(note.id, r:log("repeat")[1].id)
    end)
  end)
end)

describe("quan.serve.store", function()
  local store = require "quan.serve.store"

  it("creates a private file, keys events by id and counts repeats, and holds a lock", function()
    local dir = sh.tmpdir()
    local path = dir .. "/events.db"
    local s = assert(store.open(path, { mchid = "1900000001" }))
    assert.equal(384, qos.mode(path) & 511)
    local again, err, code = store.open(path, { mchid = "1900000001" })
    assert.is_nil(again)
    assert.equal("busy", code)
    assert.matches("in use by another receiver %(pid " .. qos.getpid() .. "%)", err)
    local w = assert(store.connect(path))
    local event = { id = "e1", event_type = "COUPON.USE", data = { coupon_id = "1" }, plaintext = '{"coupon_id":"1"}' }
    assert.equal("stored", w:put(event, { ["wechatpay-serial"] = "S" }, "body", 100))
    assert.same({ "repeat", false }, { w:put(event, {}, "body", 101) })
    assert.same({ "repeat", true }, { w:put(event, {}, "other body", 102) })
    local row = s:list { all = true }[1]
    assert.same({ "e1", 3, 100, 102, '{"coupon_id":"1"}', '{"wechatpay-serial":"S"}' },
      { row.id, row.deliveries, row.received, row.last_delivery, row.data, row.headers })
    assert.same({ events = 1, pending = 1, failing = 0, oldest_pending = 100 }, s:counts())
    w:close()
    s:close()
    -- another merchant's store, and a database that is no store
    local none
    none, err, code = store.open(path, { mchid = "1900000002" })
    assert.is_nil(none)
    assert.equal("mismatch", code)
    assert.matches("holds the events of merchant 1900000001, not 1900000002", err)
    local foreign = assert(sqlite.open(dir .. "/foreign.db"))
    foreign:exec("CREATE TABLE t (x)")
    foreign:close()
    none, err, code = store.open(dir .. "/foreign.db", { mchid = "1900000001" })
    assert.is_nil(none)
    assert.equal("mismatch", code)
    assert.matches("is not a quan notification store", err)
    none, err, code = store.read(dir .. "/nothing.db")
    assert.same({ nil, "noent" }, { none, code })
  end)

  it("backs off 1 s, 2 s, 4 s ... up to the maximum", function()
    assert.same({ 1, 2, 4, 8, 300, 300 }, { store.retry_delay(1), store.retry_delay(2), store.retry_delay(3),
      store.retry_delay(4), store.retry_delay(12), store.retry_delay(40) })
    assert.equal(0.5, store.retry_delay(3, 0.5))
  end)

  it("counts a call before it starts, and makes every pending event due at a restart", function()
    local dir = sh.tmpdir()
    local s = assert(store.open(dir .. "/events.db", { mchid = "1900000001" }))
    local w = assert(store.connect(dir .. "/events.db"))
    for i = 1, 3 do w:put({ id = "e" .. i, data = {} }, {}, "b", 100 + i) end
    w:close()
    assert.equal(3, #s:due(200, 10))
    assert.equal(1, s:begin_attempt("e1", 200, 3600)) -- then killed: no end
    s:failed("e2", 500, "boom")
    s:handled("e3", 201)
    assert.same({}, s:due(300, 10))
    assert.equal(2, s:resume(300))
    local due = s:due(300, 10)
    assert.same({ "e1", "e2" }, { due[1].id, due[2].id })
    assert.equal(2, s:begin_attempt("e1", 300, 3600))
    local n, unknown = s:replay({ "e3", "nope" }, 400)
    assert.same({ 1, { "nope" } }, { n, unknown })
    assert.equal(3, #s:list())
    s:close()
  end)

  it("adds no globals", function()
    local out = sh.run(sh.quote(sh.quan) .. [[ -e 'local b = {} for k in pairs(_G) do b[k] = true end
      for _, m in ipairs { "quan.serve", "quan.serve.store", "quan.serve.receiver", "quan.serve.dispatch", "quan.serve.log" } do
        require(m) end
      for k in pairs(_G) do if not b[k] then print(k) end end']])
    assert.equal("", out)
  end)
end)

describe("docs/notifications.md", function()
  it("has a systemd unit that systemd-analyze verify accepts", function()
    local unit = sh.read("docs/notifications.md"):match("\n```ini\n(.-)```")
    assert.truthy(unit, "no unit on the page")
    assert.matches("\nExecStart=/usr/local/bin/quan serve ", unit)
    local _, _, present = sh.run("command -v systemd-analyze")
    if present ~= 0 then
      pending("systemd-analyze is not installed: the unit was not verified")
      return
    end
    local dir = sh.tmpdir()
    -- the binary under test where the page installs it
    sh.write(dir .. "/quan-serve.service", (unit:gsub("/usr/local/bin/quan", sh.quan)))
    local out, err, code = sh.run("cd " .. sh.quote(dir) .. " && systemd-analyze verify ./quan-serve.service")
    assert.equal(0, code, out .. err)
    assert.equal("", out .. err)
    -- the check can fail: a mistake is reported
    sh.write(dir .. "/bad.service", (unit:gsub("/usr/local/bin/quan", sh.quan):gsub("Restart=on%-failure", "Restart=sometimes")))
    out, err = sh.run("cd " .. sh.quote(dir) .. " && systemd-analyze verify ./bad.service")
    assert.matches("sometimes", out .. err)
  end)

  it("runs the walk-through on the sandbox as written", function()
    local page = sh.read("docs/notifications.md")
    local section = page:match("\n## A walk%-through on the sandbox\n(.-)\n## ")
    assert.truthy(section, "walk-through not found")
    local dir = sh.tmpdir()
    -- the files it shows, then its commands in order, in one shell
    local files = {}
    for name, code in section:gmatch("\n`([%w%-_]+%.lua)`:\n\n```lua\n(.-)```") do
      sh.write(dir .. "/" .. name, code)
      files[#files + 1] = name
    end
    assert.same({ "winter.lua", "coupons.lua", "match.lua" }, files)
    local script = {}
    for block in section:gmatch("\n```sh\n(.-)```") do script[#script + 1] = block end
    assert.equal(6, #script)
    local bin = sh.tmpdir()
    assert(os.execute("ln -s " .. sh.quote(sh.quan) .. " " .. sh.quote(bin .. "/quan")))
    sh.write(dir .. "/walk.sh", "set -e\n" .. table.concat(script, "\n"))
    local out, err, status = sh.run("cd " .. sh.quote(dir) .. " && PATH=" .. sh.quote(bin) .. ":$PATH timeout 180 sh walk.sh")
    assert.equal(0, status, out .. err)
    -- the callback registered; twelve redemptions scheduled, two refunded
    assert.matches("callback http://127%.0%.0%.1:%d+/wechatpay/notify\n", out)
    -- from the business clock's now: set to 10:00 a moment before, and running
    assert.matches("stock %d+: 12 redemptions %(seed 1%) from 2027%-12%-01 10:00:%d%d to 2027%-12%-01 12:00:%d%d "
      .. "%(Beijing time%), 2 of them refunded\n0 made now, 12 as the business clock reaches them", out)
    -- twelve events stored, listed handled, one handler line each
    assert.matches("  COUPON%.USE  coupon %d+  stock %d+  handled [%d%- :]+\n12 events\n12\n", out)
    local events = {}
    local store = assert(sqlite.open(dir .. "/winter.lua.events"))
    for row in store:rows("SELECT * FROM events") do
      assert.same({ 1, 1 }, { row.deliveries, row.attempts }, row.id)
      assert.is_number(row.handled)
      events[row.id] = cjson.decode(row.data)
    end
    store:close()
    assert.equal(12, count(events))
    local lines = 0
    for id, coupon, transaction in read(dir .. "/used.csv"):gmatch("([^,\n]+),(%d+),(%d+)\n") do
      lines = lines + 1
      assert.same({ coupon, transaction }, { events[id].coupon_id, events[id].consume_information.transaction_id })
    end
    assert.equal(12, lines)
    -- the use-flow file's rows are the events
    assert.matches("\nuse%-flow: 12 rows, 12 events, 12 matched\n", out)
    -- health, log, stop
    assert.matches('\n{"ok":true,"events":12,"pending":0,"failing":0,"oldest_pending_seconds":null}\n12\nreceiver exit 0\n',
      out)
    -- what the page shows of the output is what the commands print (ids,
    -- times and numbers aside)
    for shown in section:gmatch("\n```text\n(.-)```") do
      for line in shown:gmatch("[^\n]+") do
        if line ~= "…" then
          local pattern = line:gsub("%x+%-%x+%-%x+%-%x+%-%x+", "\1"):gsub("%p", "%%%0"):gsub("%d+", "%%d+")
            :gsub("\1", "%%S+")
          assert.matches(pattern, out, nil, "shown but not printed: " .. line)
        end
      end
    end
    -- the store is recorded in the campaign's state
    local db = assert(sqlite.open(dir .. "/winter.lua.state"))
    assert.equal(dir .. "/winter.lua.events", db:first("SELECT path FROM stores WHERE name = 'notifications'").path)
    db:close()
  end)
end)
