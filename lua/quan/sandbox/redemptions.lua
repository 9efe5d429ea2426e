-- quan.sandbox.redemptions: redemptions of sent coupons, as the payments of a
-- stock's users would make them, over business time (docs/sandbox.md,
-- "Redemptions").
--
-- POST /sandbox/redemptions schedules a share (or a count) of a stock's
-- unused coupons, each with a time on the business clock inside the next
-- over_seconds, an order amount of at least the coupon's threshold, a
-- merchant of the stock, a transaction id, and for a few of them a refund.
-- Everything is drawn from `seed` with a generator of its own (splitmix64),
-- so the same state and the same request give the same rows. A scheduled
-- redemption is made when the business clock reaches its time (settle): the
-- coupon becomes USED with its consume_information, and a COUPON.USE
-- notification goes to the outbox of quan.sandbox.notify, which the main
-- thread delivers and retries. settle runs in the main thread's tick, at the
-- start of every API request and before a flow file is made, so what the
-- API answers never lags the business clock.
--
-- The rows live in the store's table `redemptions` (quan.sandbox.store);
-- quan.sandbox.flows makes the use-flow and refund-flow files of them.
local M = {}

local check = require("quan.sqlite").check
local store = require "quan.sandbox.store"
local notify = require "quan.sandbox.notify"
local util = require "quan.sandbox.util"
local time = require "quan.time"
local cjson = require "cjson"

local floor, max, min = math.floor, math.max, math.min
local type, tostring = type, tostring
local fail = store.fail

local DAY = 86400
M.MAX_COUNT = 1000000 -- redemptions one request may schedule
M.MAX_OVER = 90 * DAY -- the longest stock window the API allows
M.MAX_SEED = 2 ^ 53 - 1
M.DEFAULT_SEED = 1
M.REFUND_WITHIN = 3 * DAY -- a refund comes this long after its payment at most
local SETTLE_LIMIT = 2000 -- redemptions one API request makes at most (the tick makes the rest)

-- ---- the generator ------------------------------------------------------

-- generator(seed) -> below(n): integers from 0 to n - 1, drawn from the
-- seed by splitmix64 (the same on every machine, and apart from
-- math.random, which the fault injector uses)
local function generator(seed)
  local x = seed
  return function(n)
    x = x + 0x9E3779B97F4A7C15
    local z = x
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return floor((z >> 11) * 2.0 ^ -53 * n)
  end
end

-- ---- times --------------------------------------------------------------

-- files_from(end_time) -> when a stock's flow files can be had: 10:00
-- Beijing time the day after its available_end_time (official: "活动结束后
-- 次日10点")
function M.files_from(end_time)
  local day = (end_time + time.BEIJING) // DAY + 1
  return day * DAY + 10 * 3600 - time.BEIJING
end

-- ---- the request --------------------------------------------------------

local FIELDS = {stock_id = true, share = true, count = true, over_seconds = true, refunds = true, seed = true,
  ca_file = true}

local function param(message, field, value)
  return fail(400, "PARAM_ERROR", message, field, value)
end

local function integer(v, lo, hi)
  return type(v) == "number" and v == floor(v) and v >= lo and v <= hi and math.tointeger(v) or nil
end

-- request(b) -> {stock_id, share | count, over, refunds, seed, ca_file} | nil,
-- error: the body of POST /sandbox/redemptions, every value in its bounds
local function request(b)
  for k in pairs(b) do
    if not FIELDS[k] then return param("unknown field '" .. tostring(k) .. "'", tostring(k)) end
  end
  local r = {}
  if type(b.stock_id) ~= "string" or b.stock_id == "" or #b.stock_id > 20 then
    return param("stock_id must be a stock id (a string of 1 to 20 characters)", "stock_id", b.stock_id)
  end
  r.stock_id = b.stock_id
  if b.share ~= nil and b.count ~= nil then return param("give share or count, not both", "share", b.share) end
  if b.share == nil and b.count == nil then return param("share (of the unused coupons) or count is required", "share") end
  if b.share ~= nil then
    if type(b.share) ~= "number" or not (b.share > 0 and b.share <= 1) then
      return param("share must be a number above 0 and at most 1", "share", b.share)
    end
    r.share = b.share
  else
    r.count = integer(b.count, 1, M.MAX_COUNT)
    if not r.count then return param("count must be a whole number from 1 to " .. M.MAX_COUNT, "count", b.count) end
  end
  r.over = 0
  if b.over_seconds ~= nil then
    r.over = integer(b.over_seconds, 0, M.MAX_OVER)
    if not r.over then
      return param("over_seconds must be whole seconds from 0 to " .. M.MAX_OVER .. " (90 days)", "over_seconds",
        b.over_seconds)
    end
  end
  r.refunds = 0
  if b.refunds ~= nil then
    r.refunds = integer(b.refunds, 0, M.MAX_COUNT)
    if not r.refunds then return param("refunds must be a whole number from 0 to " .. M.MAX_COUNT, "refunds", b.refunds) end
  end
  r.seed = M.DEFAULT_SEED
  if b.seed ~= nil then
    r.seed = integer(b.seed, 0, M.MAX_SEED)
    if not r.seed then return param("seed must be a whole number from 0 to 2^53 - 1", "seed", b.seed) end
  end
  if b.ca_file ~= nil and (type(b.ca_file) ~= "string" or b.ca_file == "") then
    return param("ca_file must be a path", "ca_file", b.ca_file)
  end
  r.ca_file = b.ca_file
  return r
end

-- merchants(s) -> the merchants where the stock's coupons are used: its
-- available_merchants, else its creator
local function merchants(s)
  local cur = cjson.decode(s.request).coupon_use_rule or {}
  local list = type(cur.available_merchants) == "table" and cur.available_merchants or {}
  if #list == 0 then list = {s.creator_mchid} end
  return list
end

-- entry(row) -> a redemption as the control endpoints show it
local function entry(r)
  return {coupon_id = r.coupon_id, stock_id = r.stock_id, openid = r.openid, state = r.state,
    consume_time = time.beijing(r.consume_time), consume_mchid = r.consume_mchid, transaction_id = r.transaction_id,
    coupon_amount = r.coupon_amount, order_amount = r.order_amount, refund_id = r.refund_id,
    refund_time = r.refund_time and time.beijing(r.refund_time)}
end
M.entry = entry

-- draw(below, c, s, r, now, mchids, refunded) -> a redemptions row for coupon
-- row c: its time in [now, now + over], a merchant, an order of at least
-- the threshold (and above the coupon's amount: a payment pays something),
-- in steps of 0.10 元 up to about twice that, a 28-digit transaction id
-- (unique: it ends in the coupon's number); a refunded one a refund within
-- REFUND_WITHIN, before the flow files are made, with a 29-digit refund id
local function draw(below, c, s, r, now, mchids, refunded)
  local at = now + below(r.over + 1)
  local base = max(c.minimum, c.amount + 1)
  local row = {coupon_id = c.coupon_id, seq = c.seq, stock_id = c.stock_id, openid = c.openid, state = "scheduled",
    consume_time = at, consume_mchid = mchids[below(#mchids) + 1],
    order_amount = base + 10 * below(base // 10 + 1), coupon_amount = c.amount,
    transaction_id = ("4200%06d%s%010d"):format(below(1000000), time.beijing(at, "%Y%m%d"), c.seq % 10000000000),
    ca_file = r.ca_file}
  if refunded then
    local last = min(at + M.REFUND_WITHIN, M.files_from(s.end_time) - 1)
    row.refund_time = at + 60 + below(max(1, last - at - 60))
    row.refund_id = ("5030000%s%014d"):format(time.beijing(row.refund_time, "%Y%m%d"), c.seq)
  end
  return row
end

-- schedule(db, ctx, r) -> the redemptions scheduled (rows) | nil, error:
-- r a checked request (request()); ctx {mchid, now = business clock}.
-- Nothing is written unless all of it is.
local function schedule(db, ctx, r)
  local s = store.stock_row(db, r.stock_id)
  if not s or s.creator_mchid ~= ctx.mchid then
    return fail(404, "RESOURCE_NOT_EXISTS", "stock does not exist", "stock_id", r.stock_id)
  end
  if ctx.now < s.begin_time then
    return fail(400, "INVALID_REQUEST", "the stock's coupons are usable from " .. time.beijing(s.begin_time), "stock_id",
      r.stock_id)
  end
  if ctx.now > s.end_time then
    return fail(400, "INVALID_REQUEST", "the stock has ended (available_end_time " .. time.beijing(s.end_time) .. ")",
      "stock_id", r.stock_id)
  end
  if ctx.now + r.over > s.end_time then
    return param(("over_seconds would go past the stock's end (%s): at most %d now"):format(time.beijing(s.end_time),
      s.end_time - ctx.now), "over_seconds", r.over)
  end
  -- the unused coupons: SENDED, and not scheduled already
  local unused = {}
  for c in db:rows([[SELECT * FROM coupons c WHERE c.stock_id = ? AND c.status = 'SENDED'
      AND NOT EXISTS (SELECT 1 FROM redemptions r WHERE r.coupon_id = c.coupon_id) ORDER BY c.seq]], r.stock_id) do
    unused[#unused + 1] = c
  end
  local k = r.count or floor(r.share * #unused + 0.5)
  if k > #unused then
    return param(("count: only %d of the stock's coupons are unused (sent, not used nor scheduled)"):format(#unused),
      "count", r.count)
  end
  if r.refunds > k then
    return param(("refunds must be at most the number redeemed (%d)"):format(k), "refunds", r.refunds)
  end
  local below = generator(r.seed)
  -- which coupons (the first k of a shuffle), which of them refunded
  for i = 1, k do
    local j = i + below(#unused - i + 1)
    unused[i], unused[j] = unused[j], unused[i]
  end
  local refunded = {}
  for i = 1, k do refunded[i] = i end
  for i = 1, r.refunds do
    local j = i + below(k - i + 1)
    refunded[i], refunded[j] = refunded[j], refunded[i]
  end
  local is_refunded = {}
  for i = 1, r.refunds do is_refunded[refunded[i]] = true end
  local mchids, rows = merchants(s), {}
  for i = 1, k do
    local row = draw(below, unused[i], s, r, ctx.now, mchids, is_refunded[i])
    rows[i] = row
    check(db:run([[INSERT INTO redemptions (coupon_id, seq, stock_id, openid, state, consume_time, consume_mchid,
      transaction_id, coupon_amount, order_amount, refund_id, refund_time, ca_file) VALUES (:coupon_id, :seq, :stock_id,
      :openid, :state, :consume_time, :consume_mchid, :transaction_id, :coupon_amount, :order_amount, :refund_id,
      :refund_time, :ca_file)]], row))
  end
  table.sort(rows, function(a, b)
    if a.consume_time ~= b.consume_time then return a.consume_time < b.consume_time end
    return a.seq < b.seq
  end)
  return rows
end

-- ---- making them --------------------------------------------------------

-- settle(sandbox, now[, limit]) -> the number of scheduled redemptions due
-- at business time `now` that were made (at most limit; default all), in
-- their order: the coupon USED at the redemption's time with its
-- consume_information, the COUPON.USE notification (created at that time)
-- kept for the callback URL when one is set and on; a coupon used
-- otherwise meanwhile is skipped. Inside the caller's transaction when
-- there is one (it nests).
function M.settle(sandbox, now, limit)
  local db = sandbox.db
  if not check(db:first("SELECT 1 AS due FROM redemptions WHERE state = 'scheduled' AND consume_time <= ? LIMIT 1", now)) then
    return 0 -- the usual case, without taking the write lock
  end
  return check(db:transaction(function()
    local due = {}
    for row in db:rows("SELECT * FROM redemptions WHERE state = 'scheduled' AND consume_time <= ? ORDER BY consume_time, seq LIMIT ?",
        now, limit or -1) do
      due[#due + 1] = row
    end
    for _, r in ipairs(due) do
      local c = check(db:first("SELECT * FROM coupons WHERE seq = ?", r.seq))
      if c.status ~= "SENDED" then
        check(db:run("UPDATE redemptions SET state = 'skipped' WHERE coupon_id = ?", r.coupon_id))
      else
        local coupon = store.consume(db, c, store.stock_row(db, c.stock_id), r.consume_time, r.consume_mchid, r.transaction_id)
        check(db:run("UPDATE redemptions SET state = 'done' WHERE coupon_id = ?", r.coupon_id))
        notify.enqueue(sandbox, notify.event_body(sandbox, coupon, r.consume_time), r.ca_file)
      end
    end
    return #due
  end))
end

-- settle_some(sandbox, now): settle for an API request, which must answer
-- soon: at most SETTLE_LIMIT (the main thread's tick makes the rest)
function M.settle_some(sandbox, now)
  return M.settle(sandbox, now, SETTLE_LIMIT)
end

-- record(db, c, at, coupon, order_amount): coupon row c, used at `at` by
-- /sandbox/coupons/use (coupon: the notification's, with its
-- consume_information), kept as a done redemption for the use-flow file;
-- the order defaults to the coupon's threshold (and above its amount)
local function record(db, c, at, coupon, order_amount)
  local info = coupon.consume_information
  check(db:run([[INSERT INTO redemptions (coupon_id, seq, stock_id, openid, state, consume_time, consume_mchid, transaction_id,
    coupon_amount, order_amount) VALUES (?, ?, ?, ?, 'done', ?, ?, ?, ?, ?)]], c.coupon_id, c.seq, c.stock_id, c.openid, at,
    info.consume_mchid, info.transaction_id, c.amount, order_amount or max(c.minimum, c.amount + 1)))
end

-- use_one(db, ctx, b) -> the coupon | nil, error: POST /sandbox/coupons/use
-- (store.use_coupon), with an optional order_amount (分, at least the
-- coupon's threshold), the use kept as a redemption
function M.use_one(db, ctx, b)
  local order = b.order_amount
  if order ~= nil and not integer(order, 1, 10 ^ 12) then
    return param("order_amount must be a whole number of 分 from 1", "order_amount", order)
  end
  local body = {}
  for k, v in pairs(b) do if k ~= "order_amount" then body[k] = v end end
  return check(db:transaction(function()
    if order and type(b.coupon_id) == "string" and type(b.openid) == "string" then
      local c = store.user_coupon(db, b.coupon_id, b.openid)
      if c and order < max(c.minimum, c.amount + 1) then
        return param(("order_amount must be at least the coupon's threshold (%d 分) and above its amount (%d 分)"):format(
          c.minimum, c.amount), "order_amount", order)
      end
    end
    local coupon, err = store.use_coupon(db, ctx, body)
    if not coupon then return nil, err end
    record(db, store.user_coupon(db, b.coupon_id, b.openid), ctx.now, coupon, order and math.tointeger(order))
    return coupon
  end))
end

-- list(db, stock_id) -> the redemptions (of one stock, or every one), in
-- their order: consume time, then coupon
local function list(db, stock_id)
  local data = {}
  for row in db:rows("SELECT * FROM redemptions WHERE ? IS NULL OR stock_id = ? ORDER BY consume_time, seq", stock_id,
      stock_id) do
    data[#data + 1] = entry(row)
  end
  return data
end

-- ---- the control endpoint: /sandbox/redemptions ----------------------------

-- post(ex): POST /sandbox/redemptions {stock_id, share | count[,
-- over_seconds, refunds, seed, ca_file]} -> {stock_id, seed, count,
-- refunds, from, to, data = [redemption]}; the ones due now are made
-- before it answers
function M.post(ex)
  local b, err = ex:json_object()
  if not b then return ex:fail(err) end
  local r
  r, err = request(b)
  if not r then return ex:fail(err) end
  local sandbox, db, now = ex.sandbox, ex.db, ex:now()
  local rows
  rows, err = check(db:transaction(schedule, db, {mchid = sandbox.id.mchid, appid = sandbox.id.appid, now = now}, r))
  if not rows then return ex:fail(err) end
  M.settle(sandbox, now)
  local data = {}
  for i, row in ipairs(rows) do
    data[i] = entry(check(db:first("SELECT * FROM redemptions WHERE coupon_id = ?", row.coupon_id)))
  end
  return ex:answer(200, util.encode {stock_id = r.stock_id, seed = r.seed, count = #rows, refunds = r.refunds,
    from = time.beijing(now), to = time.beijing(now + r.over), data = util.array(data)})
end

-- get(ex): GET /sandbox/redemptions[?stock_id=] -> {total_count, data}
function M.get(ex)
  local stock_id = ex.query.stock_id
  if stock_id ~= nil and (stock_id == "" or #stock_id > 20) then
    return ex:fail(param("stock_id must be a stock id", "stock_id", stock_id))
  end
  M.settle(ex.sandbox, ex:now())
  local data = list(ex.db, stock_id)
  return ex:answer(200, util.encode {total_count = #data, data = util.array(data)})
end

return M
