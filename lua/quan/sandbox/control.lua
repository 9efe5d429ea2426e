-- quan.sandbox.control: the sandbox's own endpoints (/sandbox/...: health,
-- quan.sandbox.control: the sandbox's own endpoints (/sandbox/...: health,
-- faults, the business clock, using a coupon, redemptions (their handlers
-- in quan.sandbox.redemptions), notification retries, the form of times,
-- the count of API requests),
-- unsigned requests answered under the key mode's key. ROUTES maps a path to
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

local function param_error(message, field, value)
  return {status = 400, code = "PARAM_ERROR", message = field .. ": " .. message, field = field, value = value}
end

-- the bounds of the control values: the business clock at most a century
-- ahead of real time (its times stay four-digit years) and, set back on a
-- sandbox without stocks, at most ten years behind; an injected latency at
-- most half a minute (past that a client's timeout answers)
M.MAX_CLOCK_OFFSET = 100 * 365 * 86400
M.MAX_CLOCK_BACK = 10 * 365 * 86400
M.MAX_LATENCY = 30
M.TIME_FRACTIONS = {none = true, millis = true}

-- unknown_field(b, known) -> the first field of b (sorted) not in known
local function unknown_field(b, known)
  local names = {}
  for k in pairs(b) do if not known[k] then names[#names + 1] = tostring(k) end end
  table.sort(names)
  return names[1]
end

-- fields(ex, known) -> the control request's JSON object | nil, error
-- table: every field must be one of known (a misspelt one would otherwise
-- do nothing)
local function fields(ex, known)
  local b, berr = ex:json_object()
  if not b then return nil, berr end
  local unknown = unknown_field(b, known)
  if unknown then
    local names = {}
    for k in pairs(known) do names[#names + 1] = k end
    table.sort(names)
    return nil, param_error("unknown field (this endpoint takes " .. table.concat(names, ", ") .. ")", unknown)
  end
  return b
end

-- whole(v) -> true when v is a number without a fraction (JSON numbers
-- come as floats)
local function whole(v)
  return type(v) == "number" and v == math.floor(v)
end

-- valid_offset(v) -> true when v can be the business clock's offset
local function valid_offset(v)
  return whole(v) and v >= -M.MAX_CLOCK_BACK and v <= M.MAX_CLOCK_OFFSET
end

-- repair(settings) -> notes: puts each stored control value that is out of
-- its bounds (as an older sandbox could store them) back to its default,
-- and says what it changed; run at start, so that a bad value never
-- breaks every endpoint of a state
function M.repair(cur)
  local notes = {}
  if cur.clock_offset ~= nil and not valid_offset(cur.clock_offset) then
    notes[#notes + 1] = "business clock offset " .. tostring(cur.clock_offset) .. " s out of bounds: reset to real time"
    cur.clock_offset = 0
  end
  if cur.time_fraction ~= nil and not M.TIME_FRACTIONS[cur.time_fraction] then
    notes[#notes + 1] = "time_fraction " .. tostring(cur.time_fraction) .. " unknown: reset to none"
    cur.time_fraction = nil
  end
  local n = cur.notify
  if n ~= nil and type(n) ~= "table" then
    notes[#notes + 1] = "notification policy unreadable: reset to the default"
    cur.notify = nil
  elseif n then
    local i, r = n.retry_interval, n.retries
    if i ~= nil and not (type(i) == "number" and i >= 0 and i <= 86400) then n.retry_interval = nil end
    if r ~= nil and not (whole(r) and r >= 0 and r <= 100) then n.retries = nil end
    if n.signed_by ~= nil and n.signed_by ~= "public_key" and n.signed_by ~= "certificate" then n.signed_by = nil end
  end
  return notes
end

local function health(ex)
  local sandbox = ex.sandbox
  return ex:answer(200, cjson.encode {ok = true, mchid = sandbox.id.mchid, appid = sandbox.id.appid,
    now = time.beijing(qos.time() + ex.control.clock_offset), key_mode = ex.control.key_mode})
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
    for k, v in pairs(b) do
      if type(v) ~= "string" and type(v) ~= "number" then
        return ex:fail(param_error("a fault's value is a number or a string like 20ms", tostring(k)))
      end
      items[#items + 1] = k .. "=" .. tostring(v)
    end
    spec = table.concat(items, ",")
  else
    local other = unknown_field(b, {spec = true})
    if other then return ex:fail(param_error("give the faults as spec or as fields, not both", other)) end
    if type(spec) ~= "string" then return ex:fail(param_error("must be a string like \"error429=0.1\"", "spec")) end
  end
  local f, err = util.parse_faults(spec)
  if not f then return ex:fail(param_error(err, "spec")) end
  if f.latency and f.latency > M.MAX_LATENCY then
    return ex:fail(param_error(("faults: latency at most %ds"):format(M.MAX_LATENCY), "spec"))
  end
  ex.sandbox:update_control(function(cur) cur.faults = f end)
  return ex:answer(200, cjson.encode {faults = util.format_faults(f)})
end

local function clock_answer(ex, offset)
  return ex:answer(200, cjson.encode {now = time.beijing(qos.time() + offset), offset_seconds = offset})
end

local function show_clock(ex)
  return clock_answer(ex, ex.control.clock_offset)
end

-- POST /sandbox/clock {"advance_seconds": n} moves the business clock
-- forward (whole seconds, at most MAX_CLOCK_OFFSET ahead of real time in
-- all), or back (n < 0) while the sandbox holds no stock, so that a
-- rehearsal starts on a date of its own (at most MAX_CLOCK_BACK behind real
-- time); {"reset": true} back to the real time. A refused request changes
-- nothing.
local function move_clock(ex)
  local b, err = fields(ex, {advance_seconds = true, reset = true})
  if not b then return ex:fail(err) end
  local advance, reset = b.advance_seconds, b.reset
  if reset ~= nil and reset ~= true then
    return ex:fail(param_error("the only value is true (back to real time)", "reset", reset))
  end
  if reset and advance ~= nil then
    return ex:fail(param_error("not together with reset", "advance_seconds", advance))
  end
  local span = M.MAX_CLOCK_OFFSET + M.MAX_CLOCK_BACK
  if advance ~= nil and not (whole(advance) and advance >= -span and advance <= span) then
    return ex:fail(param_error(("must be whole seconds from %d to %d"):format(-span, span), "advance_seconds", advance))
  end
  local offset, refusal
  ex.sandbox:update_control(function(cur)
    offset = valid_offset(cur.clock_offset) and cur.clock_offset or 0
    if reset then
      offset = 0
    elseif advance then
      local to = math.tointeger(offset + advance)
      if to > M.MAX_CLOCK_OFFSET then
        refusal = ("would put the business clock more than %d s ahead of real time (it is %d s ahead)")
          :format(M.MAX_CLOCK_OFFSET, offset)
      elseif to < -M.MAX_CLOCK_BACK then
        refusal = ("would put the business clock more than %d s behind real time"):format(M.MAX_CLOCK_BACK)
      elseif advance < 0 and ex.sandbox.db:first("SELECT 1 AS x FROM stocks LIMIT 1") then
        refusal = "the clock moves back only while the sandbox holds no stock (reset goes back to real time)"
      end
      if refusal then return false end
      offset = to
    end
    cur.clock_offset = offset
  end)
  if refusal then return ex:fail(param_error(refusal, "advance_seconds", advance)) end
  return clock_answer(ex, offset)
end

-- GET /sandbox/format -> {time_fraction}; POST {"time_fraction": "none" |
-- "millis"}: the API's times without a fraction of a second (what its
-- answers carry) or with milliseconds (what its docs' examples show)
local function show_format(ex)
  return ex:answer(200, cjson.encode {time_fraction = ex.control.time_fraction})
end

local function set_format(ex)
  local b, err = fields(ex, {time_fraction = true})
  if not b then return ex:fail(err) end
  local fraction = b.time_fraction
  if fraction ~= nil and not M.TIME_FRACTIONS[fraction] then
    return ex:fail(param_error("must be none or millis", "time_fraction", fraction))
  end
  if fraction ~= nil then
    ex.sandbox:update_control(function(cur) cur.time_fraction = fraction ~= "none" and fraction or nil end)
  end
  return ex:answer(200, cjson.encode {time_fraction = fraction or ex.control.time_fraction})
end

-- POST /sandbox/coupons/use: uses a coupon as a shop's payment would, and
-- notifies the callback URL (COUPON.USE)
local function use_coupon(ex)
  local b, berr = ex:json_object()
  if not b then return ex:fail(berr) end
  if b.ca_file ~= nil and type(b.ca_file) ~= "string" then
    return ex:fail(param_error("must be a path", "ca_file"))
  end
  local sandbox = ex.sandbox
  local now = floor(qos.time() + ex.control.clock_offset)
  local coupon, err = redemptions.use_one(ex.db, {mchid = sandbox.id.mchid, appid = sandbox.id.appid, now = now}, b)
  if not coupon then return ex:fail(err) end
  local note = notify.notification(sandbox, coupon, now, util.times(ex.control.time_fraction))
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
  local b, err = fields(ex, {retry_interval = true, retries = true, signed_by = true})
  if not b then return ex:fail(err) end
  local interval, retries, signed_by = b.retry_interval, b.retries, b.signed_by
  if signed_by ~= nil and signed_by ~= "public_key" and signed_by ~= "certificate" then
    return ex:fail(param_error("must be public_key or certificate", "signed_by", signed_by))
  end
  if interval ~= nil and (type(interval) ~= "number" or not (interval >= 0 and interval <= 86400)) then
    return ex:fail(param_error("must be seconds from 0 to 86400", "retry_interval", interval))
  end
  if retries ~= nil and (type(retries) ~= "number" or retries % 1 ~= 0 or not (retries >= 0 and retries <= 100)) then
    return ex:fail(param_error("must be a whole number from 0 to 100", "retries", retries))
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
  local b, err = fields(ex, {reset = true})
  if not b then return ex:fail(err) end
  if b.reset ~= true then return ex:fail(param_error("the only request is {\"reset\": true}", "reset", b.reset)) end
  store.reset_requests(ex.db)
  return show_requests(ex)
end

M.ROUTES = {
  ["/sandbox/health"] = {ANY = health},
  ["/sandbox/faults"] = {POST = set_faults, ANY = show_faults},
  ["/sandbox/clock"] = {POST = move_clock, ANY = show_clock},
  ["/sandbox/coupons/use"] = {POST = use_coupon},
  ["/sandbox/notifications"] = {POST = set_notifications, ANY = show_notifications},
  ["/sandbox/format"] = {POST = set_format, ANY = show_format},
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
