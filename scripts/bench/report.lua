-- scripts/bench/report.lua: `quan report` over a large campaign: 1,000,000
-- sent rows in batch journals and 100,000 COUPON.USE events in the
-- receiver's store (the issue's target: under 5 s on this machine). Run as
--
--   build/quan scripts/bench/report.lua [sent=1000000] [events=100000]
--
-- The journals and the store are written directly in their formats (quan
-- send's journal: quan.batch.journal's schema, the API's answer time in
-- `answered`; quan serve's store: quan.serve.store's schema, each event's
-- decrypted coupon as the sandbox makes it), over 30 days and 20
-- merchants, for two stocks of a sandbox that the campaign's state records
-- with the journals and the store. What is timed is the whole command, as
-- a user runs it: `quan report --json CAMPAIGN.state` (and the table, and
-- --html), a process each, the stocks read from the sandbox.
local qos = require "quan.os"
local sqlite = require "quan.sqlite"
local json = require "wechatpay.json"
local time = require "quan.time"

local SENT = tonumber(arg and arg[1]) or 1000000
local EVENTS = tonumber(arg and arg[2]) or 100000
local DAYS, MERCHANTS = 30, 20

local work = assert(qos.mkdtemp("/tmp/quan-bench-report-"))
local started = qos.now()

-- a sandbox, its clock on the campaign's last day, and two stocks
local h = assert(require("quan.sandbox").start { state = work .. "/sbx" })
local config = require "wechatpay.config"
local profile = config.profile(config.read(h.config_path), h.profile, h.config_path)
local opts = {}
for k in pairs(require("wechatpay.client").NEW_KEYS) do opts[k] = profile[k] end
local wx = require("wechatpay.client").new(opts, profile)
local http = require "quan.http"
local function clock(to)
  local now = json.decode(assert(http.request { url = h.base_url .. "/sandbox/clock", cafile = h.state .. "/ca.pem" }).body)
  assert(http.request { method = "POST", url = h.base_url .. "/sandbox/clock", cafile = h.state .. "/ca.pem",
    body = json.encode { advance_seconds = to - time.parse(now.now) } })
end
local begin = time.parse("2027-11-01T00:00:00+08:00")
clock(begin - 3600)
local stocks = {}
for i, face in ipairs { 1000, 3000 } do
  local count = 2000000
  local res = assert(wx.v3.marketing.favor.couponStocks:post { json = {
    stock_name = "bench" .. i, belong_merchant = wx.mchid, stock_type = "NORMAL", no_cash = false,
    available_begin_time = time.beijing(begin), available_end_time = time.beijing(begin + 60 * 86400 - 60),
    stock_use_rule = { max_coupons = count, max_amount = count * face, max_coupons_per_user = 1,
      natural_person_limit = false, prevent_api_abuse = false },
    coupon_use_rule = { fixed_normal_coupon = { coupon_amount = face, transaction_minimum = face * 10 },
      coupon_available_time = {} },
    out_request_no = "bench-report-" .. i,
  } })
  local id = res.json.stock_id
  assert(wx.v3.marketing.favor.stocks._stock_id_.start:post { stock_id = id, json = { stock_creator_mchid = wx.mchid } })
  stocks[i] = { id = id, face = face }
end
clock(begin + DAYS * 86400 - 3600)

-- the journals: half of the rows each, the API's answers spread over the days
local function journal(path, stock, from, n)
  local j = assert(require("quan.batch.journal").open(path, { meta = { stock_id = stock.id } }))
  local batch = j.batch_id
  assert(j:transaction(function()
    local insert = j.db:prepare([[INSERT INTO items (key, row, out_request_no, state, attempts, result, run, updated,
      answered) VALUES (?, ?, ?, 'sent', 1, ?, 1, ?, ?)]])
    for i = from, from + n - 1 do
      local at = begin + (i * 7919) % (DAYS * 86400)
      insert:run("o" .. i, i, batch .. i, tostring(98000000000 + i), at, at)
    end
    insert:finalize()
    return true
  end))
  j:close()
  return batch
end

-- the store: the events of stock 1's coupons, as quan serve keeps them
local function store(path, stock)
  local s = assert(require("quan.serve.store").open(path, { mchid = wx.mchid }))
  assert(s.db:transaction(function()
    local insert = s.db:prepare([[INSERT INTO events (id, event_type, create_time, summary, resource_type, data, body,
      headers, received, deliveries, last_delivery, attempts, handled) VALUES (?, 'COUPON.USE', ?, '代金券核销通知',
      'encrypt-resource', ?, '{}', '{}', ?, 1, ?, 1, ?)]])
    for i = 1, EVENTS do
      local at = time.beijing(begin + (i * 104729) % (DAYS * 86400))
      local coupon = {
        stock_creator_mchid = wx.mchid, stock_id = stock.id, coupon_id = tostring(98000000000 + i * 5),
        coupon_name = "bench", status = "USED", coupon_type = "NORMAL", no_cash = false, singleitem = false,
        normal_coupon_information = { coupon_amount = stock.face, transaction_minimum = stock.face * 10 },
        consume_information = { consume_time = at, consume_mchid = tostring(1900000000 + i % MERCHANTS),
          transaction_id = ("4200%024d"):format(i) },
      }
      insert:run(("%08x-0000-4000-8000-%012x"):format(i, i), at, json.encode(coupon), qos.time(), qos.time(), qos.time())
    end
    insert:finalize()
    return true
  end))
  s:close()
end

local half = SENT // 2
local state_path = work .. "/bench.lua.state"
do
  local statemod = require "quan.campaign.state"
  local st = assert(statemod.open(state_path, { campaign = "bench", mchid = wx.mchid, api = statemod.api_of(wx.base_url) }))
  for i, s in ipairs(stocks) do
    st:put { key = "tier" .. i, out_request_no = "bench-report-" .. i, stock_id = s.id, origin = "found" }
    local path = work .. "/tier" .. i .. ".journal"
    st:record_journal("send" .. i, "tier" .. i, path, journal(path, s, (i - 1) * half + 1, i == 1 and half or SENT - half))
  end
  store(work .. "/bench.lua.events", stocks[1])
  st:record_store("notifications", work .. "/bench.lua.events")
  st:close()
end
local prepared = qos.now() - started

-- run(args) -> seconds, output: one `quan report` process, timed
local function run(args)
  local out = work .. "/out"
  local t0 = qos.now()
  local pid = assert(qos.spawn({ qos.exe(), "--config", h.config_path, "report", table.unpack(args) },
    { stdout = out, stderr = work .. "/err" }))
  local how, code = qos.wait(pid)
  local seconds = qos.now() - t0
  local f = io.open(work .. "/err")
  local err = f and f:read("a") or ""
  if f then f:close() end
  assert(how == "exit" and code == 0, "quan report failed: " .. err)
  f = assert(io.open(out))
  local text = f:read("a")
  f:close()
  return seconds, text
end

local seconds_json, text = run { "--json", state_path }
local doc = json.decode(text)
local sent, used = doc.totals.sent.journals, doc.totals.used.value
assert(sent == SENT, "the report counts " .. tostring(sent) .. " sent rows, not " .. SENT)
assert(used == EVENTS, "the report counts " .. tostring(used) .. " uses, not " .. EVENTS)
local seconds_text = run { state_path }
local seconds_html = run { "--html", work .. "/page.html", state_path }

print(("report.seconds_json: %.2f s (target < 5 s: %s sent rows in 2 journals, %s events, 2 stocks read from a sandbox)")
  :format(seconds_json, require("quan.format").count(SENT), require("quan.format").count(EVENTS)))
print(("report.seconds_text: %.2f s"):format(seconds_text))
print(("report.seconds_html: %.2f s (a page of %d bytes)"):format(seconds_html, qos.stat(work .. "/page.html").size))
print(("report.checked: %d sent rows over %d days, %d uses by %d merchants; prepared in %.1f s"):format(sent,
  #doc.totals.days, used, doc.totals.merchant_count, prepared))
h:stop()
if os.getenv("QUAN_BENCH_KEEP") then print("report.work: " .. work) else os.execute("rm -rf '" .. work .. "'") end
