-- quan.sandbox.flows: a stock's use-flow and refund-flow files, made of the
-- sandbox's own redemptions (quan.sandbox.redemptions), and their download
-- (docs/sandbox.md, "Flow files").
--
-- GET .../stocks/{stock_id}/use-flow (and refund-flow) answers, as the API
-- does, {url, hash_value (SHA1 of the file), hash_type = "SHA1"}, from
-- 10:00 Beijing time the day after the stock's end (business clock) and
-- when the file has a row; before, or without one, 404 RESOURCE_NOT_EXISTS
-- 账单文件不存在. The url is GET /v3/billdownload/file?token=... on the
-- sandbox, valid 30 s (real time): a signed request, answered with the
-- file's bytes and no signature. The token is the kind, the stock and the
-- expiry, with an HMAC under the APIv3 key: nothing is stored, and every
-- connection thread can check it. Once the files can be had their rows
-- cannot change any more (every redemption lies before the stock's end,
-- every refund before the files are made), so the file is made again for
-- the download, byte for byte.
--
-- The use-flow layout is the API's (a real file of 2020, in
-- /work/notes/fidelity-research.md item 9): a header of 12 columns, then
-- one row per redemption (refunded ones too), the first nine fields with a
-- leading backquote, the last three (设备号, 银行流水号, 单品信息) quoted,
-- amounts in 元 with two decimals, times "YYYY-MM-DD HH:MM:SS" in Beijing
-- time, CRLF line ends, no BOM, and a trailer "总条数" and the count. No
-- source shows a refund-flow file: its layout is the sandbox's own, in the
-- same style (REFUND_COLUMNS).
local M = {}

local crypto = require "quan.crypto"
local qos = require "quan.os"
local store = require "quan.sandbox.store"
local redemptions = require "quan.sandbox.redemptions"
local time = require "quan.time"
local url = require "quan.url"
local cjson = require "cjson"

local concat, floor, type = table.concat, math.floor, type
local fail = store.fail

M.LINK_SECONDS = 30 -- a download URL's life, as the API's

M.USE_COLUMNS = {"批次id", "优惠id", "优惠类型", "优惠金额（元）", "订单总金额（元）", "交易类型", "支付单号", "消耗时间",
  "消耗商户号", "设备号", "银行流水号", "单品信息"}
M.REFUND_COLUMNS = {"批次id", "优惠id", "优惠类型", "优惠金额（元）", "订单总金额（元）", "交易类型", "支付单号", "退款单号",
  "退款时间", "消耗商户号", "设备号", "银行流水号", "单品信息"}

local KINDS = {
  ["use-flow"] = {columns = M.USE_COLUMNS, none = "no redemption",
    rows = "SELECT * FROM redemptions WHERE stock_id = ? AND state = 'done' ORDER BY consume_time, seq"},
  ["refund-flow"] = {columns = M.REFUND_COLUMNS, none = "no refund",
    rows = "SELECT * FROM redemptions WHERE stock_id = ? AND state = 'done' AND refund_id IS NOT NULL ORDER BY refund_time, seq"},
}

local function yuan(fen) return ("%d.%02d"):format(fen // 100, fen % 100) end
local function wall(t) return time.beijing(t, "%Y-%m-%d %H:%M:%S") end

-- coupon_type(s) -> 优惠类型 of stock row s: 全场代金券 (seen in a real
-- file), or 单品代金券 for a stock with available_items (the sandbox's guess)
local function coupon_type(s)
  local cur = cjson.decode(s.request).coupon_use_rule or {}
  return type(cur.available_items) == "table" and #cur.available_items > 0 and "单品代金券" or "全场代金券"
end

-- file(db, s, kind) -> the text of stock row s's file ("use-flow" or
-- "refund-flow") | nil when it has no row
function M.file(db, s, kind)
  local k = KINDS[kind]
  local lines, ctype = {concat(k.columns, ",")}, coupon_type(s)
  for r in db:rows(k.rows, s.stock_id) do
    local f = {r.stock_id, r.coupon_id, ctype, yuan(r.coupon_amount), yuan(r.order_amount)}
    if kind == "use-flow" then
      f[6], f[7], f[8], f[9] = "支付", r.transaction_id, wall(r.consume_time), r.consume_mchid
    else
      f[6], f[7], f[8], f[9], f[10] = "退款", r.transaction_id, r.refund_id, wall(r.refund_time), r.consume_mchid
    end
    lines[#lines + 1] = "`" .. concat(f, ",`") .. ',"","",""' -- no device, bank serial or single-item data
  end
  local n = #lines - 1
  if n == 0 then return nil end
  lines[#lines + 1] = "总条数"
  lines[#lines + 1] = "`" .. n
  return concat(lines, "\r\n") .. "\r\n"
end

-- mac(sandbox, payload) -> the token's HMAC (hex, 32 digits)
local function mac(sandbox, payload)
  return crypto.hmac_sha256(sandbox.apiv3, "quan sandbox flow token " .. payload):sub(1, 32)
end

local function no_file(why)
  return fail(404, "RESOURCE_NOT_EXISTS", "账单文件不存在 (" .. why .. ")")
end

-- link(ex, stock_id, kind) -> {url, hash_value, hash_type} | nil, error:
-- the API's use-flow / refund-flow answer
function M.link(ex, stock_id, kind)
  local db, now = ex.db, ex.ctx.now
  local s = store.stock_row(db, stock_id)
  if not s or s.creator_mchid ~= ex.ctx.mchid then
    return fail(404, "RESOURCE_NOT_EXISTS", "stock does not exist", "stock_id", stock_id)
  end
  local from = redemptions.files_from(s.end_time)
  if now < from then
    return no_file("the stock's files are made at 10:00 Beijing time the day after it ends: " .. time.beijing(from))
  end
  redemptions.settle(ex.sandbox, now) -- all of them: every redemption lies before the stock's end
  local text = M.file(db, s, kind)
  if not text then return no_file(KINDS[kind].none .. " of stock " .. stock_id) end
  local payload = ("%s~%s~%d"):format(kind, stock_id, floor(qos.time()) + M.LINK_SECONDS)
  local host = ex.req.headers.host or "127.0.0.1"
  return {url = "https://" .. host .. "/v3/billdownload/file?token=" .. url.encode(payload .. "~" .. mac(ex.sandbox, payload)),
    hash_value = crypto.sha1(text), hash_type = "SHA1"}
end

-- download(ex) -> {file = bytes} | nil, error: GET /v3/billdownload/file?token=
function M.download(ex)
  local token = ex.query.token
  if type(token) ~= "string" or token == "" then
    return fail(400, "PARAM_ERROR", "token is required (the url of a use-flow or refund-flow answer)", "token")
  end
  local payload, given = token:match("^(.*)~(%x+)$")
  if not payload or not crypto.equals(given, mac(ex.sandbox, payload)) then
    return no_file("no such download token")
  end
  local kind, stock_id, expires = payload:match("^([%a-]+)~(.*)~(%d+)$")
  if qos.time() > tonumber(expires) then
    return no_file("the download link expired (" .. M.LINK_SECONDS .. " s): ask for the flow again")
  end
  local s = KINDS[kind] and store.stock_row(ex.db, stock_id)
  local text = s and M.file(ex.db, s, kind)
  if not text then return no_file("no such download token") end
  return {file = text}
end

-- answer(ex, text, tamper) -> status, headers, body: the file, unsigned (a
-- download carries no Wechatpay-* headers). Of the tamper faults only
-- "body" applies: one digit of the first row changed, so the file still
-- reads but no longer matches its hash_value.
function M.answer(_, text, tamper)
  for _, kind in ipairs(tamper or {}) do
    if kind == "body" then
      local at = text:find("%d", (text:find("\r\n", 1, true) or 0) + 1)
      if at then text = text:sub(1, at - 1) .. (text:sub(at, at) == "0" and "1" or "0") .. text:sub(at + 1) end
    end
  end
  return 200, {["Content-Type"] = "application/octet-stream",
    ["Request-ID"] = crypto.nonce(24):upper() .. "-" .. floor(qos.time())}, text
end

return M
