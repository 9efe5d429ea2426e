-- quan.sandbox.notify: COUPON.USE notifications, sent to the merchant's
-- callback URL as WeChat Pay sends them, and retried.
--
-- The outbox: a notification to deliver is a row of `notifications`. The
-- first attempt is made at once, inside /sandbox/coupons/use (or, for a
-- redemption of quan.sandbox.redemptions, by the main thread: enqueue); when the
-- receiver does not answer 2xx, the main thread retries it (run_due) every
-- retry_interval seconds, up to `retries` times. Every attempt is signed
-- anew (fresh timestamp and nonce) over the same body: a receiver sees the
-- same event id again, as from WeChat Pay. A row's next_at is pushed past
-- the attempt's timeout before the attempt (LEASE), so a sandbox killed
-- meanwhile retries it after a restart. A callback switched off (or
-- removed) ends the retries of what was sent to it.
--
-- Every function takes the sandbox (quan.sandbox.handler) whose state dir
-- holds the outbox.
local M = {}

local crypto = require "quan.crypto"
local check = require("quan.sqlite").check -- a database failure raises: the request answers 500
local qos = require "quan.os"
local cjson = require "cjson.safe"
local util = require "quan.sandbox.util"
local time = require "quan.time"

local floor = math.floor

-- COUPON.USE retries: "once a minute, 9 times" (the official page of the
-- coupon-use notification, pay.weixin.qq.com/docs/merchant/apis/cash-coupons/
-- ... check-notice; docs/notifications.md);
-- POST /sandbox/notifications changes both for a state dir
M.RETRY_INTERVAL, M.RETRIES = 60, 9
local DELIVERY_TIMEOUT = 5 -- seconds a receiver has to answer
-- how long an attempt holds its row: a thread that died mid-attempt (a
-- killed sandbox) leaves it to be retried after this; far longer than an
-- attempt can take, so no two threads ever attempt one row at once
local LEASE = 60

-- serial(sandbox) -> the serial notifications are signed under: the
-- PUB_KEY_ID, or the platform certificate's for a merchant in certificate
-- mode (policy signed_by)
local function serial(sandbox)
  return sandbox:control().notify.signed_by == "certificate" and sandbox.cert_serial or sandbox.id.key_id
end

-- event_id() -> a new event id in the form of real ones: a UUID
-- (8-4-4-4-12 lower-case hex; random, version 4)
local function event_id()
  local b = {crypto.random_bytes(16):byte(1, 16)}
  b[7] = (b[7] & 0x0f) | 0x40
  b[9] = (b[9] & 0x3f) | 0x80
  local hex = ("%02x"):rep(16):format(table.unpack(b))
  return ("%s-%s-%s-%s-%s"):format(hex:sub(1, 8), hex:sub(9, 12), hex:sub(13, 16), hex:sub(17, 20), hex:sub(21, 32))
end
M.event_id = event_id

-- event_body(sandbox, coupon, now[, times]) -> the body of the coupon-use
-- event as WeChat Pay POSTs it: its envelope as a real one of 2021 (a UUID
-- id, summary 代金券核销通知), the coupon encrypted with the APIv3 key
-- (AEAD_AES_256_GCM, associated data "coupon"). times(value) -> value
-- rewrites the times of the envelope and the coupon (the control setting
-- time_fraction).
function M.event_body(sandbox, coupon, now, times)
  times = times or util.times(sandbox:control().time_fraction)
  local nonce = crypto.nonce(12)
  return util.encode(times {
    id = event_id(),
    create_time = time.beijing(now),
    resource_type = "encrypt-resource",
    event_type = "COUPON.USE",
    summary = "代金券核销通知",
    resource = {
      original_type = "coupon", algorithm = "AEAD_AES_256_GCM", associated_data = "coupon", nonce = nonce,
      ciphertext = crypto.aes_gcm_encrypt(sandbox.apiv3, nonce, "coupon", util.encode(times(coupon))),
    },
  })
end

-- notification(sandbox, coupon, now[, times]) -> {headers, body}: the
-- event body, signed with the platform key
function M.notification(sandbox, coupon, now, times)
  local body = M.event_body(sandbox, coupon, now, times)
  local _, headers = sandbox:sign(200, body, nil, serial(sandbox))
  return {headers = headers, body = body}
end

-- attempt(sandbox, row) -> delivery {notify_url, attempts, state, status |
-- error[, retry_in_seconds]}; nil when the callback was switched off or
-- changed since (the row is failed, no more retries)
local function attempt(sandbox, row)
  local db, now = sandbox.db, qos.time()
  check(db:run("UPDATE notifications SET next_at = ? WHERE event_id = ?", now + LEASE, row.event_id))
  if row.attempts > 0 then
    local cb = check(db:first("SELECT switch FROM callbacks WHERE mchid = ? AND notify_url = ?", sandbox.id.mchid, row.notify_url))
    if not cb or cb.switch == 0 then
      check(db:run("UPDATE notifications SET state = 'failed', next_at = NULL, last_error = ?, update_time = ? WHERE event_id = ?",
        "callback switched off or changed: no more retries", floor(now), row.event_id))
      return
    end
  end
  local _, headers = sandbox:sign(200, row.body, nil, serial(sandbox))
  local list = {}
  for k, v in pairs(headers) do list[#list + 1] = k .. ": " .. v end
  table.sort(list)
  local res, err = require("quan.http").request {
    method = "POST", url = row.notify_url, headers = list, body = row.body, timeout = DELIVERY_TIMEOUT,
    cafile = row.ca_file or (sandbox.dir .. "/ca.pem"),
  }
  local attempts = row.attempts + 1
  local delivered = res and res.status >= 200 and res.status < 300
  local policy = sandbox:control().notify
  local wait = not delivered and attempts <= policy.retries and policy.retry_interval or nil
  local state = delivered and "delivered" or (wait and "pending" or "failed")
  check(db:run("UPDATE notifications SET attempts = attempts + 1, state = ?, next_at = ?, last_status = ?, last_error = ?, "
    .. "update_time = ? WHERE event_id = ?", state, wait and qos.time() + wait, res and res.status,
    not res and err or nil, floor(qos.time()), row.event_id))
  return {notify_url = row.notify_url, attempts = attempts, state = state, status = res and res.status,
    error = not res and err or nil, retry_in_seconds = wait}
end

-- insert(sandbox, body, ca_file, next_at) -> the outbox row of a new
-- notification (attempts 0) to the callback URL | nil when no callback URL
-- is set or it is switched off
local function insert(sandbox, body, ca_file, next_at)
  local db = sandbox.db
  local cb = check(db:first("SELECT notify_url, switch FROM callbacks WHERE mchid = ?", sandbox.id.mchid))
  if not cb or cb.switch == 0 then return nil end
  local row = {event_id = cjson.decode(body).id, notify_url = cb.notify_url, body = body, ca_file = ca_file, attempts = 0}
  local now = floor(qos.time())
  check(db:run("INSERT INTO notifications (event_id, notify_url, body, ca_file, attempts, state, next_at, create_time, update_time) "
    .. "VALUES (?, ?, ?, ?, 0, 'pending', ?, ?, ?)", row.event_id, row.notify_url, body, ca_file, next_at, now, now))
  return row
end

-- deliver(sandbox, note, ca_file) -> what happened, for the control answer:
-- nil when no callback URL is set (or it is switched off), else the first
-- attempt's delivery
function M.deliver(sandbox, note, ca_file)
  local row = insert(sandbox, note.body, ca_file, qos.time() + LEASE)
  return row and attempt(sandbox, row)
end

-- enqueue(sandbox, body, ca_file) -> true when a notification with this
-- event body is kept for the callback URL, its first attempt due now (made
-- by run_due); nil when no callback URL is set or it is switched off
function M.enqueue(sandbox, body, ca_file)
  return insert(sandbox, body, ca_file, qos.time()) and true
end

-- run_due(sandbox[, budget]) -> the number of attempts made: the due ones,
-- oldest first, until none is left or `budget` seconds (default 0: one
-- attempt) have passed; an attempt may wait DELIVERY_TIMEOUT, and the
-- caller's wait checks for signals between calls
function M.run_due(sandbox, budget)
  local deadline, n = qos.now() + (budget or 0), 0
  repeat
    local row = check(sandbox.db:first("SELECT * FROM notifications WHERE next_at IS NOT NULL AND next_at <= ? ORDER BY next_at LIMIT 1",
      qos.time()))
    if not row then break end
    attempt(sandbox, row)
    n = n + 1
  until qos.now() >= deadline
  return n
end

-- recent(sandbox) -> the latest 100 notifications, newest first: {event_id,
-- notify_url, state, attempts, status, error, retry_in_seconds}
function M.recent(sandbox)
  local list, now = {}, qos.time()
  for row in sandbox.db:rows("SELECT * FROM notifications ORDER BY create_time DESC, rowid DESC LIMIT 100") do
    list[#list + 1] = {event_id = row.event_id, notify_url = row.notify_url, state = row.state, attempts = row.attempts,
      status = row.last_status, error = row.last_error,
      retry_in_seconds = row.state == "pending" and row.next_at and math.max(0, row.next_at - now) or nil}
  end
  return list
end

return M
