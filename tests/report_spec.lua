-- quan report: a known scenario built on the sandbox (two stocks, sends in
-- three journals, redemptions with refunds over business time, notifications
-- stored by quan serve, one stock ended with its flow files, some uses the
-- receiver never heard of), and every figure of --json checked against the
-- sandbox's own state: its stocks, its coupons (their create_time) and
-- GET /sandbox/redemptions. Then the page, opened by headless chromium.
local sh = require "tests.support.sh"
local receiver = require "tests.support.receiver"
local qos = require "quan.os"
local cjson = require "cjson"
local time = require "quan.time"

local function day_of(t) return os.date("!%Y-%m-%d", math.floor(t) + time.BEIJING) end

-- the weekdays quan prints after a date (a page's "Mon" is any day in a pattern)
local WEEKDAYS = { Mon = true, Tue = true, Wed = true, Thu = true, Fri = true, Sat = true, Sun = true }

local CAMPAIGN = [[
local favor = require "wechatpay.favor"
local yuan, at = favor.yuan, favor.at
local c = require("quan.campaign").new "report-spec"
c:stock("short", favor.stock {
  stock_name = "满100减10", stock_type = "NORMAL", no_cash = false,
  available_begin_time = at "2027-12-01 00:00", available_end_time = at "2027-12-03 23:59",
  stock_use_rule = { max_coupons = 100, max_coupons_per_user = 1, natural_person_limit = false, prevent_api_abuse = false },
  coupon_use_rule = { fixed_normal_coupon = { coupon_amount = yuan "10", transaction_minimum = yuan "100" },
                      coupon_available_time = {} },
})
c:stock("long", favor.stock {
  stock_name = "满300减30", stock_type = "NORMAL", no_cash = false,
  available_begin_time = at "2027-12-01 00:00", available_end_time = at "2027-12-31 23:59",
  stock_use_rule = { max_coupons = 40, max_coupons_per_user = 1, natural_person_limit = false, prevent_api_abuse = false },
  coupon_use_rule = { fixed_normal_coupon = { coupon_amount = yuan "30", transaction_minimum = yuan "300" },
                      coupon_available_time = {} },
})
c.notifications = { handler = function(event) return true end }
return c
]]

describe("quan report", function()
  local h, dir, wx, r, ids = nil, nil, nil, nil, {}
  local journals = {}      -- name -> path
  local sends = {}         -- coupon_id -> {openid, stock_id}
  local unheard = {}       -- coupon ids redeemed while the callback was off

  local function control(path, body)
    local res = assert(require("quan.http").request { method = body and "POST" or "GET", url = h.base_url .. path,
      cafile = h.state .. "/ca.pem", body = body and cjson.encode(body) or nil })
    assert(res.status == 200, path .. ": " .. tostring(res.status) .. " " .. tostring(res.body))
    return cjson.decode(res.body)
  end

  local function quan(args)
    return sh.run("cd " .. sh.quote(dir) .. " && QUAN_CONFIG=" .. sh.quote(h.config_path) .. " " .. sh.quote(sh.quan)
      .. " " .. args)
  end

  -- clock(when): the sandbox's business clock moved to a Beijing time
  local function clock(when)
    local out, err, code = quan("sandbox clock --state sbx " .. sh.quote(when))
    assert(code == 0, out .. err)
  end

  local function report(args)
    local out, err, code = quan("report --json " .. (args or "") .. " report.lua")
    assert(code == 0, "report exit " .. tostring(code) .. ": " .. err)
    return require("wechatpay.json").decode(out), err
  end

  -- send(key, name, from, n): n users get stock key's coupon; its journal
  local function send(key, name, from, n)
    local csv = dir .. "/" .. name .. ".csv"
    local lines = { "openid" }
    for i = from, from + n - 1 do lines[#lines + 1] = ("o%s%03d"):format(key, i) end
    sh.write(csv, table.concat(lines, "\n") .. "\n")
    local path = dir .. "/" .. name .. ".journal"
    local devnull = assert(io.open("/dev/null", "w"))
    local s = assert(require("quan.batch.coupons").send { wx = wx, stock_id = ids[key], input = csv, journal = path,
      log_format = "json", out = devnull })
    devnull:close()
    assert(s.sent == n, name .. ": sent " .. tostring(s.sent))
    journals[name] = path
    local db = assert(require("quan.sqlite").open(path))
    for row in db:rows("SELECT key, result, answered FROM items WHERE state = 'sent'") do
      sends[row.result] = { openid = row.key, stock_id = ids[key], answered = row.answered }
    end
    db:close()
    return path
  end

  local function store_count()
    local db = require("quan.sqlite").open(dir .. "/report.lua.events", { readonly = true })
    if not db then return 0 end
    local n = db:first("SELECT count(*) AS n FROM events").n
    db:close()
    return n
  end

  setup(function()
    dir = sh.tmpdir()
    h = assert(require("quan.sandbox").start { state = dir .. "/sbx" })
    local config = require "wechatpay.config"
    local p = config.profile(config.read(h.config_path), h.profile, h.config_path)
    local opts = {}
    for k in pairs(require("wechatpay.client").NEW_KEYS) do opts[k] = p[k] end
    wx = require("wechatpay.client").new(opts, p)
    sh.write(dir .. "/report.lua", CAMPAIGN)
    clock("2027-11-30 10:00")
    local out, err, code = quan("apply --yes report.lua")
    assert(code == 0, out .. err)
    local st = assert(require("quan.sqlite").open(dir .. "/report.lua.state"))
    for row in st:rows("SELECT key, stock_id FROM stocks") do ids[row.key] = row.stock_id end
    st:close()
    -- the receiver, on the campaign (its store recorded in the state), and the callback
    r = receiver.start(h, { campaign = "report.lua", dir = dir, cwd = dir })
    local url = r.url .. "/wechatpay/notify"
    assert(wx.v3.marketing.favor.callbacks:post { json = { mchid = wx.mchid, notify_url = url } })
    -- day 1: sends, and redemptions over three hours (two refunded)
    clock("2027-12-01 09:00")
    send("short", "short-1", 1, 30)
    send("long", "long-1", 1, 12)
    do -- the first send of stock short is the campaign's: recorded in its state
      local state = require "quan.campaign.state"
      local st = assert(state.open(dir .. "/report.lua.state", { campaign = "report-spec", mchid = wx.mchid,
        api = state.api_of(wx.base_url) }))
      local batch = require("quan.batch.journal").open_read(journals["short-1"])
      st:record_journal("first", "short", "short-1.journal", batch.batch_id)
      batch:close()
      st:close()
    end
    control("/sandbox/redemptions", { stock_id = ids.short, count = 10, over_seconds = 3 * 3600, refunds = 2, seed = 5 })
    control("/sandbox/redemptions", { stock_id = ids.long, count = 5, over_seconds = 2 * 3600, seed = 6 })
    clock("2027-12-01 13:00")
    receiver.wait_until(function() return store_count() == 15 end, 30, "15 events stored")
    -- day 2: the callback switched off; more sends, and uses nobody is told of
    assert(wx.v3.marketing.favor.callbacks:post { json = { mchid = wx.mchid, notify_url = url, switch = false } })
    clock("2027-12-02 09:00")
    send("short", "short-2", 100, 20)
    local plan = control("/sandbox/redemptions", { stock_id = ids.short, count = 6, over_seconds = 2 * 3600,
      refunds = 1, seed = 7 })
    for _, x in ipairs(plan.data) do unheard[x.coupon_id] = true end
    clock("2027-12-02 12:00")
  end)

  teardown(function()
    if r then r:term() end
    if h then h:stop() end
  end)

  -- truth(stock_id) -> what the sandbox holds of a stock: the API's stock,
  -- its redemptions made, and its coupons' days of sending
  local function truth(stock_id, now, refunds_known, store_only)
    local stock = assert(wx.v3.marketing.favor.stocks._stock_id_:get { stock_id = stock_id,
      query = { stock_creator_mchid = wx.mchid } }).json
    local all = control("/sandbox/redemptions?stock_id=" .. stock_id).data
    local done, days, merchants = {}, {}, {}
    local function day(d)
      days[d] = days[d] or { sent = 0, used = 0, refunded = 0 }
      return days[d]
    end
    local t = { stock = stock, used = 0, used_amount = 0, refunded = 0, refunded_amount = 0, refunded_orders = 0,
      orders = 0, sent_recent = 0 }
    for _, x in ipairs(all) do
      if x.state == "done" and not (store_only and unheard[x.coupon_id]) then
        done[#done + 1] = x
        t.used, t.used_amount, t.orders = t.used + 1, t.used_amount + x.coupon_amount, t.orders + x.order_amount
        local d = day(day_of(time.parse(x.consume_time)))
        d.used = d.used + 1
        merchants[x.consume_mchid] = (merchants[x.consume_mchid] or 0) + 1
        if refunds_known and x.refund_id and time.parse(x.refund_time) <= now then
          t.refunded = t.refunded + 1
          t.refunded_amount, t.refunded_orders = t.refunded_amount + x.coupon_amount, t.refunded_orders + x.order_amount
          local rd = day(day_of(time.parse(x.refund_time)))
          rd.refunded = rd.refunded + 1
        end
      end
    end
    for coupon_id, s in pairs(sends) do
      if s.stock_id == stock_id then
        local c = assert(wx.v3.marketing.favor.users._openid_.coupons._coupon_id_:get { openid = s.openid,
          coupon_id = coupon_id, query = { appid = wx.profile.appid } }).json
        local at = time.parse(c.create_time)
        assert.equal(at, s.answered) -- the journal holds the API's time of the send: the coupon's create_time
        local d = day(day_of(at))
        d.sent = d.sent + 1
        if at > now - 86400 and at <= now then t.sent_recent = t.sent_recent + 1 end
      end
    end
    t.done, t.days, t.merchants = done, days, merchants
    return t
  end

  local function by_key(doc)
    local m = {}
    for _, s in ipairs(doc.stocks) do m[s.key] = s end
    return m
  end

  -- check_common(s, t): the figures every report has, against the truth
  local function check_common(s, t)
    local st = t.stock
    assert.equal(st.stock_use_rule.fixed_normal_coupon.coupon_amount, s.face_value)
    assert.equal(st.stock_use_rule.fixed_normal_coupon.transaction_minimum, s.threshold)
    assert.equal(st.stock_use_rule.max_amount, s.budget)
    assert.equal(st.stock_use_rule.max_coupons, s.max_coupons)
    assert.equal(st.status, s.status)
    assert.equal(st.distributed_coupons, s.sent.value)
    assert.equal(st.distributed_coupons, s.sent.api)
    assert.equal(st.distributed_coupons, s.sent.journals) -- every send went through a journal
    assert.equal(0, s.sent.difference)
    assert.equal(st.stock_use_rule.max_amount - st.distributed_coupons * s.face_value, s.remaining.budget)
    assert.equal(st.stock_use_rule.max_coupons - st.distributed_coupons, s.remaining.coupons)
    -- per day: sends on their coupons' create_time days, uses on consume_time's, refunds on refund_time's
    local seen = {}
    for _, d in ipairs(s.days) do
      local want = t.days[d.date] or { sent = 0, used = 0, refunded = 0 }
      assert.same({ d.date, want.sent, want.used, want.refunded }, { d.date, d.sent, d.used, d.refunded })
      seen[d.date] = true
    end
    for date in pairs(t.days) do assert.truthy(seen[date], "day " .. date .. " missing") end
    -- merchants by redemptions
    local merchants = {}
    for _, m in ipairs(s.merchants) do merchants[m.mchid] = m.used end
    assert.same(t.merchants, merchants)
  end

  it("counts a running campaign from its journals, its store and the API", function()
    -- short-1's journal is the state's too: counted once
    local doc = report("--journal long-1.journal,short-2.journal,short-1.journal")
    local now = time.parse(doc.now)
    assert.matches("^2027%-12%-02T12:00:0%d%+08:00$", doc.now)
    assert.equal("sandbox", doc.clock)
    assert.equal("report-spec", doc.campaign)
    assert.same({}, doc.problems)
    local s = by_key(doc)
    for _, key in ipairs { "short", "long" } do
      local x, t = s[key], truth(ids[key], now, false, true)
      check_common(x, t)
      -- before the flow files: used from the store (the uses nobody was told of are not there)
      assert.equal("store", x.used.source)
      assert.equal(#t.done, x.used.value) -- those the receiver was told of
      assert.is_nil(x.refunded.value)
      assert.is_nil(x.used.flow)
      -- the pace: coupons sent in the 24 hours before now, and the run-out it gives
      assert.equal(t.sent_recent, x.pace.per_day)
      local remaining = x.remaining.coupons
      local ends = time.parse(x.available_end_time)
      local at = t.sent_recent > 0 and now + remaining * 86400 // t.sent_recent
      if not at then
        assert.equal("no coupon sent in the last 24 hours", x.run_out.note)
      elseif at > ends then
        assert.is_true(x.run_out.after_end)
        assert.equal(remaining - (ends - now) * t.sent_recent // 86400, x.run_out.left_at_end)
      else
        assert.equal(time.beijing(at), x.run_out.at)
      end
    end
    assert.equal(30 + 20, s.short.sent.journals)
    assert.equal(2, #s.short.sent.journal_sources) -- the state's, and --journal's, each once
  end)

  it("uses the flow files once a stock has ended, and reports what the store missed", function()
    clock("2027-12-04 10:00")
    local doc = report("--journal long-1.journal,short-2.journal --html page.html")
    local now = time.parse(doc.now)
    assert.same({}, doc.problems)
    local s, totals = by_key(doc), { sent = 0, used = 0, refunded = 0, net = 0, budget_left = 0 }
    local short, long = s.short, s.long
    local ts, tl = truth(ids.short, now, true), truth(ids.long, now, false)
    check_common(short, ts)
    check_common(long, tl)
    -- short has ended: the use-flow file wins, and differs from the store by the unheard uses
    assert.equal("stoped", short.status)
    assert.equal("use-flow:" .. ids.short, short.used.source)
    assert.equal(#ts.done, short.used.value)
    assert.equal(#ts.done, short.used.flow)
    local n_unheard = 0
    for _ in pairs(unheard) do n_unheard = n_unheard + 1 end
    assert.equal(6, n_unheard)
    assert.equal(#ts.done - n_unheard, short.used.store)
    assert.equal(-n_unheard, short.used.difference)
    local listed = {}
    for _, c in ipairs(short.used.differences.only_in_flow.coupons) do listed[c] = true end
    assert.same(unheard, listed)
    assert.equal(0, short.used.differences.only_in_store.count)
    assert.equal(0, short.used.differences.mismatched.count)
    -- refunds from the refund-flow file
    assert.equal("refund-flow:" .. ids.short, short.refunded.source)
    assert.equal(3, ts.refunded)
    assert.equal(ts.refunded, short.refunded.value)
    assert.equal(ts.refunded_amount, short.refunded.amount)
    assert.equal(ts.refunded_orders, short.refunded.orders)
    assert.equal(ts.orders, short.orders.value)
    assert.equal(ts.used_amount, short.spend.used)
    assert.equal(ts.used_amount - ts.refunded_amount, short.spend.net)
    assert.near(ts.used / short.sent.value, short.redemption_rate, 1e-12)
    assert.is_nil(short.run_out)
    -- long still runs: the store's events, no refund known
    assert.equal("store", long.used.source)
    assert.equal(#tl.done, long.used.value)
    assert.equal(tl.used_amount, long.spend.net)
    assert.is_nil(long.refunded.value)
    assert.equal(0, long.pace.per_day)
    assert.equal("no coupon sent in the last 24 hours", long.run_out.note)
    -- the campaign's totals are the stocks' sums
    for _, x in ipairs { short, long } do
      totals.sent, totals.used = totals.sent + x.sent.value, totals.used + x.used.value
      totals.refunded = totals.refunded + (x.refunded.value or 0)
      totals.net, totals.budget_left = totals.net + x.spend.net, totals.budget_left + x.remaining.budget
    end
    local t = doc.totals
    assert.same(totals, { sent = t.sent.value, used = t.used.value, refunded = t.refunded.value, net = t.spend.net,
      budget_left = t.remaining.budget })
    assert.near(totals.used / totals.sent, t.redemption_rate, 1e-12)
    local days = {}
    for _, d in ipairs(t.days) do days[d.date] = { d.sent, d.used, d.refunded } end
    for _, x in ipairs { ts, tl } do
      for date, d in pairs(x.days) do
        local got = days[date]
        assert.truthy(got, date)
        got[1], got[2], got[3] = got[1] - d.sent, got[2] - d.used, got[3] - d.refunded
      end
    end
    for date, rest in pairs(days) do assert.same({ 0, 0, 0 }, rest, date) end
    -- every figure names sources that the report lists, with when each was read
    local listed_sources = {}
    for _, src in ipairs(doc.sources) do
      assert.is_string(src.read_at)
      listed_sources[src.id] = src.kind
    end
    for _, x in ipairs(doc.stocks) do
      for _, f in ipairs { x.sent, x.used, x.remaining } do
        for _, id in ipairs(type(f.source) == "table" and f.source or { f.source }) do
          assert.truthy(listed_sources[id], "source " .. tostring(id))
        end
      end
    end
    assert.equal("store", listed_sources.store)
    assert.equal("use-flow", listed_sources["use-flow:" .. ids.short])
  end)

  it("writes a page that a browser engine renders offline, with the charts holding the figures", function()
    local page_path = dir .. "/page.html"
    local page = sh.read(page_path)   -- written by the flow-file case above, from the same sources
    local doc = report("--journal long-1.journal,short-2.journal")
    -- nothing outside the page: no src, href or import but the page's own fragments, no address at all
    for attr, value in page:gmatch('(%a+)%s*=%s*"([^"]*)"') do
      if attr == "src" or attr == "href" then assert.matches("^#", value, nil, attr .. "=" .. value) end
    end
    assert.is_nil(page:find("://", 1, true))
    assert.is_nil(page:find("@import", 1, true))
    assert.is_nil(page:find("url(", 1, true))
    assert.is_nil(page:find("<script", 1, true))
    assert.is_nil(page:find("<link", 1, true))
    assert.is_nil(page:find("<img", 1, true))
    -- Debian's chromium, headless, its networking pointed at a dead proxy
    local profile = sh.tmpdir()
    local out, err, code = sh.run("timeout 120 chromium --headless --no-sandbox --disable-gpu "
      .. "--disable-background-networking --disable-component-update --disable-sync --no-first-run "
      .. "--user-data-dir=" .. sh.quote(profile) .. " --proxy-server=127.0.0.1:9 --dump-dom "
      .. sh.quote("file://" .. page_path))
    assert.equal(0, code, err)
    local dom = out
    assert.matches("<svg", dom)
    for attr, value in dom:gmatch('(%a+)="([^"]*)"') do
      if attr == "src" or attr == "href" then assert.matches("^#", value, nil, attr .. "=" .. value) end
    end
    -- the cards: the campaign's totals
    local t = doc.totals
    for figure, value in pairs { sent = t.sent.value, used = t.used.value, refunded = t.refunded.value,
        spend = t.spend.net, budget_left = t.remaining.budget } do
      assert.matches('data%-figure="' .. figure .. '" data%-value="' .. value .. '"', dom, nil, figure)
    end
    assert.matches('<div class="v">' .. t.sent.value .. '</div><div class="k">sent</div>', dom, 1, true)
    for _, s in ipairs(doc.stocks) do
      -- daily sends, uses and refunds per stock: every day's bars with the day's numbers, and the numbers as text
      local chart = dom:match('<figure data%-chart="daily" data%-stock="' .. s.stock_id .. '">(.-)</figure>')
      assert.truthy(chart, "daily chart of " .. s.stock_id)
      assert.truthy(#s.days > 0)
      for _, d in ipairs(s.days) do
        for _, series in ipairs { "sent", "used", "refunded" } do
          assert.matches('data-date="' .. d.date .. '" data-series="' .. series .. '" data-value="' .. d[series] .. '"',
            chart, 1, true, s.key .. " " .. d.date .. " " .. series)
          if d[series] > 0 then
            assert.matches('class="value" text%-anchor="middle">' .. d[series] .. "</text>", chart)
          end
        end
      end
      assert.matches("Sources: ", chart)
      assert.matches("read 20%d%d%-%d%d%-%d%d", chart)
      -- the funnel: sent, used, kept
      local funnel = assert(dom:match('<figure data%-chart="funnel">(.-)</figure>'))
      assert.matches('data%-stock="' .. s.stock_id .. '" data%-series="sent" data%-value="' .. s.sent.value .. '"', funnel)
      assert.matches('data%-stock="' .. s.stock_id .. '" data%-series="used" data%-value="' .. s.used.value .. '"', funnel)
      assert.matches(">sent " .. s.sent.value .. "</text>", funnel, 1, true)
      -- the burn-down: the budget left after each day
      local burn = assert(dom:match('<figure data%-chart="burndown">(.-)</figure>'))
      for _, d in ipairs(s.days) do
        assert.matches('data-stock="' .. s.stock_id .. '" data-date="' .. d.date
          .. '" data-series="budget_left" data-value="' .. d.budget_left .. '"', burn, 1, true)
      end
      -- the table row names the stock, with Chinese text intact
      assert.matches('<tr data%-stock="' .. s.stock_id .. '">', dom)
      assert.matches(s.stock_name, dom, 1, true)
    end
    -- what the store missed is on the page
    assert.matches('data%-difference="only_in_flow"', dom)
  end)

  it("prints the same figures as a table, in ¥ and Beijing dates, aligned with Chinese names", function()
    local out, err, code = quan("report --journal long-1.journal,short-2.journal report.lua")
    assert.equal(0, code, err)
    local doc = report("--journal long-1.journal,short-2.journal")
    local s = by_key(doc)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    local header
    for i, line in ipairs(lines) do if line:find("^stock  ") then header = i end end
    assert.truthy(header, out)
    local width = require("quan.text").width
    local format = require "quan.format"
    -- the sent column ends at the same display column on every row
    local function column_end(line, text)
      local at = assert(line:find(text, 1, true), text)
      return width(line:sub(1, at + #text - 1))
    end
    local short_line = lines[header + 1]:find("^short") and lines[header + 1] or lines[header + 2]
    local long_line = lines[header + 1]:find("^long") and lines[header + 1] or lines[header + 2]
    local sent = column_end(lines[header], "sent")
    assert.equal(sent, column_end(short_line, " " .. s.short.sent.value .. " ") - 1, out)
    assert.equal(sent, column_end(long_line, " " .. s.long.sent.value .. " ") - 1, out)
    assert.matches("满100减10", short_line)
    assert.matches(format.yuan(s.short.budget), short_line, 1, true)
    assert.matches(format.yuan(s.long.remaining.budget), long_line, 1, true)
    assert.matches("2027%-12%-01 Wed", out)
  end)
end)

describe("quan report, refusing", function()
  local function quan(args, cwd)
    return sh.run((cwd and ("cd " .. sh.quote(cwd) .. " && ") or "") .. sh.quote(sh.quan) .. " " .. args)
  end

  it("takes a campaign file, its state or stock ids, and says what else it got", function()
    local out, err, code = quan("report")
    assert.equal(2, code)
    assert.matches("give a campaign file, its state, or stock ids", err)
    out, err, code = quan("report 1600x001")
    assert.equal(2, code, out)
    assert.matches("1600x001 is neither a campaign file, a campaign's state nor a stock id", err)
    out, err, code = quan("report --state x.state 16000001")
    assert.equal(2, code)
    assert.matches("%-%-state goes with a campaign file", err)
    out, err, code = quan("report --html")
    assert.equal(2, code)
    -- a page that cannot be written is said before any source is read (it was exit 1, after them)
    out, err, code = quan("report --offline --html / 16000001")
    assert.equal(2, code, out .. err)
    assert.equal("quan report: --html /: is a directory\n", err)
    out, err, code = quan("report --offline --html /nonexistent/page.html 16000001")
    assert.equal(2, code, out .. err)
    assert.equal("quan report: --html /nonexistent/page.html: no folder /nonexistent to write it in\n", err)
  end)

  it("says there is nothing to report when no source was read (exit 1)", function()
    -- stock ids, --offline, no journal: a table of dashes and exit 0, before
    local out, err, code = quan("report --offline 16000001")
    assert.equal(1, code, out .. err)
    assert.matches("quan report: nothing to report: no source was read %(%-%-offline reads the journals and the store "
      .. "only: give %-%-journal%)\n$", err)
    out, err, code = quan("report --offline --json 16000001")
    assert.equal(1, code, out .. err)
    assert.matches('"sources":%[%]', out)
  end)

  it("says a campaign that was never applied has no state (exit 1)", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/c.lua", 'return { name = "never", stocks = {} }\n')
    local _, err, code = quan("report --offline c.lua", dir)
    assert.equal(1, code)
    assert.matches("no state c%.lua%.state: the campaign has not been applied", err)
    -- said before a client is made: no private sandbox started without a profile
    _, err, code = sh.run("cd " .. sh.quote(dir) .. " && env -u QUAN_CONFIG -u QUAN_PROFILE HOME=" .. sh.quote(dir) .. " "
      .. sh.quote(sh.quan) .. " report c.lua")
    assert.equal(1, code)
    assert.equal("quan report: no state c.lua.state: the campaign has not been applied (quan apply), or give --state\n", err)
    sh.write(dir .. "/c.lua.state", "") -- empty: no state either
    _, err, code = sh.run("cd " .. sh.quote(dir) .. " && env -u QUAN_CONFIG -u QUAN_PROFILE HOME=" .. sh.quote(dir) .. " "
      .. sh.quote(sh.quan) .. " report c.lua")
    assert.equal(1, code)
    assert.equal("quan report: no state c.lua.state: the campaign has not been applied (quan apply), or give --state\n", err)
  end)

  it("finds the journal of a send the campaign declares beside its state, recorded or not", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/c.lua", [=[return { name = "declared", sends = { night = { stock = "a", users = "u.csv" } },
      stocks = { a = { json = { stock_name = "x" } } } }]=])
    local state = require "quan.campaign.state"
    local st = assert(state.open(dir .. "/c.lua.state", { campaign = "declared", mchid = "1900000001",
      api = "https://127.0.0.1" }))
    st:put { key = "a", out_request_no = "n", stock_id = "77", origin = "declared" }
    st:close()
    local path = require("quan.send").journal_beside(dir .. "/c.lua.state", "night")
    local j = assert(require("quan.batch.journal").open(path, { meta = { stock_id = "77" } }))
    assert(j:transaction(function()
      j:claim("u1", 1, "n1")
      j:record("u1", "sent", 1, "c1", nil, nil, time.parse("2027-12-01T10:00:00+08:00"))
      return true
    end))
    j:close()
    local out, err, code = quan("report --offline --json c.lua", dir)
    assert.equal(0, code, err)
    local doc = require("wechatpay.json").decode(out)
    assert.equal(1, doc.stocks[1].sent.journals)
    assert.equal("night", doc.sources[2].send)
  end)

  it("reports what it could read and names what it could not (exit 1), offline", function()
    local dir = sh.tmpdir()
    -- a journal of stock 7 and one of stock 8, made as quan send makes them
    local journal = require "quan.batch.journal"
    for _, stock in ipairs { "7", "8" } do
      local j = assert(journal.open(dir .. "/s" .. stock .. ".journal", { meta = { stock_id = stock } }))
      assert(j:transaction(function()
        for i = 1, 3 do
          j:claim("u" .. i, i, "n" .. stock .. i)
          j:record("u" .. i, "sent", 1, "c" .. stock .. i, nil, nil, time.parse("2027-12-01T10:00:00+08:00") + i)
        end
        return true
      end))
      j:close()
    end
    sh.write(dir .. "/not-a-store", "hello")
    local out, err, code = quan("report --offline --json --now '2027-12-01 12:00' --journal s7.journal,s8.journal,missing.journal "
      .. "--store not-a-store 7", dir)
    assert.equal(1, code, err)
    local doc = require("wechatpay.json").decode(out)
    assert.equal(1, #doc.stocks)
    assert.equal(3, doc.stocks[1].sent.value)
    assert.equal("2027-12-01", doc.stocks[1].days[1].date)
    assert.equal(3, doc.stocks[1].days[1].sent)
    assert.equal(3, doc.stocks[1].pace.per_day)
    assert.equal(2, #doc.problems)
    assert.matches("journal missing%.journal: no such file", doc.problems[1])
    assert.matches("store not%-a%-store", doc.problems[2])
    assert.matches("journal s8%.journal is of stock 8, not one of this report's", doc.notes[1])
    assert.matches("journal missing%.journal: no such file", err)
  end)
end)

describe("docs/report.md", function()
  it("runs the walk-through on the sandbox as written, and prints what the page shows", function()
    local section = sh.read("docs/report.md"):match("\n## A walk%-through on the sandbox\n(.-)\n## ")
    assert.truthy(section, "walk-through not found")
    local dir = sh.tmpdir()
    local files = {}
    -- the files it shows (`name`: and a block), then its commands in order, in one shell
    for name, code in section:gmatch("\n`([%w%-_]+%.%a+)`:\n\n```%a+\n(.-)```") do
      sh.write(dir .. "/" .. name, code)
      files[#files + 1] = name
    end
    assert.same({ "winter.lua", "send.sh" }, files)
    local script = {}
    local commands = section:gsub("\n`[%w%-_]+%.%a+`:\n\n```%a+\n.-```", "")
    for block in commands:gmatch("\n```sh\n(.-)```") do script[#script + 1] = block end
    assert.equal(4, #script)
    local bin = sh.tmpdir()
    assert(os.execute("ln -s " .. sh.quote(sh.quan) .. " " .. sh.quote(bin .. "/quan")))
    sh.write(dir .. "/walk.sh", "set -e\n" .. table.concat(script, "\n"))
    local out, err, status = sh.run("cd " .. sh.quote(dir) .. " && PATH=" .. sh.quote(bin) .. ":$PATH timeout 300 sh walk.sh")
    assert.equal(0, status, out .. err)
    -- what the page shows of the output is what the commands print (ids, times and numbers aside)
    for shown in section:gmatch("\n```text\n(.-)```") do
      for line in shown:gmatch("[^\n]+") do
        if line ~= "…" then
          -- a time is hh:mm, and :ss when its seconds are not 0, as the page's or not;
          -- its weekday is the day the spec runs (the files are read now)
          local pattern = line:gsub("%d+%-%d+T%d+Z%-%w+", "\1")
            :gsub("%f[%a]%u%l%l%f[%A]", function(day) return WEEKDAYS[day] and "\2" end)
            :gsub("%p", "%%%0"):gsub("%d+", "%%d+")
            :gsub("%%d%+%%:%%d%+%%:%%d%+", "%%d+:%%d+[:%%d]*"):gsub("%%d%+%%:%%d%+", "%%d+:%%d+[:%%d]*")
            :gsub("\1", "%%S+"):gsub("\2", "%%u%%l%%l")
          assert.matches(pattern, out .. err, nil, "shown but not printed: " .. line)
        end
      end
    end
    -- the JSON's figures are the table's: every coupon sent is the API's, every use stored once
    local doc = require("wechatpay.json").decode(sh.read(dir .. "/winter.json"))
    assert.same({}, doc.problems)
    assert.equal(205, doc.totals.sent.value)
    assert.equal(205, doc.totals.sent.journals)
    assert.equal(105, doc.totals.used.value)
    assert.equal(4, doc.totals.refunded.value)
    assert.equal(4, doc.totals.merchant_count)
    assert.matches("<svg", sh.read(dir .. "/winter.html"))
  end)
end)

describe("quan.report's modules", function()
  it("add no globals", function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    for _, name in ipairs { "quan.report", "quan.report.sources", "quan.report.figures", "quan.report.text",
        "quan.report.html" } do
      require(name)
    end
    for k in pairs(_G) do assert.truthy(before[k], "global " .. tostring(k)) end
  end)

  it("escape what they put in a page", function()
    local html = require "quan.report.html"
    assert.equal("&lt;b&gt; &amp; &quot;x&quot; &#39;y&#39;", html.escape([[<b> & "x" 'y']]))
  end)
end)
