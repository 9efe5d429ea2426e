-- quan.serve.receiver: the quan.server handler of `quan serve`, the answer
-- path of WeChat Pay's notifications (docs/notifications.md).
--
-- new(arg) runs once in each worker's Lua state (arg: JSON of {store,
-- client = the options of wechatpay.new from the profile the receiver read,
-- log_format}) and returns handler(req):
--   GET /health  -> 200 {ok, events, pending, failing, oldest_pending_seconds}
--   POST (any path) -> the checks of wx:notification with the profile's keys
--       (headers, serial, timestamp window, signature, decryption) and an
--       event id; then the event stored (store:put: committed and flushed)
--       -> 200 {"code":"SUCCESS"}, a repeat too. A failed check answers 4xx
--       {"code":"FAIL"} and is logged with the check, never stored; a store
--       that cannot be written answers 500: WeChat Pay retries both.
-- Headers larger than MAX_HEADERS answer 431 (bodies larger than
-- quan.server's max_body get its 413).
local M = {}

local cjson = require "cjson"

-- the headers of one request, names and values, in bytes: a notification
-- carries well under 2 KiB, a proxy adds a few forwarding headers
M.MAX_HEADERS = 16 * 1024
-- the largest body taken (quan.server's max_body): a COUPON.USE
-- notification is about 1 KiB
M.MAX_BODY = 64 * 1024
-- the longest event id taken (a UUID is 36 characters)
M.MAX_ID = 128

-- the status of each failed check: the signature's (401) or the request's
-- shape (400); both make WeChat Pay retry
local STATUS = {
  missing_header = 400, bad_header = 400, signature_type = 400, unknown_serial = 401, bad_timestamp = 400,
  clock_skew = 401, bad_signature = 401, bad_json = 400, bad_resource = 400, algorithm = 400, decrypt = 401,
  bad_plaintext = 400, event_id = 400,
}

local JSON = { ["Content-Type"] = "application/json" }
local SUCCESS = '{"code":"SUCCESS"}'

local function fail(status, message)
  return status, JSON, cjson.encode { code = "FAIL", message = message }
end

-- header_bytes(headers) -> bytes of names and values
local function header_bytes(headers)
  local n = 0
  for k, v in pairs(headers) do n = n + #k + #v + 4 end
  return n
end

-- who(req) -> fields naming the sender: the peer, and the client a proxy
-- in front reports
local function who(req)
  local h = req.headers
  return { remote = req.remote, forwarded_for = h["x-forwarded-for"] or h["x-real-ip"] }
end

local function merge(a, b)
  for k, v in pairs(b) do a[k] = v end
  return a
end

-- new(arg) -> handler(req)
function M.new(arg)
  local conf = cjson.decode(arg)
  local log = require("quan.serve.log").new(conf.log_format)
  local wx = require("wechatpay").new(conf.client)
  local store = assert(require("quan.serve.store").connect(conf.store))

  local function health()
    local ok, counts = pcall(store.counts, store)
    if not ok then
      log("health_failed", { error = tostring(counts) })
      return 503, JSON, cjson.encode { ok = false, error = tostring(counts) }
    end
    local oldest = counts.oldest_pending
    -- in this order, for people reading it
    return 200, JSON, ('{"ok":true,"events":%d,"pending":%d,"failing":%d,"oldest_pending_seconds":%s}'):format(
      counts.events, counts.pending, counts.failing,
      oldest and ("%d"):format(math.floor(require("quan.os").time() - oldest)) or "null")
  end

  local function refuse(req, check, message, request_id)
    local status = STATUS[check] or 400
    log("refused", merge({ check = check, message = message, status = status, path = req.path,
      request_id = request_id }, who(req)))
    return fail(status, check .. ": " .. message)
  end

  local function notification(req)
    if header_bytes(req.headers) > M.MAX_HEADERS then
      log("refused", merge({ check = "headers_too_large", status = 431, path = req.path }, who(req)))
      return fail(431, ("headers over %d bytes"):format(M.MAX_HEADERS))
    end
    local event, err = wx:notification(req.headers, req.body)
    if not event then return refuse(req, err.code, err.message, err.request_id) end
    local id = event.id
    if type(id) ~= "string" or id == "" or #id > M.MAX_ID or id:find("%c") then
      return refuse(req, "event_id", ("notification: the event id must be text of 1 to %d bytes, got %s"):format(
        M.MAX_ID, type(id) == "string" and ("%d bytes"):format(#id) or type(id)), event.request_id)
    end
    event.plaintext = wx:decrypt(event.resource) -- the exact text wx:notification decoded
    local outcome, differs, code = store:put(event, req.headers, req.body)
    if not outcome then
      log("store_failed", merge({ id = id, error = differs, code = code }, who(req)))
      return fail(500, "the event could not be stored")
    end
    local data = event.data
    log(outcome, merge({ id = id, event_type = event.event_type, coupon_id = data.coupon_id,
      stock_id = data.stock_id, request_id = event.request_id }, who(req)))
    if differs then
      log("repeat_differs", { id = id, message = "a repeat of a stored event with another body: the first is kept" })
    end
    return 200, JSON, SUCCESS
  end

  return function(req)
    if req.url == "/health" and (req.method == "GET" or req.method == "HEAD") then return health() end
    if req.method == "POST" then return notification(req) end
    if req.method == "GET" or req.method == "HEAD" then return fail(404, "not found: notifications are POSTed") end
    return 405, { ["Content-Type"] = "application/json", ["Allow"] = "POST" },
      cjson.encode { code = "FAIL", message = "method not allowed: notifications are POSTed" }
  end
end

return M
