-- quan.sandbox.handler: the request handler run by quan.server, one instance
-- per worker thread (new(state_dir) -> handler(req) -> status, headers,
-- body). It checks each request as WeChat Pay does, routes it to the store,
-- signs the answer with the platform key and applies the configured faults.
-- outbox(state_dir) -> tick(): what the sandbox's main thread calls
-- between waits: redemptions the business clock reached, COUPON.USE
-- notifications to send or retry.
--
-- The pieces: a Sandbox (here) is what a thread holds of a state dir: its
-- keys, its database, the control settings; an Exchange (here) is one
-- request on its way to its signed answer. The routes are tables of small
-- handlers: the API's in quan.sandbox.api, the sandbox's own control
-- endpoints in quan.sandbox.control; the request signature is checked by
-- quan.sandbox.auth, notifications are sent by quan.sandbox.notify.
local M = {}

local crypto = require "quan.crypto"
local sqlite = require "quan.sqlite"
local check = sqlite.check -- a database failure raises: the request answers 500
local qos = require "quan.os"
local cjson = require "cjson.safe"
local store = require "quan.sandbox.store"
local files = require "quan.sandbox.files"
local url = require "quan.url"
local time = require "quan.time"
local sign = require "wechatpay.sign"
local auth = require "quan.sandbox.auth"
local api = require "quan.sandbox.api"
local control = require "quan.sandbox.control"
local notify = require "quan.sandbox.notify"
local util = require "quan.sandbox.util"
local redemptions = require "quan.sandbox.redemptions"

local floor, tostring, type = math.floor, tostring, type

-- ---- a sandbox: one thread's hold on a state dir ----

local Sandbox = {}
Sandbox.__index = Sandbox

-- open(dir) -> sandbox. Its fields:
--   dir              the state dir
--   id               its identity (quan.sandbox.files.identity: mchid,
--                    appid, serial of the merchant certificate, key_id)
--   merchant         {mchid, serial, public_key}: who may sign requests
--   platform         the platform private key (signs answers, notifications)
--   platform_cert, cert_serial   the platform certificate and its serial
--   apiv3            the APIv3 key (encrypts notifications, certificates)
--   db               the state database
--   control_text, control_settings   the control settings last read (the
--                    text they were decoded from, to see a change)
local function open(dir)
  assert(type(dir) == "string", "quan.sandbox.handler: state dir expected")
  local id = files.identity(dir)
  local merchant_key = assert(crypto.certificate("file://" .. dir .. "/merchant.pem")):public_key()
  local platform = assert(crypto.private_key("file://" .. dir .. "/platform.key.pem"))
  local apiv3 = assert(require("quan.path").read(dir .. "/apiv3.key")):gsub("%s+$", "")
  local platform_cert = files.platform_certificate(dir, true)
  return setmetatable({
    dir = dir, id = id,
    merchant = {mchid = id.mchid, serial = id.serial, public_key = merchant_key},
    platform = platform, apiv3 = apiv3,
    platform_cert = platform_cert, cert_serial = platform_cert:serial():upper(),
    -- no mmap_size: with several connections each one remapped the growing
    -- file about once per request (munmap, a TLB shootdown on every core)
    db = assert(sqlite.open(dir .. "/sandbox.db", {busy_timeout = 20000, process_lock = true})),
  }, Sandbox)
end

-- sandbox:control() -> {faults, clock_offset, key_mode, notify =
-- {retry_interval, retries, signed_by}}: the control settings (read again
-- when changed). signed_by, unless set, follows the key mode: the
-- certificate for a merchant in certificate mode, else the public key.
function Sandbox:control()
  local text = store.get_control(self.db)
  if text ~= self.control_text then
    self.control_text = text
    local c = cjson.decode(text) or {}
    local n = type(c.notify) == "table" and c.notify or {}
    local mode = c.key_mode or files.DEFAULT_KEY_MODE
    self.control_settings = {faults = c.faults or {}, clock_offset = c.clock_offset or 0, key_mode = mode,
      time_fraction = c.time_fraction or "none",
      notify = {retry_interval = n.retry_interval or notify.RETRY_INTERVAL, retries = n.retries or notify.RETRIES,
        signed_by = n.signed_by or (mode == "certificate" and "certificate" or "public_key")}}
  end
  return self.control_settings
end

-- sandbox:update_control(change): change(settings) edits the stored control
-- settings (a table as stored) in one transaction; they are written unless
-- change returns false
function Sandbox:update_control(change)
  local db = self.db
  check(db:transaction(function()
    local cur = cjson.decode(store.get_control(db)) or {}
    if change(cur) == false then return end
    store.set_control(db, cur)
  end))
end

-- sandbox:sign(status, body[, tamper[, serial]]) -> status, headers, body:
-- an answer signed with the platform key under serial (default: the
-- PUB_KEY_ID), spoiled as the tamper faults say ("timestamp", "serial",
-- "signature", "body")
function Sandbox:sign(status, body, tamper_kinds, serial)
  local ts = tostring(floor(qos.time()))
  local nonce = crypto.sha256(crypto.random_bytes(16)):sub(1, 32)
  serial = serial or self.id.key_id
  local sent_body = body
  if tamper_kinds then
    for _, kind in ipairs(tamper_kinds) do
      if kind == "timestamp" then ts = tostring(floor(qos.time()) - 3600)
      elseif kind == "serial" then serial = "PUB_KEY_ID_0000000000000000000000000000"
      end
    end
  end
  local platform = self.platform
  local sig = platform:sign(sign.response_message(ts, nonce, body))
  if tamper_kinds then
    for _, kind in ipairs(tamper_kinds) do
      if kind == "signature" then
        sig = platform:sign(sign.response_message(ts, nonce, body .. " "))
      elseif kind == "body" then
        sent_body = body:gsub('"', "'", 1)
        if sent_body == body then sent_body = body .. " " end
      end
    end
  end
  return status, {
    ["Content-Type"] = "application/json",
    ["Request-ID"] = crypto.nonce(24):upper() .. "-" .. ts,
    ["Wechatpay-Timestamp"] = ts,
    ["Wechatpay-Nonce"] = nonce,
    ["Wechatpay-Signature"] = sig,
    ["Wechatpay-Serial"] = serial,
    ["Wechatpay-Signature-Type"] = sign.SCHEME,
  }, sent_body
end

-- ---- an exchange: one request and its answer ----

local Exchange = {}
Exchange.__index = Exchange

-- new_exchange(sandbox, req) -> exchange. Its fields:
--   sandbox, db      the sandbox serving it, and its database
--   req              the request (method, path with query, headers, body)
--   path, query      the path without the query, the query's values
--   control          the control settings as the request came
--   serial           the serial its answer is signed under (nil: the
--                    PUB_KEY_ID)
-- The API's pipeline (quan.sandbox.api) adds route, params, auth, body,
-- parts and ctx.
local function new_exchange(sandbox, req)
  local path, query = url.split(req.path)
  return setmetatable({sandbox = sandbox, db = sandbox.db, req = req, path = path, query = query,
    control = sandbox:control()}, Exchange)
end

-- exchange:now() -> the business clock (epoch seconds, whole): the time
-- plus the control clock's offset
function Exchange:now()
  return floor(qos.time() + (self.control.clock_offset or 0))
end

-- exchange:answer(status, text[, tamper]) -> status, headers, body: the
-- answer, signed; its Date is the business clock, the API's own time (the
-- request's, which a coupon sent by it has as its create_time), while
-- Wechatpay-Timestamp stays real time, which clients check against theirs
function Exchange:answer(status, text, tamper)
  local code, headers, body = self.sandbox:sign(status, text, tamper, self.serial)
  headers.Date = time.http(self.ctx and self.ctx.now or self:now())
  return code, headers, body
end

local function json_pointer(field)
  if not field or field == "" then return nil end
  return "/" .. field:gsub("%.", "/"):gsub("%[%]", "")
end

-- error_body(err, location) -> JSON text {code, message, detail}
local function error_body(err, location)
  local detail
  if err.field then
    detail = {field = location == "body" and json_pointer(err.field) or err.field, issue = err.message,
      location = location or "body"}
    if err.value ~= nil and type(err.value) ~= "table" then detail.value = err.value end
  end
  if err.detail then detail = err.detail end
  return cjson.encode {code = err.code, message = err.message, detail = detail}
end

-- exchange:fail(err[, location[, tamper]]) -> status, headers, body: the
-- error answer of err ({status, code, message, field, value, detail});
-- location ("body" by default, "query") says where err.field is
function Exchange:fail(err, location, tamper)
  return self:answer(err.status, error_body(err, location), tamper)
end

-- exchange:json_object() -> table | nil, error table: a control request's
-- body, a JSON object (empty means {})
function Exchange:json_object()
  local b, err = util.decode(self.req.body ~= "" and self.req.body or "{}")
  if type(b) ~= "table" or b[1] ~= nil then
    return nil, {status = 400, code = "PARAM_ERROR", message = "body must be a JSON object" .. (err and (": " .. err) or "")}
  end
  return b
end

-- ---- the handler ----

-- answer_serial(sandbox, mode, req) -> the serial an API answer is signed
-- under in key mode `mode` (nil: the PUB_KEY_ID). A merchant in the
-- middle of the switch between the two (switching) is answered under the
-- PUB_KEY_ID when the request's Wechatpay-Serial names it, else (another
-- serial, or none) under the certificate's.
local function answer_serial(sandbox, mode, req)
  if mode == "certificate" then return sandbox.cert_serial end
  if mode == "switching" and req.headers["wechatpay-serial"] ~= sandbox.id.key_id then return sandbox.cert_serial end
  return nil
end

-- handle(sandbox, req) -> status, headers, body | "drop"
-- The control endpoints (/sandbox/...) answer unsigned requests, signed
-- under the key mode's key (the certificate in certificate mode, else the
-- PUB_KEY_ID); the API's answers as answer_serial says.
local function handle(sandbox, req)
  local ex = new_exchange(sandbox, req)
  local mode = ex.control.key_mode
  if ex.path:sub(1, 9) == "/sandbox/" then
    ex.serial = mode == "certificate" and sandbox.cert_serial or nil
    return control.handle(ex)
  end
  ex.serial = answer_serial(sandbox, mode, req)
  return api.handle(ex)
end

function M.new(dir)
  local sandbox = open(dir)
  return function(req) return handle(sandbox, req) end
end

-- outbox(dir) -> tick() -> the number of notification attempts made: the
-- main thread's work between waits: the redemptions the business clock
-- has reached (quan.sandbox.redemptions), then the notifications due, for up to
-- 0.1 s (quan.sandbox.notify)
function M.outbox(dir)
  local sandbox = open(dir)
  return function()
    redemptions.settle(sandbox, floor(qos.time() + sandbox:control().clock_offset), 500)
    return notify.run_due(sandbox, 0.1)
  end
end

return M
