-- quan.sandbox.store: the sandbox's durable state (SQLite) and the business
-- rules of the favor endpoints. Every function takes the open db and a
-- context {mchid =, appid =, now = business clock (epoch s), base_url =} and
-- returns a response table, or nil and an error {status, code, message,
-- field} in WeChat Pay's vocabulary. Request bodies come checked against
-- the shared schema (wechatpay.favor.validate, in the handler); the store
-- keeps what the schema cannot say: stock state, ownership, budgets. A
-- failure of the database raises (sqlite.check): it rolls the request's
-- transaction back, and the server answers 500 SYSTEM_ERROR.
local M = {}

local util = require "quan.sandbox.util"
local json = require "wechatpay.json"
local time = require "quan.time"
local cjson = require "cjson"
local check = require("quan.sqlite").check

local format_time = time.beijing
local floor, tointeger = math.floor, math.tointeger
local tonumber, tostring, type = tonumber, tostring, type

-- parse_time(s) -> epoch seconds (integer) | nil: a time of a query, read
-- as a server reads one ("Z", or a space for an unencoded "+", accepted)
local function parse_time(s)
  local t = time.parse(s, true)
  return t and floor(t)
end

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS stocks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  stock_id TEXT UNIQUE,
  creator_mchid TEXT NOT NULL,
  out_request_no TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  request TEXT NOT NULL,
  stock_name TEXT NOT NULL,
  status TEXT NOT NULL,
  create_time INTEGER NOT NULL,
  start_time INTEGER, pause_time INTEGER, restart_time INTEGER, stop_time INTEGER,
  begin_time INTEGER NOT NULL,
  end_time INTEGER NOT NULL,
  max_coupons INTEGER NOT NULL,
  max_amount INTEGER NOT NULL,
  max_amount_by_day INTEGER,
  max_per_user INTEGER NOT NULL,
  coupon_amount INTEGER NOT NULL,
  transaction_minimum INTEGER NOT NULL,
  no_cash INTEGER NOT NULL,
  distributed INTEGER NOT NULL DEFAULT 0,
  sent_amount INTEGER NOT NULL DEFAULT 0,
  UNIQUE (creator_mchid, out_request_no)
);
CREATE TABLE IF NOT EXISTS coupons (
  seq INTEGER PRIMARY KEY,   -- coupon_id = 98000000000 + seq
  coupon_id TEXT NOT NULL,
  stock_id TEXT NOT NULL,
  openid TEXT NOT NULL,
  appid TEXT NOT NULL,
  sender_mchid TEXT NOT NULL,
  out_request_no TEXT NOT NULL,
  amount INTEGER NOT NULL,
  minimum INTEGER NOT NULL,
  day TEXT NOT NULL,
  create_time INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'SENDED',
  UNIQUE (sender_mchid, out_request_no)
);
CREATE INDEX IF NOT EXISTS coupons_user ON coupons (openid, stock_id);
CREATE INDEX IF NOT EXISTS coupons_day ON coupons (stock_id, day);
CREATE TABLE IF NOT EXISTS nonces (
  mchid TEXT NOT NULL, nonce TEXT NOT NULL, ts INTEGER NOT NULL,
  PRIMARY KEY (mchid, nonce)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uses (
  coupon_id TEXT PRIMARY KEY, consume_time INTEGER NOT NULL, consume_mchid TEXT NOT NULL,
  transaction_id TEXT NOT NULL
);
-- redemptions: payments that use a coupon (quan.sandbox.redemptions): scheduled
-- on the business clock, done when their time comes (the coupon USED, its
-- uses row, a COUPON.USE notification), skipped when the coupon was used
-- otherwise meanwhile; the rows of the use-flow and refund-flow files
CREATE TABLE IF NOT EXISTS redemptions (
  coupon_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, stock_id TEXT NOT NULL, openid TEXT NOT NULL,
  state TEXT NOT NULL, consume_time INTEGER NOT NULL, consume_mchid TEXT NOT NULL, transaction_id TEXT NOT NULL,
  coupon_amount INTEGER NOT NULL, order_amount INTEGER NOT NULL, refund_id TEXT, refund_time INTEGER, ca_file TEXT
);
CREATE INDEX IF NOT EXISTS redemptions_due ON redemptions (consume_time) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS redemptions_stock ON redemptions (stock_id, consume_time);
CREATE TABLE IF NOT EXISTS callbacks (
  mchid TEXT PRIMARY KEY, notify_url TEXT NOT NULL, switch INTEGER, update_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS media (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, filename TEXT, sha256 TEXT, size INTEGER, create_time INTEGER
);
CREATE TABLE IF NOT EXISTS notifications (
  event_id TEXT PRIMARY KEY, notify_url TEXT NOT NULL, body TEXT NOT NULL, ca_file TEXT,
  attempts INTEGER NOT NULL, state TEXT NOT NULL, next_at REAL, last_status INTEGER, last_error TEXT,
  create_time INTEGER NOT NULL, update_time INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (next_at) WHERE next_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS control (
  key TEXT PRIMARY KEY, value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
  method TEXT NOT NULL, template TEXT NOT NULL, count INTEGER NOT NULL,
  PRIMARY KEY (method, template)
) WITHOUT ROWID;
]]

-- migrate(db): creates the tables when missing
function M.migrate(db)
  check(db:exec(SCHEMA))
end

-- control values shared by every worker thread: clock offset and faults
function M.get_control(db)
  local row = check(db:first("SELECT value FROM control WHERE key = 'control'"))
  return row and row.value or "{}"
end

function M.set_control(db, t)
  check(db:run("INSERT INTO control (key, value) VALUES ('control', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    cjson.encode(t)))
end

-- remember_nonce(db, mchid, nonce, ts) -> true | false when already seen
-- within the window. Old nonces are pruned now and then.
local seen = 0
function M.remember_nonce(db, mchid, nonce, now)
  local changes = check(db:run("INSERT OR IGNORE INTO nonces (mchid, nonce, ts) VALUES (?, ?, ?)", mchid, nonce, now))
  seen = seen + 1
  if seen % 500 == 0 then check(db:run("DELETE FROM nonces WHERE ts < ?", now - 900)) end
  return changes == 1
end

-- count_request(db, method, template): one more API request to the
-- endpoint (its path template); what GET /sandbox/requests reports
function M.count_request(db, method, template)
  check(db:run("INSERT INTO requests (method, template, count) VALUES (?, ?, 1) "
    .. "ON CONFLICT (method, template) DO UPDATE SET count = count + 1", method, template))
end

-- reset_requests(db): the counts back to zero
function M.reset_requests(db)
  check(db:run("DELETE FROM requests"))
end

-- request_counts(db) -> {total, by_method = {GET = n, ...}, data = {{method, template, count}, ...}}
function M.request_counts(db)
  local total, by_method, data = 0, {}, {}
  for row in db:rows("SELECT method, template, count FROM requests ORDER BY method, template") do
    total = total + row.count
    by_method[row.method] = (by_method[row.method] or 0) + row.count
    data[#data + 1] = {method = row.method, template = row.template, count = row.count}
  end
  return {total = total, by_method = by_method, data = util.array(data)}
end

local function fail(status, code, message, field, value)
  if code == "PARAM_ERROR" and field and not message:find(field, 1, true) then message = field .. ": " .. message end
  return nil, {status = status, code = code, message = message, field = field, value = value}
end
M.fail = fail

local function param(message, field, value)
  return fail(400, "PARAM_ERROR", message, field, value)
end

local function need_string(t, key, path, max)
  local v = t[key]
  if v == nil or v == cjson.null then return param(path .. " is required", path) end
  if type(v) ~= "string" then return param(path .. " must be a string", path, v) end
  if v == "" then return param(path .. " must not be empty", path, v) end
  if max and #v > max then return param(("%s is longer than %d"):format(path, max), path, v) end
  return v
end

local OUT_NO = "^[%w|_*%-]+$"

-- ---- stocks ------------------------------------------------------------

local function stock_row(db, stock_id)
  return check(db:first("SELECT * FROM stocks WHERE stock_id = ?", stock_id))
end
M.stock_row = stock_row

-- ended(row, now) -> true when a running or paused stock is past its
-- available_end_time: the API reports it stopped (docs/sandbox.md,
-- "Where the answers come from": inferred, no real answer seen)
local function ended(row, now)
  return (row.status == "running" or row.status == "paused") and now > row.end_time
end

-- status_of(row, now) -> the stock's status as the API reports it
local function status_of(row, now)
  return ended(row, now) and "stoped" or row.status
end

-- the SQL of status_of, over a stocks row and :now
local STATUS_SQL = "(CASE WHEN status IN ('running', 'paused') AND end_time < :now THEN 'stoped' ELSE status END)"

-- singleitem(request) -> true for a single-item stock (单品券: it names
-- available_items), as the stock and its coupons report it
local function singleitem(req)
  local cur = type(req.coupon_use_rule) == "table" and req.coupon_use_rule or {}
  return type(cur.available_items) == "table" and #cur.available_items > 0
end

-- stock_json(row, now) -> the stock object of query and list answers. What
-- the create request left unset reads as a real answer shows it (a 2024
-- answer printed by the Java SDK): max_amount_by_day 0, goods_tag and
-- trade_type [], combine_use false; card_id is made up.
local function stock_json(row, now)
  local req = cjson.decode(row.request)
  local sur, cur = req.stock_use_rule or {}, req.coupon_use_rule or {}
  local pattern = type(req.pattern_info) == "table" and req.pattern_info or {}
  local s = {
    stock_id = row.stock_id,
    stock_creator_mchid = row.creator_mchid,
    stock_name = row.stock_name,
    status = status_of(row, now),
    create_time = format_time(row.create_time),
    description = pattern.description or "",
    stock_use_rule = {
      max_coupons = row.max_coupons,
      max_amount = row.max_amount,
      max_amount_by_day = row.max_amount_by_day or 0,
      max_coupons_per_user = row.max_per_user,
      natural_person_limit = sur.natural_person_limit,
      prevent_api_abuse = sur.prevent_api_abuse,
      fixed_normal_coupon = {coupon_amount = row.coupon_amount, transaction_minimum = row.transaction_minimum},
      coupon_type = "NORMAL",
      goods_tag = util.array(cur.goods_tag or {}),
      trade_type = util.array(cur.trade_type or {}),
      combine_use = cur.combine_use == true,
    },
    available_begin_time = format_time(row.begin_time),
    available_end_time = format_time(row.end_time),
    distributed_coupons = row.distributed,
    no_cash = row.no_cash == 1,
    singleitem = singleitem(req),
    stock_type = "NORMAL",
    card_id = ("pQUANsandbox%016d"):format(tonumber(row.stock_id)),
  }
  if row.start_time then s.start_time = format_time(row.start_time) end
  if row.stop_time then s.stop_time = format_time(row.stop_time)
  elseif ended(row, now) then s.stop_time = format_time(row.end_time) end
  return s
end

-- check_create(b, ctx) -> the stock's numbers | nil, error: the rules of
-- the create body that the schema cannot say. The handler has checked the
-- body against wechatpay.favor.schema first (types, limits, and the
-- cross-field and time rules on the business clock: docs/campaigns.md), so
-- every field here has its type; what is left is who owns the stock and
-- what the sandbox emulates.
local function check_create(b, ctx)
  if b.belong_merchant ~= ctx.mchid then
    return fail(400, "INVALID_REQUEST", "belong_merchant must be the calling merchant's own mchid", "belong_merchant", b.belong_merchant)
  end
  if b.stock_type ~= "NORMAL" then
    return param("stock_type: only NORMAL stocks can be created", "stock_type", b.stock_type)
  end
  local sur, fnc = b.stock_use_rule, b.coupon_use_rule.fixed_normal_coupon
  return {
    begin_t = floor(time.parse(b.available_begin_time)), end_t = floor(time.parse(b.available_end_time)),
    max_coupons = tointeger(sur.max_coupons), max_amount = tointeger(sur.max_amount),
    by_day = sur.max_amount_by_day and tointeger(sur.max_amount_by_day),
    max_per_user = tointeger(sur.max_coupons_per_user),
    amount = tointeger(fnc.coupon_amount), minimum = tointeger(fnc.transaction_minimum),
  }
end

-- create_stock(db, ctx, body) -> {stock_id, create_time}; body: a create
-- request the schema's validator found valid (see check_create)
function M.create_stock(db, ctx, b)
  local r, err = check_create(b, ctx)
  if not r then return nil, err end
  local canon = json.encode(b) -- keys sorted: the same request, the same text
  local hash = ctx.sha256(canon)
  return check(db:transaction(function()
    local old = check(db:first("SELECT stock_id, create_time, request_hash FROM stocks WHERE creator_mchid = ? AND out_request_no = ?",
      ctx.mchid, b.out_request_no))
    if old then
      if old.request_hash ~= hash then
        return fail(400, "INVALID_REQUEST", "out_request_no was already used with a different request", "out_request_no", b.out_request_no)
      end
      return {stock_id = old.stock_id, create_time = format_time(old.create_time)}
    end
    local _, seq = check(db:run([[INSERT INTO stocks (creator_mchid, out_request_no, request_hash, request, stock_name, status,
      create_time, begin_time, end_time, max_coupons, max_amount, max_amount_by_day, max_per_user, coupon_amount,
      transaction_minimum, no_cash) VALUES (?, ?, ?, ?, ?, 'unactivated', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)]],
      ctx.mchid, b.out_request_no, hash, canon, b.stock_name, ctx.now, r.begin_t, r.end_t, r.max_coupons, r.max_amount,
      r.by_day, r.max_per_user, r.amount, r.minimum, b.no_cash and 1 or 0))
    local stock_id = tostring(16000000 + seq)
    check(db:run("UPDATE stocks SET stock_id = ? WHERE seq = ?", stock_id, seq))
    return {stock_id = stock_id, create_time = format_time(ctx.now)}
  end))
end

local TRANSITIONS = {
  start = {from = "unactivated", to = "running", field = "start_time"},
  pause = {from = "running", to = "paused", field = "pause_time"},
  restart = {from = "paused", to = "running", field = "restart_time"},
  stop = {from = "unactivated", to = "stoped", field = "stop_time"},
}

-- repeated(row, action, status) -> true when the stock's last change was
-- this action (status: the stock's, as reported): a running stock was
-- last started when it was never restarted, last restarted when it was;
-- pause is the only way into paused, stop into a stored stoped
local function repeated(row, action, status)
  if status ~= TRANSITIONS[action].to then return false end
  if action == "start" then return row.restart_time == nil end
  if action == "restart" then return row.restart_time ~= nil end
  if action == "stop" then return row.status == "stoped" and row.stop_time ~= nil end
  return true
end

-- transition(db, ctx, stock_id, action, body) -> {stock_id, <action>_time}.
-- A call that finds the stock where this same action left it answers 200
-- with the time of that change, nothing changed (the official pages:
-- 接口支持幂等重入); any other state is 400 PARAM_ERROR 非法的批次状态.
function M.transition(db, ctx, stock_id, action, b)
  local tr = TRANSITIONS[action]
  local creator, err = need_string(b, "stock_creator_mchid", "stock_creator_mchid", 20)
  if not creator then return nil, err end
  return check(db:transaction(function()
    local row = stock_row(db, stock_id)
    if not row or row.creator_mchid ~= creator then
      return fail(404, "RESOURCE_NOT_EXISTS", "stock does not exist", "stock_id", stock_id)
    end
    if creator ~= ctx.mchid then
      return fail(403, "REQUEST_BLOCKED", "only the creating merchant may change the stock", "stock_creator_mchid", creator)
    end
    local status = status_of(row, ctx.now)
    if repeated(row, action, status) then
      return {stock_id = stock_id, [tr.field] = format_time(row[tr.field])}
    end
    if status ~= tr.from then
      return fail(400, "PARAM_ERROR", ("非法的批次状态 (illegal stock status: %s is %s, %s needs %s)"):format(stock_id,
        status, action, tr.from), "status", status)
    end
    if action == "start" and row.end_time < ctx.now then
      return fail(400, "INVALID_REQUEST", "the activity has ended", "available_end_time", format_time(row.end_time))
    end
    check(db:run(("UPDATE stocks SET status = ?, %s = ? WHERE stock_id = ?"):format(tr.field), tr.to, ctx.now, stock_id))
    return {stock_id = stock_id, [tr.field] = format_time(ctx.now)}
  end))
end

-- get_stock(db, ctx, stock_id, query) -> stock
function M.get_stock(db, ctx, stock_id, q)
  local creator, err = need_string(q, "stock_creator_mchid", "stock_creator_mchid")
  if not creator then return nil, err end
  local row = stock_row(db, stock_id)
  if not row or row.creator_mchid ~= creator then
    return fail(404, "RESOURCE_NOT_EXISTS", "stock does not exist", "stock_id", stock_id)
  end
  return stock_json(row, ctx.now)
end

-- query_int(q, key, default, min, max, required) -> the integer value of a
-- query parameter | nil, error: decimal digits only (no sign, space,
-- 0x10 or 1e1)
local function query_int(q, key, default, min, max, required)
  local v = q[key]
  if v == nil or v == "" then
    if required then return param(key .. " is required", key) end
    return default
  end
  if not v:find("^%d+$") then return param(key .. " must be a whole number in decimal digits", key, v) end
  local n = #v <= 15 and math.tointeger(tonumber(v))
  if not n then return param(("%s must be between %d and %d"):format(key, min, max), key, v) end
  if n < min or n > max then return param(("%s must be between %d and %d"):format(key, min, max), key, n) end
  return n
end

local STATUSES = {unactivated = true, audit = true, running = true, stoped = true, paused = true}

-- list_stocks(db, ctx, query) -> {total_count, offset, limit, data}
-- offset is a page index from 0 (favor-api §3.2), limit at most 10.
function M.list_stocks(db, ctx, q)
  local offset, err = query_int(q, "offset", 0, 0, 100000, true); if not offset then return nil, err end
  local limit; limit, err = query_int(q, "limit", 10, 1, 10, true); if not limit then return nil, err end
  local creator; creator, err = need_string(q, "stock_creator_mchid", "stock_creator_mchid"); if not creator then return nil, err end
  local from, to = 0, 2^53
  if q.create_start_time then
    from = parse_time(q.create_start_time)
    if not from then return param("create_start_time is not an RFC 3339 time", "create_start_time", q.create_start_time) end
  end
  if q.create_end_time then
    to = parse_time(q.create_end_time)
    if not to then return param("create_end_time is not an RFC 3339 time", "create_end_time", q.create_end_time) end
  end
  if q.status and not STATUSES[q.status] then return param("status is not a stock status", "status", q.status) end
  local where = "creator_mchid = :creator AND create_time >= :from AND create_time <= :to AND (:status IS NULL OR "
    .. STATUS_SQL .. " = :status)"
  local args = {creator = creator, from = from, to = math.tointeger(to) or to, status = q.status, limit = limit,
    skip = offset * limit, now = ctx.now}
  local total = check(db:first("SELECT count(*) AS n FROM stocks WHERE " .. where, args)).n
  local data = {}
  for row in db:rows("SELECT * FROM stocks WHERE " .. where .. " ORDER BY seq DESC LIMIT :limit OFFSET :skip", args) do
    data[#data + 1] = stock_json(row, ctx.now)
  end
  return {total_count = total, offset = offset, limit = limit, data = util.array(data)}
end

-- list_merchants / list_items(db, ctx, stock_id, query) -> page of strings;
-- offset is a page index from 0, as on every list of the family (the
-- schema's paging; fidelity research item a)
local function stock_list(db, stock_id, q, field, max_offset, max_limit, default)
  local offset, err = query_int(q, "offset", 0, 0, max_offset, true); if not offset then return nil, err end
  local limit; limit, err = query_int(q, "limit", 10, 1, max_limit, true); if not limit then return nil, err end
  local creator; creator, err = need_string(q, "stock_creator_mchid", "stock_creator_mchid"); if not creator then return nil, err end
  local row = stock_row(db, stock_id)
  if not row or row.creator_mchid ~= creator then
    return fail(404, "RESOURCE_NOT_EXISTS", "stock does not exist", "stock_id", stock_id)
  end
  local cur = cjson.decode(row.request).coupon_use_rule or {}
  local all = type(cur[field]) == "table" and cur[field] or default(row)
  local data = {}
  for i = offset * limit + 1, math.min(#all, (offset + 1) * limit) do data[#data + 1] = all[i] end
  return {total_count = #all, offset = offset, limit = limit, stock_id = stock_id, data = util.array(data)}
end

function M.list_merchants(db, _, stock_id, q)
  return stock_list(db, stock_id, q, "available_merchants", 1000, 50, function(row) return {row.creator_mchid} end)
end

function M.list_items(db, _, stock_id, q)
  return stock_list(db, stock_id, q, "available_items", 500, 100, function() return {} end)
end

-- ---- coupons -----------------------------------------------------------

-- coupon_json(c, s) -> the coupon object of query and list answers (c the
-- coupons row, s its stock's): the official query-coupon page's fields,
-- and out_request_no, which real answers carry (WxJava issue #3089,
-- confirmed by WeChat Pay); consume_information only in the COUPON.USE
-- notification (WeChat Pay staff on the developer forum, 2020 and 2021)
local function coupon_json(c, s)
  local req = cjson.decode(s.request)
  local pattern = type(req.pattern_info) == "table" and req.pattern_info or {}
  local status = c.status
  return {
    stock_creator_mchid = s.creator_mchid,
    stock_id = c.stock_id,
    coupon_id = c.coupon_id,
    coupon_name = s.stock_name,
    status = status,
    description = pattern.description or "",
    create_time = format_time(c.create_time),
    coupon_type = "NORMAL",
    no_cash = s.no_cash == 1,
    available_begin_time = format_time(s.begin_time),
    available_end_time = format_time(s.end_time),
    singleitem = singleitem(req),
    normal_coupon_information = {coupon_amount = c.amount, transaction_minimum = c.minimum},
    out_request_no = c.out_request_no,
  }
end

local function coupon_status(c, s, now)
  if c.status == "SENDED" and now > s.end_time then return "EXPIRED" end
  return c.status
end

local COUPON_BASE = 98000000000

-- send_coupon(db, ctx, openid, body) -> {coupon_id}
function M.send_coupon(db, ctx, openid, b)
  local stock_id, err = need_string(b, "stock_id", "stock_id", 20); if not stock_id then return nil, err end
  local out_no; out_no, err = need_string(b, "out_request_no", "out_request_no", 128); if not out_no then return nil, err end
  if not out_no:match(OUT_NO) then
    return param("out_request_no may hold only letters, digits, | _ * -", "out_request_no", out_no)
  end
  local appid; appid, err = need_string(b, "appid", "appid", 32); if not appid then return nil, err end
  local creator; creator, err = need_string(b, "stock_creator_mchid", "stock_creator_mchid", 20); if not creator then return nil, err end
  -- the specified-face-value scenario (指定面额发券) is not open: the
  -- official page says "该字段暂未开放", "常规发券场景请勿传入"
  for _, field in ipairs {"coupon_value", "coupon_minimum"} do
    if b[field] ~= nil then
      return param("仅在指定面额发券场景生效（该字段暂未开放） (only for the specified-face-value scenario, "
        .. "which is not open: leave it out)", field, b[field])
    end
  end
  if appid ~= ctx.appid then
    return fail(400, "APPID_MCHID_NOT_MATCH", "appid is not bound to the calling mchid", "appid", appid)
  end
  return check(db:transaction(function()
    local old = check(db:first("SELECT coupon_id, stock_id, openid FROM coupons WHERE sender_mchid = ? AND out_request_no = ?",
      ctx.mchid, out_no))
    if old then
      if old.stock_id ~= stock_id or old.openid ~= openid then
        return fail(400, "INVALID_REQUEST", "out_request_no was already used for another stock or user", "out_request_no", out_no)
      end
      return {coupon_id = old.coupon_id}
    end
    local s = stock_row(db, stock_id)
    if not s or s.creator_mchid ~= creator then
      return fail(404, "RESOURCE_NOT_EXISTS", "stock does not exist", "stock_id", stock_id)
    end
    if creator ~= ctx.mchid then
      return fail(403, "REQUEST_BLOCKED", "the calling merchant may not issue this stock", "stock_creator_mchid", creator)
    end
    local status = status_of(s, ctx.now)
    if status ~= "running" then
      return fail(400, "INVALID_REQUEST", ("活动已结束或未激活 (the activity has ended or is not activated: stock status %s)")
        :format(status), "stock_id", stock_id)
    end
    if ctx.now < s.begin_time then
      return fail(400, "INVALID_REQUEST", "the activity has not begun (available_begin_time " .. format_time(s.begin_time) .. ")",
        "stock_id", stock_id)
    end
    if ctx.now > s.end_time then
      return fail(400, "INVALID_REQUEST", "the activity has ended (available_end_time " .. format_time(s.end_time) .. ")",
        "stock_id", stock_id)
    end
    local amount, minimum = s.coupon_amount, s.transaction_minimum
    if s.distributed >= s.max_coupons or s.sent_amount + amount > s.max_amount then
      return fail(403, "NOT_ENOUGH", "the stock's budget is used up", "stock_id", stock_id)
    end
    local day = format_time(ctx.now, "%Y%m%d")
    if s.max_amount_by_day then
      local today = check(db:first("SELECT coalesce(sum(amount), 0) AS n FROM coupons WHERE stock_id = ? AND day = ?", stock_id, day)).n
      if today + amount > s.max_amount_by_day then
        return fail(403, "NOT_ENOUGH", "the stock's budget for today is used up", "stock_id", stock_id)
      end
    end
    local mine = check(db:first("SELECT count(*) AS n FROM coupons WHERE openid = ? AND stock_id = ?", openid, stock_id)).n
    if mine >= s.max_per_user then
      return fail(403, "REQUEST_BLOCKED", "the user has reached max_coupons_per_user", "openid", openid)
    end
    local seq = check(db:first("SELECT coalesce(max(seq), 0) + 1 AS n FROM coupons")).n
    local coupon_id = tostring(COUPON_BASE + seq)
    check(db:run([[INSERT INTO coupons (seq, coupon_id, stock_id, openid, appid, sender_mchid, out_request_no, amount, minimum, day,
      create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)]], seq, coupon_id, stock_id, openid, appid, ctx.mchid, out_no, amount,
      minimum, day, ctx.now))
    check(db:run("UPDATE stocks SET distributed = distributed + 1, sent_amount = sent_amount + ? WHERE stock_id = ?", amount, stock_id))
    return {coupon_id = coupon_id}
  end))
end

-- user_coupon(db, coupon_id, openid) -> the coupon row | nil, 404 error
local function user_coupon(db, coupon_id, openid)
  local seq = coupon_id:match("^%d+$") and math.tointeger(tonumber(coupon_id) - COUPON_BASE)
  local c = seq and check(db:first("SELECT * FROM coupons WHERE seq = ? AND openid = ?", seq, openid))
  if not c then return fail(404, "RESOURCE_NOT_EXISTS", "coupon does not exist", "coupon_id", coupon_id) end
  return c
end
M.user_coupon = user_coupon

-- consumption(db, c) -> consume_information of a USED coupon, or nil
local function consumption(db, c)
  if c.status ~= "USED" then return nil end
  local u = check(db:first("SELECT * FROM uses WHERE coupon_id = ?", c.coupon_id))
  if not u then return nil end
  return {consume_time = format_time(u.consume_time), consume_mchid = u.consume_mchid, transaction_id = u.transaction_id}
end

-- use_coupon(db, ctx, body) -> the coupon as a COUPON.USE notification
-- carries it (status USED, consume_information): what a payment that
-- redeems it would do. body: {coupon_id, openid[, transaction_id]}
function M.use_coupon(db, ctx, b)
  local coupon_id, err = need_string(b, "coupon_id", "coupon_id", 20); if not coupon_id then return nil, err end
  local openid; openid, err = need_string(b, "openid", "openid", 128); if not openid then return nil, err end
  local tx = b.transaction_id
  if tx ~= nil and (type(tx) ~= "string" or not tx:match("^%d+$") or #tx > 32) then
    return param("transaction_id must be 1 to 32 digits", "transaction_id", tx)
  end
  return check(db:transaction(function()
    local c, err = user_coupon(db, coupon_id, openid)
    if not c then return nil, err end
    local s = stock_row(db, c.stock_id)
    local status = coupon_status(c, s, ctx.now)
    if status ~= "SENDED" then
      return fail(400, "INVALID_REQUEST", "the coupon is " .. status .. ", not SENDED (usable)", "coupon_id", coupon_id)
    end
    if ctx.now < s.begin_time then
      return fail(400, "INVALID_REQUEST", "the coupon is usable from " .. format_time(s.begin_time), "coupon_id", coupon_id)
    end
    tx = tx or ("4200" .. format_time(ctx.now, "%Y%m%d") .. ("%014d"):format(c.seq))
    return M.consume(db, c, s, ctx.now, ctx.mchid, tx)
  end))
end

-- consume(db, c, s, time, mchid, transaction_id) -> the coupon as a
-- COUPON.USE notification carries it: coupon row c, of stock row s, made
-- USED by a payment at `time` (business clock) to merchant mchid; its
-- consume_information is kept (uses) for the coupon answers
function M.consume(db, c, s, at, mchid, tx)
  check(db:run("UPDATE coupons SET status = 'USED' WHERE seq = ?", c.seq))
  check(db:run("INSERT INTO uses (coupon_id, consume_time, consume_mchid, transaction_id) VALUES (?, ?, ?, ?)",
    c.coupon_id, at, mchid, tx))
  c.status = "USED"
  local j = coupon_json(c, s)
  j.out_request_no = nil -- not in the notification's resource
  j.consume_information = consumption(db, c)
  return j
end

-- get_coupon(db, ctx, openid, coupon_id, query) -> coupon
function M.get_coupon(db, ctx, openid, coupon_id, q)
  local appid, err = need_string(q, "appid", "appid"); if not appid then return nil, err end
  if appid ~= ctx.appid then return fail(400, "APPID_MCHID_NOT_MATCH", "appid is not bound to the calling mchid", "appid", appid) end
  local c; c, err = user_coupon(db, coupon_id, openid)
  if not c then return nil, err end
  local s = stock_row(db, c.stock_id)
  local j = coupon_json(c, s)
  j.status = coupon_status(c, s, ctx.now)
  return j
end

-- given(q, key) -> the query parameter, nil when absent or empty
local function given(q, key)
  local v = q[key]
  if v == nil or v == "" then return nil end
  return v
end

-- usable_at(s, mchid) -> true when coupons of stock row s can be used at
-- merchant mchid (its available_merchants, else its creator)
local function usable_at(s, mchid)
  local cur = cjson.decode(s.request).coupon_use_rule or {}
  local list = type(cur.available_merchants) == "table" and cur.available_merchants or {s.creator_mchid}
  for _, m in ipairs(list) do if m == mchid then return true end end
  return false
end

-- list_coupons(db, ctx, openid, query) -> {total_count, offset, limit, data}
-- As the official pages and the developer forum describe it: a merchant
-- filter is required (creator_mchid, sender_mchid or available_mchid: else
-- 400 PARAM_ERROR 商户号必填); expired coupons are never listed; status
-- SENDED lists the usable ones, USED the usable and the used ones (as no
-- status does); with available_mchid (and no creator_mchid, which wins)
-- the coupons usable there, stock_id, status, offset and limit ignored.
function M.list_coupons(db, ctx, openid, q)
  local appid, err = need_string(q, "appid", "appid"); if not appid then return nil, err end
  if appid ~= ctx.appid then return fail(400, "APPID_MCHID_NOT_MATCH", "appid is not bound to the calling mchid", "appid", appid) end
  local creator, sender, available = given(q, "creator_mchid"), given(q, "sender_mchid"), given(q, "available_mchid")
  if not (creator or sender or available) then
    return param("商户号必填 (one of creator_mchid, sender_mchid, available_mchid is required)", "creator_mchid")
  end
  local offset; offset, err = query_int(q, "offset", 0, 0, 100000); if not offset then return nil, err end
  local limit; limit, err = query_int(q, "limit", 20, 1, 100); if not limit then return nil, err end
  local status = given(q, "status")
  if status and status ~= "SENDED" and status ~= "USED" then
    return param("status must be SENDED or USED (expired coupons are not listed)", "status", status)
  end
  local by_available = available and not creator
  if by_available then offset, limit, status = 0, 20, "SENDED" end
  local args = {openid = openid, stock_id = not by_available and given(q, "stock_id") or nil, creator = creator,
    sender = sender, limit = limit, skip = offset * limit}
  local where = [[c.openid = :openid AND (:stock_id IS NULL OR c.stock_id = :stock_id)
    AND (:creator IS NULL OR s.creator_mchid = :creator) AND (:sender IS NULL OR c.sender_mchid = :sender)]]
  local data, total = {}, 0
  for row in db:rows("SELECT c.* FROM coupons c JOIN stocks s ON s.stock_id = c.stock_id WHERE "
      .. where .. " ORDER BY c.seq", args) do
    local s = stock_row(db, row.stock_id)
    local row_status = coupon_status(row, s, ctx.now)
    local listed = row_status ~= "EXPIRED" and (status ~= "SENDED" or row_status == "SENDED")
      and (not by_available or usable_at(s, available))
    if listed then
      total = total + 1
      if total > offset * limit and #data < limit then
        local j = coupon_json(row, s)
        j.status = row_status
        data[#data + 1] = j
      end
    end
  end
  return {total_count = total, offset = offset, limit = limit, data = util.array(data)}
end

-- ---- callbacks and media ----------------------------------------------

function M.set_callback(db, ctx, b)
  local mchid, err = need_string(b, "mchid", "mchid", 20); if not mchid then return nil, err end
  local url; url, err = need_string(b, "notify_url", "notify_url", 256); if not url then return nil, err end
  if mchid ~= ctx.mchid then return fail(400, "MCH_NOT_EXISTS", "mchid is not the calling merchant", "mchid", mchid) end
  -- https, as WeChat Pay takes; http only to a loopback host, so that a
  -- receiver on this machine (quan serve without TLS) can take them
  local loopback = url:match("^http://127%.%d+%.%d+%.%d+[:/]") or url:match("^http://127%.%d+%.%d+%.%d+$")
    or url:match("^http://localhost[:/]") or url == "http://localhost"
  if not (url:match("^https://[^/?#]+") or loopback) or url:find("?", 1, true) then
    return param("notify_url must be an https URL (or http to a loopback host) without a query", "notify_url", url)
  end
  if b.switch ~= nil and type(b.switch) ~= "boolean" then return param("switch must be a boolean", "switch", b.switch) end
  check(db:run("INSERT INTO callbacks (mchid, notify_url, switch, update_time) VALUES (?, ?, ?, ?) "
    .. "ON CONFLICT (mchid) DO UPDATE SET notify_url = excluded.notify_url, switch = excluded.switch, update_time = excluded.update_time",
    mchid, url, b.switch == nil and 1 or (b.switch and 1 or 0), ctx.now))
  return {update_time = format_time(ctx.now), notify_url = url}
end

function M.get_callback(db, ctx, q)
  local mchid, err = need_string(q, "mchid", "mchid"); if not mchid then return nil, err end
  if mchid ~= ctx.mchid then return fail(400, "MCH_NOT_EXISTS", "mchid is not the calling merchant", "mchid", mchid) end
  local row = check(db:first("SELECT * FROM callbacks WHERE mchid = ?", mchid))
  if not row then return fail(404, "RESOURCE_NOT_EXISTS", "no callback URL is set", "mchid", mchid) end
  return {mchid = mchid, notify_url = row.notify_url}
end

local MAGIC = {
  png = "^\137PNG\r\n\26\n", jpg = "^\255\216\255", jpeg = "^\255\216\255", bmp = "^BM",
}

-- upload_image(db, ctx, meta_table, file_bytes) -> {media_url}
function M.upload_image(db, ctx, meta, file)
  if not file or #file == 0 then return param("the image file is empty", "file") end
  if #file > 2 * 1024 * 1024 then return param("the image is larger than 2 MB", "file", #file) end
  local filename, err = need_string(meta, "filename", "meta.filename", 128); if not filename then return nil, err end
  local sha; sha, err = need_string(meta, "sha256", "meta.sha256", 64); if not sha then return nil, err end
  local ext = filename:match("%.(%w+)$")
  ext = ext and ext:lower()
  if not ext or not MAGIC[ext] or not file:find(MAGIC[ext]) then
    return fail(403, "REQUEST_BLOCKED", "unknown image type (JPG, BMP or PNG only, matching the file name)", "meta.filename", filename)
  end
  if sha:lower() ~= ctx.sha256(file) then
    return fail(403, "REQUEST_BLOCKED", "meta.sha256 does not match the file", "meta.sha256", sha)
  end
  local _, seq = check(db:run("INSERT INTO media (filename, sha256, size, create_time) VALUES (?, ?, ?, ?)", filename, sha:lower(), #file, ctx.now))
  return {media_url = ("https://sandbox.quan.invalid/media/%d/%s.%s"):format(seq, sha:sub(1, 16):lower(), ext)}
end

return M
