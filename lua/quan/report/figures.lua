-- quan.report.figures: the figures of a report, per stock and for the
-- campaign, from what quan.report.sources read (docs/report.md, "The
-- figures"). Pure arithmetic: nothing is read here, so the same sources
-- give the same figures. Amounts are integer 分; days "YYYY-MM-DD" of the
-- Beijing calendar; times epoch seconds.
--
--   figures.stock(input, now)   -> the figures of one stock
--   figures.totals(stocks, now) -> the campaign's: sums of the stocks'
--
-- input: {key, stock_id, request (the create body recorded in the state,
-- or nil), api = {json, read_at, ...} | nil, journals = {summary...},
-- store = {coupons, count, repeats, ...} | nil, store_source, use_flow,
-- refund_flow (summaries | nil), flow_note}
local M = {}

local tointeger, type, pairs, ipairs, sort = math.tointeger, type, pairs, ipairs, table.sort
local time = require "quan.time"
local day_of = require("quan.report.sources").day_of

M.DIFFERENCES_LISTED = 10 -- coupon ids listed of each kind of difference
M.MERCHANTS_LISTED = 10   -- merchants listed, by redemptions
M.PACE_WINDOW = 86400     -- the pace is the sends of this many seconds before now

local function int(v) return type(v) == "number" and tointeger(v) or nil end

-- terms(input) -> the stock's terms: the API's stock object where read,
-- else the create body the state recorded
local function terms(input)
  local j = input.api and input.api.json or {}
  local req = input.request or {}
  local rule = j.stock_use_rule or req.stock_use_rule or {}
  local fixed = (j.stock_use_rule and j.stock_use_rule.fixed_normal_coupon)
    or (req.coupon_use_rule and req.coupon_use_rule.fixed_normal_coupon) or {}
  local begin_time = j.available_begin_time or req.available_begin_time
  local end_time = j.available_end_time or req.available_end_time
  return {
    name = j.stock_name or req.stock_name,
    status = j.status,
    face_value = int(fixed.coupon_amount),
    threshold = int(fixed.transaction_minimum),
    budget = int(rule.max_amount),
    max_coupons = int(rule.max_coupons),
    daily_budget = int(rule.max_amount_by_day) ~= 0 and int(rule.max_amount_by_day) or nil,
    begin_time = begin_time and time.parse(begin_time),
    end_time = end_time and time.parse(end_time),
    start_time = j.start_time and time.parse(j.start_time),
    stop_time = j.stop_time and time.parse(j.stop_time),
    distributed = int(j.distributed_coupons),
    from = input.api and "api" or (input.request and "state") or nil,
  }
end
M.terms = terms

-- add(days, day, field, n): days[day][field] += n
local function add(days, day, field, n)
  local d = days[day]
  if not d then
    d = { date = day, sent = 0, used = 0, refunded = 0 }
    days[day] = d
  end
  d[field] = d[field] + n
end

-- series(days) -> the days in order, every day from the first to the last
-- (a day with nothing is a day of zeros: charts read gaps as such)
function M.series(days)
  local first, last
  for day in pairs(days) do
    if not first or day < first then first = day end
    if not last or day > last then last = day end
  end
  local list = {}
  if not first then return list end
  local t = time.parse(first .. "T00:00:00+08:00")
  local stop = time.parse(last .. "T00:00:00+08:00")
  while t <= stop do
    local day = day_of(t)
    list[#list + 1] = days[day] or { date = day, sent = 0, used = 0, refunded = 0 }
    t = t + 86400
  end
  return list
end

-- listed(set) -> up to DIFFERENCES_LISTED of its keys, sorted
local function listed(set, n)
  local keys = {}
  for k in pairs(set) do keys[#keys + 1] = k end
  sort(keys)
  local out = {}
  for i = 1, math.min(#keys, n or M.DIFFERENCES_LISTED) do out[i] = keys[i] end
  return out
end

-- compare(store, flow_rows) -> {only_in_flow, only_in_store, mismatched}:
-- each {count, coupons (the first ids)}, mismatched's with the fields that
-- differ
local function compare(store, rows)
  local in_flow, only_flow, mismatched, fields = {}, {}, {}, {}
  for _, r in ipairs(rows) do
    in_flow[r.coupon_id] = true
    local e = store.coupons[r.coupon_id]
    if not e then
      only_flow[r.coupon_id] = true
    else
      local differ = {}
      if e.transaction_id and e.transaction_id ~= r.transaction_id then differ[#differ + 1] = "transaction_id" end
      if e.consume_time and e.consume_time ~= r.consume_time then differ[#differ + 1] = "consume_time" end
      if e.consume_mchid and e.consume_mchid ~= r.consume_mchid then differ[#differ + 1] = "consume_mchid" end
      if #differ > 0 then
        mismatched[r.coupon_id] = true
        for _, f in ipairs(differ) do fields[f] = true end
      end
    end
  end
  local only_store = {}
  for coupon in pairs(store.coupons) do
    if not in_flow[coupon] then only_store[coupon] = true end
  end
  local function kind(set, extra)
    local n = 0
    for _ in pairs(set) do n = n + 1 end
    local k = { count = n, coupons = listed(set) }
    for key, v in pairs(extra or {}) do k[key] = v end
    return k
  end
  return {
    only_in_flow = kind(only_flow), only_in_store = kind(only_store),
    mismatched = kind(mismatched, { fields = listed(fields) }),
  }
end

-- merchants(map) -> [{mchid, used, amount}], most redemptions first
local function merchant_list(map, n)
  local list = {}
  for mchid, m in pairs(map) do list[#list + 1] = { mchid = mchid, used = m.used, amount = m.amount } end
  sort(list, function(a, b)
    if a.used ~= b.used then return a.used > b.used end
    return a.mchid < b.mchid
  end)
  local all = #list
  for i = #list, (n or M.MERCHANTS_LISTED) + 1, -1 do list[i] = nil end
  return list, all
end

-- ended_at(t, now) -> when the stock ended (a stop, or the end of its
-- window) | nil while it runs
local function ended_at(t, now)
  if t.status == "stoped" and t.stop_time then return t.stop_time end
  if t.end_time and t.end_time < now then return t.end_time end
  return nil
end
M.ended_at = ended_at

-- stock(input, now) -> the figures of one stock (docs/report.md)
function M.stock(input, now)
  local t = terms(input)
  local f = {
    key = input.key, stock_id = input.stock_id, stock_name = t.name, status = t.status,
    terms_from = t.from, face_value = t.face_value, threshold = t.threshold, budget = t.budget,
    max_coupons = t.max_coupons, daily_budget = t.daily_budget,
    available_begin_time = t.begin_time, available_end_time = t.end_time, start_time = t.start_time,
    ended_at = t.status and ended_at(t, now) or nil, notes = {},
  }
  local days = {}
  -- sent: the journals, and the API's distributed_coupons
  local journal_sent, untimed, recent, journals = 0, 0, 0, {}
  local seen = {}
  for _, j in ipairs(input.journals or {}) do
    if not seen[j.batch_id] then -- one batch read twice (a copy) counts once
      seen[j.batch_id] = true
      journal_sent, untimed, recent = journal_sent + j.sent, untimed + j.untimed, recent + j.recent
      for day, n in pairs(j.days) do add(days, day, "sent", n) end
      journals[#journals + 1] = j.batch_id
    end
  end
  local have_journals = #journals > 0
  f.sent = {
    journals = have_journals and journal_sent or nil, api = t.distributed,
    journal_sources = journals,
  }
  f.sent.value = t.distributed or (have_journals and journal_sent) or nil
  f.sent.source = t.distributed and "api" or (have_journals and "journals") or nil
  if t.distributed and have_journals then f.sent.difference = t.distributed - journal_sent end
  f.sent.untimed = untimed
  -- used: the use-flow file wins over the store where both exist
  local store, use_flow, refund_flow = input.store, input.use_flow, input.refund_flow
  local merchants, used_amount = {}, 0
  f.used = { store = store and store.count or nil, flow = use_flow and use_flow.count or nil }
  if use_flow then
    f.used.value, f.used.source = use_flow.count, "use-flow"
    local orders = 0
    for _, r in ipairs(use_flow.rows) do
      add(days, day_of(r.consume_time), "used", 1)
      used_amount = used_amount + (r.coupon_amount or 0)
      orders = orders + (r.order_amount or 0)
      local m = merchants[r.consume_mchid or "?"] or { used = 0, amount = 0 }
      merchants[r.consume_mchid or "?"] = m
      m.used, m.amount = m.used + 1, m.amount + (r.coupon_amount or 0)
    end
    f.orders = { value = orders, source = "use-flow" }
    if store then
      f.used.differences = compare(store, use_flow.rows)
      f.used.difference = store.count - use_flow.count
    end
  elseif store then
    f.used.value, f.used.source = store.count, "store"
    local untimed_uses = 0
    for _, e in pairs(store.coupons) do
      if e.consume_time then add(days, day_of(e.consume_time), "used", 1) else untimed_uses = untimed_uses + 1 end
      local amount = e.coupon_amount or t.face_value or 0
      used_amount = used_amount + amount
      local key = e.consume_mchid or "?"
      local m = merchants[key] or { used = 0, amount = 0 }
      merchants[key] = m
      m.used, m.amount = m.used + 1, m.amount + amount
    end
    f.used.untimed = untimed_uses
  end
  if store and store.repeats > 0 then
    f.notes[#f.notes + 1] = ("the store holds %d more event(s) of a coupon already counted"):format(store.repeats)
  end
  -- refunded: the refund-flow file; none when the use-flow is there and
  -- the refund-flow is not (the API makes no file without a row)
  if refund_flow then
    local amount, orders = 0, 0
    for _, r in ipairs(refund_flow.rows) do
      add(days, day_of(r.refund_time or r.consume_time), "refunded", 1)
      amount, orders = amount + (r.coupon_amount or 0), orders + (r.order_amount or 0)
    end
    f.refunded = { value = refund_flow.count, amount = amount, orders = orders, source = "refund-flow" }
  elseif use_flow and input.refund_flow_absent then
    f.refunded = { value = 0, amount = 0, orders = 0, source = "refund-flow" }
  else
    f.refunded = { value = nil, source = nil }
  end
  -- rate and spend
  if f.sent.value and f.sent.value > 0 and f.used.value then
    f.redemption_rate = f.used.value / f.sent.value
  end
  if f.used.value then
    f.spend = { used = used_amount, refunded = f.refunded.amount, source = f.used.source }
    f.spend.net = used_amount - (f.refunded.amount or 0)
  end
  f.merchants, f.merchant_count = merchant_list(merchants)
  f.merchant_map = merchants
  f.days = M.series(days)
  -- budget left, and when the sends at their current pace use it up
  if t.budget and t.face_value and t.distributed then
    f.remaining = { budget = t.budget - t.distributed * t.face_value, source = "api" }
    f.remaining.coupons = t.face_value > 0 and f.remaining.budget // t.face_value or nil
  end
  f.pace = have_journals and { per_day = recent * 86400 // M.PACE_WINDOW, window = M.PACE_WINDOW,
    source = "journals" } or nil
  f.run_out = M.run_out(f, t, now)
  -- the burn-down: the budget left after each day's sends (the journals')
  if t.budget and t.face_value then
    local left = t.budget
    for _, d in ipairs(f.days) do
      left = left - d.sent * t.face_value
      d.budget_left = left
    end
  end
  return f
end

-- run_out(f, terms, now) -> {at =, note =} | nil: when the budget runs out
-- at the pace of the last day, while the stock runs
function M.run_out(f, t, now)
  if t.status ~= "running" or f.ended_at then return nil end
  if not f.remaining then return { note = "the budget left is not known (the API was not read)" } end
  if f.remaining.budget <= 0 or (f.remaining.coupons or 0) <= 0 then return { at = now, note = "the budget is used up" } end
  if not f.pace then return { note = "no journal of this stock's sends: the pace is not known" } end
  if f.pace.per_day <= 0 then return { note = "no coupon sent in the last 24 hours" } end
  local at = now + f.remaining.coupons * 86400 // f.pace.per_day
  if t.end_time and at > t.end_time then
    local left = f.remaining.coupons - (t.end_time - now) * f.pace.per_day // 86400
    return { after_end = true, left_at_end = left > 0 and left or 0,
      note = "the budget outlasts the window at this pace" }
  end
  return { at = at }
end

-- totals(stocks, now) -> the campaign's figures: the stocks' summed (a
-- figure none of its stocks has is absent)
function M.totals(stocks)
  local t = { stocks = #stocks, days = {}, notes = {} }
  local function sum(path, field)
    local total
    for _, s in ipairs(stocks) do
      local v = s[path]
      if field then v = type(v) == "table" and v[field] or nil end
      if type(v) == "number" then total = (total or 0) + v end
    end
    return total
  end
  t.budget, t.max_coupons = sum("budget"), sum("max_coupons")
  t.sent = { value = sum("sent", "value"), journals = sum("sent", "journals"), api = sum("sent", "api") }
  t.used = { value = sum("used", "value"), store = sum("used", "store"), flow = sum("used", "flow") }
  t.refunded = { value = sum("refunded", "value"), amount = sum("refunded", "amount"),
    orders = sum("refunded", "orders") }
  t.orders = { value = sum("orders", "value") }
  t.spend = { used = sum("spend", "used"), refunded = sum("spend", "refunded"), net = sum("spend", "net") }
  t.remaining = { budget = sum("remaining", "budget"), coupons = sum("remaining", "coupons") }
  if t.sent.value and t.sent.value > 0 and t.used.value then t.redemption_rate = t.used.value / t.sent.value end
  local days, merchants = {}, {}
  for _, s in ipairs(stocks) do
    for _, d in ipairs(s.days) do
      add(days, d.date, "sent", d.sent)
      add(days, d.date, "used", d.used)
      add(days, d.date, "refunded", d.refunded)
    end
    for mchid, m in pairs(s.merchant_map) do
      local c = merchants[mchid] or { used = 0, amount = 0 }
      merchants[mchid] = c
      c.used, c.amount = c.used + m.used, c.amount + m.amount
    end
  end
  t.days = M.series(days)
  if t.budget then
    local left = t.budget
    -- the campaign's budget left after each day: each stock's sends at its face value
    local spent_by_day = {}
    for _, s in ipairs(stocks) do
      for _, d in ipairs(s.days) do
        spent_by_day[d.date] = (spent_by_day[d.date] or 0) + d.sent * (s.face_value or 0)
      end
    end
    for _, d in ipairs(t.days) do
      left = left - (spent_by_day[d.date] or 0)
      d.budget_left = left
    end
  end
  t.merchants, t.merchant_count = merchant_list(merchants)
  return t
end

return M
