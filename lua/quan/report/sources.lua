-- quan.report.sources: what `quan report` reads, each source read once and
-- summed where it lies (docs/report.md, "Where each figure comes from"):
--
--   sources.journal(path, now)   -> summary | nil, message   a batch journal
--   sources.store(path, wanted)  -> summary | nil, message   the receiver's store
--   sources.stock(wx, id, o)     -> stock | nil, message     GET .../stocks/{stock_id}
--   sources.flow(wx, kind, id)   -> summary | false, why | nil, message
--                                                            a use-flow or refund-flow file
--
-- Every file is opened read-only (quan.sqlite's readonly): no lock is taken,
-- so a send that writes its journal, or a receiver that writes its store,
-- is never held up and never refused. Days are Beijing-time calendar days
-- of the API's own times (a send's answer, a coupon's consume_time, a
-- refund's time), as "YYYY-MM-DD"; amounts are integer 分.
local M = {}

local sqlite = require "quan.sqlite"
local qos = require "quan.os"
local time = require "quan.time"
local json = require "wechatpay.json"

local floor, tointeger, type, tostring = math.floor, math.tointeger, type, tostring

local DAY = 86400

-- day_of(epoch) -> "YYYY-MM-DD" of the Beijing calendar
local function day_of(t)
  return os.date("!%Y-%m-%d", floor(t) + time.BEIJING)
end
M.day_of = day_of

-- open_readonly(path, what) -> db | nil, message
local function open_readonly(path, what)
  local st = qos.stat(path)
  if not st then return nil, ("%s %s: no such file"):format(what, path) end
  if st.kind ~= "file" then return nil, ("%s %s: not a file"):format(what, path) end
  local db, err = sqlite.open(path, { readonly = true })
  if not db then return nil, ("%s %s: %s"):format(what, path, tostring(err):gsub("^sqlite open [^:]*: ", "")) end
  return db
end

-- guarded(db, what, path, fn) -> fn's result | nil, message: a query that
-- fails (a damaged file, another program's database) is the file's
-- failure, named with its path; a Ctrl-C passes
local function guarded(db, what, path, fn)
  local ok, result, extra = pcall(fn)
  if not ok then
    if qos.is_interrupt(result) then db:close() error(result, 0) end
    db:close()
    return nil, ("%s %s: %s"):format(what, path, tostring(result):gsub("^.-sqlite: ", ""))
  end
  return result, extra
end

local function tables_of(db)
  local t = {}
  for r in db:rows("SELECT name FROM sqlite_master WHERE type = 'table'") do t[r.name] = true end
  return t
end

-- meta_of(db, rows, kind) -> the name = value pairs of the meta table of a
-- quan database whose rows are in the table `rows`; raises "not a KIND"
local function meta_of(db, rows, kind)
  local tables = tables_of(db)
  if not (tables.meta and tables[rows]) then error("sqlite: not a " .. kind, 0) end
  local meta = {}
  for r in db:rows("SELECT name, value FROM meta") do meta[r.name] = r.value end
  return meta
end

-- The journal's states that mean the user holds the row's coupon
M.SENT_STATES = { sent = true, sent_or_held = true }

-- journal(path, now) -> summary | nil, message. summary:
--   path, batch_id, stock_id (the journal's meta: quan send records it),
--   created, continued, read_at (this machine's clock)
--   states = {state -> rows}, rows, sent (rows in a sent state)
--   days = {"YYYY-MM-DD" -> sent}, untimed (sent rows without the API's
--   time: journals written before it was recorded), recent (sent in the
--   24 hours before now), first, last (epoch seconds of the API's answers)
function M.journal(path, now)
  local db, err = open_readonly(path, "journal")
  if not db then return nil, err end
  local s, why = guarded(db, "journal", path, function()
    local meta = meta_of(db, "items", "quan batch journal")
    if not meta.batch_id then error("sqlite: not a quan batch journal (no batch id)", 0) end
    local timed = false
    for r in db:rows("PRAGMA table_info(items)") do
      if r.name == "answered" then timed = true end
    end
    local s = { path = path, batch_id = meta.batch_id, stock_id = meta.stock_id, created = tonumber(meta.created),
      continued = meta.continues == "true", read_at = qos.time(), states = {}, rows = 0, sent = 0, days = {},
      untimed = 0, recent = 0, timed = timed }
    -- one pass over the items: by state and Beijing day of the answer
    local sql = timed and [[SELECT state, (CAST(answered AS INTEGER) + :offset) / 86400 AS day, count(*) AS n,
        sum(answered > :since AND answered <= :now) AS recent, min(answered) AS first, max(answered) AS last
        FROM items GROUP BY state, day]]
      or "SELECT state, NULL AS day, count(*) AS n, 0 AS recent, NULL AS first, NULL AS last FROM items GROUP BY state"
    for r in db:rows(sql, { since = now - DAY, now = now, offset = time.BEIJING }) do
      s.states[r.state] = (s.states[r.state] or 0) + r.n
      s.rows = s.rows + r.n
      if M.SENT_STATES[r.state] then
        s.sent = s.sent + r.n
        if r.day then
          local d = day_of(r.day * DAY)
          s.days[d] = (s.days[d] or 0) + r.n
          s.recent = s.recent + (r.recent or 0)
          if not s.first or r.first < s.first then s.first = r.first end
          if not s.last or r.last > s.last then s.last = r.last end
        else
          s.untimed = s.untimed + r.n
        end
      end
    end
    return s
  end)
  if s then db:close() end
  return s, why
end

-- store(path, wanted) -> summary | nil, message: the COUPON.USE events of
-- the stocks in the set `wanted` (stock_id -> true). summary: path,
-- read_at, events (every event in the store), by_stock = {stock_id ->
-- {coupons = {coupon_id -> {transaction_id, consume_time (epoch),
-- consume_mchid, coupon_amount, event_id}}, count, repeats (events of a
-- coupon already counted), untimed}}
function M.store(path, wanted)
  local db, err = open_readonly(path, "store")
  if not db then return nil, err end
  local s, why = guarded(db, "store", path, function()
    local meta = meta_of(db, "events", "quan notification store")
    if meta.format ~= require("quan.serve.store").FORMAT then error("sqlite: not a quan notification store", 0) end
    local s = { path = path, read_at = qos.time(), mchid = meta.mchid, by_stock = {},
      events = db:first("SELECT count(*) AS n FROM events").n }
    for id in pairs(wanted) do s.by_stock[id] = { coupons = {}, count = 0, repeats = 0, untimed = 0 } end
    for r in db:rows([[SELECT id, json_extract(data, '$.stock_id') AS stock_id, json_extract(data, '$.coupon_id') AS coupon_id,
        json_extract(data, '$.consume_information.consume_time') AS consume_time,
        json_extract(data, '$.consume_information.consume_mchid') AS consume_mchid,
        json_extract(data, '$.consume_information.transaction_id') AS transaction_id,
        json_extract(data, '$.normal_coupon_information.coupon_amount') AS coupon_amount
        FROM events WHERE event_type = 'COUPON.USE' ORDER BY seq]]) do
      local b = s.by_stock[tostring(r.stock_id)]
      if b and r.coupon_id then
        local coupon = tostring(r.coupon_id)
        if b.coupons[coupon] then
          b.repeats = b.repeats + 1
        else
          local at = time.parse(r.consume_time)
          if not at then b.untimed = b.untimed + 1 end
          b.coupons[coupon] = { transaction_id = r.transaction_id and tostring(r.transaction_id),
            consume_time = at and floor(at), consume_mchid = r.consume_mchid and tostring(r.consume_mchid),
            coupon_amount = tointeger(r.coupon_amount), event_id = r.id }
          b.count = b.count + 1
        end
      end
    end
    return s
  end)
  if s then db:close() end
  return s, why
end

-- stock(wx, stock_id, {mchid, retry}) -> the stock object | nil, message:
-- the API's answer, and read_at, request_id beside it
function M.stock(wx, stock_id, o)
  local res, err = wx:chain("v3/marketing/favor/stocks/{stock_id}"):get {
    stock_id = stock_id, query = { stock_creator_mchid = o.mchid }, retry = o.retry,
  }
  if not res then return nil, ("stock %s: %s"):format(stock_id, tostring(err)), err end
  local j = res.json
  if type(j) ~= "table" then return nil, ("stock %s: the answer holds no stock"):format(stock_id) end
  return { json = j, read_at = qos.time(), request_id = res.request_id,
    answered = time.parse_http(res.headers and res.headers.Date) }
end

-- files_from(end_time) -> when a stock's flow files can be had: 10:00
-- Beijing time the day after it ended ("活动结束后次日10点")
function M.files_from(ended)
  local day = (floor(ended) + time.BEIJING) // DAY + 1
  return day * DAY + 10 * 3600 - time.BEIJING
end

-- flow(wx, kind, stock_id) -> summary | false, why (the API has no such
-- file: RESOURCE_NOT_EXISTS) | nil, message. summary: kind, sha1, count,
-- read_at, rows = array of {coupon_id, coupon_amount, order_amount,
-- consume_mchid, transaction_id, consume_time, refund_time, refund_id}
-- (times as epoch seconds)
function M.flow(wx, kind, stock_id)
  local f, err = wx:flow(kind, stock_id)
  if not f then
    if type(err) == "table" and err.code == "RESOURCE_NOT_EXISTS" then return false, tostring(err.message or err) end
    return nil, ("%s of stock %s: %s"):format(kind, stock_id, tostring(err))
  end
  local s = { kind = kind, sha1 = f.sha1, count = f.count, size = f.size, read_at = qos.time(), rows = {} }
  local ok, rerr = pcall(function()
    for row in f:rows() do
      s.rows[#s.rows + 1] = {
        coupon_id = row.coupon_id, coupon_amount = row.coupon_amount, order_amount = row.order_amount,
        consume_mchid = row.consume_mchid, transaction_id = row.transaction_id, refund_id = row.refund_id,
        consume_time = row.consume_time and floor(time.parse(row.consume_time) or 0) or nil,
        refund_time = row.refund_time and floor(time.parse(row.refund_time) or 0) or nil,
      }
    end
  end)
  f:close()
  if not ok then
    if qos.is_interrupt(rerr) then error(rerr, 0) end
    return nil, ("%s of stock %s: %s"):format(kind, stock_id, tostring(rerr))
  end
  return s
end

-- json_of(text) -> a decoded table | nil (a state's recorded request)
function M.json_of(text)
  if type(text) ~= "string" then return nil end
  local v = json.decode(text)
  return type(v) == "table" and v or nil
end

return M
