-- quan.sandbox.control: the sandbox's own endpoints (/sandbox/...: health,
-- faults, the business clock, using a coupon, redemptions (their handlers
-- in quan.sandbox.redemptions), notification retries, the count of API
-- requests),
-- unsigned requests answered under the PUB_KEY_ID. ROUTES maps a path to
-- its handlers by method; ANY serves the methods not named. A handler is
-- handler(exchange) -> status, headers, body (see quan.sandbox.handler for
-- the exchange).
local M = {}

local qos = require "quan.os"
local cjson = require "cjson.safe"
local store = require "quan.sandbox.store"
local util = require "quan.sandbox.util"
local time = require "quan.time"
local notify = require "quan.sandbox.notify"
local redemptions = require "quan.sandbox.redemptions"

local floor, tostring, type = math.floor, tostring, type

local function param_error(message, field)
  return {status = 400, code = "PARAM_ERROR", message = message, field = field}
end

local function health(ex)
  local sandbox = ex.sandbox
  return ex:answer(200, cjson.encode {ok = true, mchid = sandbox.id.mchid, appid = sandbox.id.appid,
    now = time.beijing(qos.time() + ex.control.clock_offset)})
end

local function show_faults(ex)
  return ex:answer(200, cjson.encode {faults = util.format_faults(ex.control.faults)})
end

-- POST /sandbox/faults {"spec": "error500=0.05,..."} (or the faults as the
-- object's fields)
local function set_faults(ex)
  local b, berr = ex:json_object()
  if not b then return ex:fail(berr) end
  local spec = b.spec
  if spec == nil then
    local items = {}
    for k, v in pairs(b) do items[#items + 1] = k .. "=" .. tostring(v) end
    spec = table.concat(items, ",")
  end
  local f, err = util.parse_faults(spec)
  if not f then return ex:fail(param_error(err, "spec")) end
  ex.sandbox:update_control(function(cur) cur.faults = f end)
  return ex:answer(200, cjson.encode {faults = util.format_faults(f)})
end

local function show_clock(ex)
  local offset = ex.control.clock_offset
  return ex:answer(200, cjson.encode {now = time.beijing(qos.time() + offset), offset_seconds = offset})
end

-- POST /sandbox/clock {"advance_seconds": n} moves the business clock
-- forward; {"reset": true} back to the real time
local function move_clock(ex)
  local b, berr = ex:json_object()
  if not b then return ex:fail(berr) end
  local offset
  ex.sandbox:update_control(function(cur)
    offset = cur.clock_offset or 0
    if b.advance_seconds ~= nil then
      if type(b.advance_seconds) ~= "number" or b.advance_seconds < 0 then
        offset = nil
        return false
      end
      offset = offset + b.advance_seconds
    elseif b.reset then
      offset = 0
    end
    cur.clock_offset = offset
  end)
  if not offset then
    return ex:fail(param_error("advance_seconds must be a number >= 0 (the clock only moves forward)", "advance_seconds"))
  end
  return ex:answer(200, cjson.encode {now = time.beijing(qos.time() + offset), offset_seconds = offset})
end

-- POST /sandbox/coupons/use: uses a coupon as a shop's payment would, and
-- notifies the callback URL (COUPON.USE)
local function use_coupon(ex)
  local b, berr = ex:json_object()
  if not b then return ex:fail(berr) end
  if b.ca_file ~= nil and type(b.ca_file) ~= "string" then
    return ex:fail(param_error("ca_file must be a path", "ca_file"))
  end
  local sandbox = ex.sandbox
  local now = floor(qos.time() + ex.control.clock_offset)
  local coupon, err = redemptions.use_one(ex.db, {mchid = sandbox.id.mchid, appid = sandbox.id.appid, now = now}, b)
  if not coupon then return ex:fail(err) end
  local note = notify.notification(sandbox, coupon, now)
  return ex:answer(200, util.encode {coupon = coupon, notification = note,
    delivery = notify.deliver(sandbox, note, b.ca_file)})
end

-- GET /sandbox/notifications: the retry policy and the latest deliveries
local function show_notifications(ex)
  local policy = ex.sandbox:control().notify
  return ex:answer(200, util.encode {retry_interval = policy.retry_interval, retries = policy.retries,
    signed_by = policy.signed_by, data = util.array(notify.recent(ex.sandbox))})
end

-- POST /sandbox/notifications {retry_interval, retries, signed_by}: sets
-- the retry policy, then answers as GET
local function set_notifications(ex)
  local b, berr = ex:json_object()
  if not b then return ex:fail(berr) end
  local interval, retries, signed_by = b.retry_interval, b.retries, b.signed_by
  if signed_by ~= nil and signed_by ~= "public_key" and signed_by ~= "certificate" then
    return ex:fail(param_error("signed_by must be public_key or certificate", "signed_by"))
  end
  if interval ~= nil and (type(interval) ~= "number" or not (interval >= 0 and interval <= 86400)) then
    return ex:fail(param_error("retry_interval must be seconds from 0 to 86400", "retry_interval"))
  end
  if retries ~= nil and (type(retries) ~= "number" or retries % 1 ~= 0 or not (retries >= 0 and retries <= 100)) then
    return ex:fail(param_error("retries must be a whole number from 0 to 100", "retries"))
  end
  ex.sandbox:update_control(function(cur)
    local n = type(cur.notify) == "table" and cur.notify or {}
    if interval ~= nil then n.retry_interval = interval end
    if retries ~= nil then n.retries = floor(retries) end
    if signed_by ~= nil then n.signed_by = signed_by end
    cur.notify = n
  end)
  return show_notifications(ex)
end

-- GET /sandbox/requests: the API requests served, by method and path
-- template; POST {"reset": true} sets them to zero, then answers as GET
local function show_requests(ex)
  return ex:answer(200, util.encode(store.request_counts(ex.db)))
end

local function reset_requests(ex)
  local b, berr = ex:json_object()
  if not b then return ex:fail(berr) end
  if b.reset ~= true then return ex:fail(param_error("the only request is {\"reset\": true}", "reset")) end
  store.reset_requests(ex.db)
  return show_requests(ex)
end

M.ROUTES = {
  ["/sandbox/health"] = {ANY = health},
  ["/sandbox/faults"] = {POST = set_faults, ANY = show_faults},
  ["/sandbox/clock"] = {POST = move_clock, ANY = show_clock},
  ["/sandbox/coupons/use"] = {POST = use_coupon},
  ["/sandbox/notifications"] = {POST = set_notifications, ANY = show_notifications},
  ["/sandbox/redemptions"] = {POST = redemptions.post, ANY = redemptions.get},
  ["/sandbox/requests"] = {POST = reset_requests, ANY = show_requests},
}

-- handle(ex) -> status, headers, body
function M.handle(ex)
  local methods = M.ROUTES[ex.path]
  local handler = methods and (methods[ex.req.method] or methods.ANY)
  if not handler then
    return ex:fail({status = 404, code = "NOT_FOUND", message = "no such sandbox endpoint: " .. ex.path})
  end
  return handler(ex)
end

return M
