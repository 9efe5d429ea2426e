-- quan.sandbox.handler: the request handler run by quan.server, one instance
-- per connection thread (new(state_dir) -> handler(req) -> status, headers,
-- body). It checks each request as WeChat Pay does, routes it to the store,
-- signs the answer with the platform key and applies the configured faults.
-- outbox(state_dir) -> run_due(): what the sandbox's main thread calls
-- between waits to retry undelivered COUPON.USE notifications.
local M = {}

local crypto = require "quan.crypto"
local sqlite = require "quan.sqlite"
local check = sqlite.check -- a database failure raises: the request answers 500
local qos = require "quan.os"
local cjson = require "cjson.safe"
local store = require "quan.sandbox.store"
local util = require "quan.sandbox.util"
local files = require "quan.sandbox.files"
local time = require "quan.time"
local url = require "quan.url"
local sign = require "wechatpay.sign"
local validate = require "wechatpay.favor.validate"

local floor, random, tostring, type = math.floor, math.random, tostring, type

local SCHEME = sign.SCHEME

-- COUPON.USE retries: "once a minute, 9 times" (favor-api.md section 7);
-- POST /sandbox/notifications changes both for a state dir
local RETRY_INTERVAL, RETRIES = 60, 9
local DELIVERY_TIMEOUT = 5 -- seconds a receiver has to answer
-- how long an attempt holds its row: a thread that died mid-attempt (a
-- killed sandbox) leaves it to be retried after this; far longer than an
-- attempt can take, so no two threads ever attempt one row at once
local LEASE = 60
local PREFIX = "/v3/marketing/favor"

-- routes: method, pattern (on the path without query), template, action
local ROUTES = {
  {"POST", "^/coupon%-stocks$", "/coupon-stocks", "create_stock"},
  {"POST", "^/stocks/([^/]+)/(start)$", "/stocks/{stock_id}/start", "transition"},
  {"POST", "^/stocks/([^/]+)/(pause)$", "/stocks/{stock_id}/pause", "transition"},
  {"POST", "^/stocks/([^/]+)/(restart)$", "/stocks/{stock_id}/restart", "transition"},
  {"POST", "^/stocks/([^/]+)/(stop)$", "/stocks/{stock_id}/stop", "transition"},
  {"GET", "^/stocks$", "/stocks", "list_stocks"},
  {"GET", "^/stocks/([^/]+)/merchants$", "/stocks/{stock_id}/merchants", "list_merchants"},
  {"GET", "^/stocks/([^/]+)/items$", "/stocks/{stock_id}/items", "list_items"},
  {"GET", "^/stocks/([^/]+)$", "/stocks/{stock_id}", "get_stock"},
  {"POST", "^/users/([^/]+)/coupons$", "/users/{openid}/coupons", "send_coupon"},
  {"GET", "^/users/([^/]+)/coupons$", "/users/{openid}/coupons", "list_coupons"},
  {"GET", "^/users/([^/]+)/coupons/([^/]+)$", "/users/{openid}/coupons/{coupon_id}", "get_coupon"},
  {"POST", "^/callbacks$", "/callbacks", "set_callback"},
  {"GET", "^/callbacks$", "/callbacks", "get_callback"},
  {"POST", "^/media/image%-upload$", "/media/image-upload", "upload_image"},
}
local CERTIFICATES = "/v3/certificates" -- outside PREFIX: the platform certificates

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

local function sign_error(issue, message, field, extra)
  local detail = {field = field, location = "authorization", issue = issue}
  if extra then for k, v in pairs(extra) do detail[k] = v end end
  return {status = 401, code = "SIGN_ERROR", message = message, detail = detail}
end

-- parse_authorization(value) -> fields | nil, err
-- control_body(req) -> table | nil, error answer: a control endpoint's JSON
-- object body (empty means {})
local function control_body(req)
  local b = cjson.decode(req.body ~= "" and req.body or "{}")
  if type(b) ~= "table" then
    return nil, {status = 400, code = "PARAM_ERROR", message = "body must be a JSON object"}
  end
  return b
end

local function parse_authorization(h)
  if not h or h == "" then
    return nil, sign_error("authorization header is missing", "Http头缺少Authorization (the Authorization header is missing)", "authorization")
  end
  local scheme, rest = h:match("^(%S+) (.*)$")
  if scheme ~= SCHEME then
    return nil, sign_error("unsupported authorization scheme", "Http头Authorization值格式错误 (the scheme must be " .. SCHEME .. ")", "authorization")
  end
  local f = {}
  local pos = 1
  while pos <= #rest do
    local k, v, nxt = rest:match('^([%w_]+)="([^"]*)"(),?', pos)
    if not k then
      return nil, sign_error("malformed authorization parameters", "Http头Authorization值格式错误 (expected key=\"value\" pairs)", "authorization")
    end
    f[k] = v
    pos = nxt
    if rest:sub(pos, pos) == "," then pos = pos + 1 end
  end
  for _, k in ipairs {"mchid", "serial_no", "timestamp", "nonce_str", "signature"} do
    if not f[k] or f[k] == "" then
      return nil, sign_error("missing " .. k, "Http头Authorization值格式错误 (missing " .. k .. ")", k)
    end
  end
  return f
end

-- build(dir) -> {handle = handler(req), run_due = fn}
local function build(dir)
  assert(type(dir) == "string", "quan.sandbox.handler: state dir expected")
  local id = files.identity(dir)
  local merchant_pub = assert(crypto.certificate("file://" .. dir .. "/merchant.pem")):public_key()
  local platform = assert(crypto.private_key("file://" .. dir .. "/platform.key.pem"))
  local apiv3 = assert(io.open(dir .. "/apiv3.key", "rb")):read("a"):gsub("%s+$", "")
  local platform_cert = files.platform_certificate(dir, true)
  local cert_serial = platform_cert:serial():upper()
  -- the serial an API answer is signed under: the PUB_KEY_ID when the
  -- request's Wechatpay-Serial names it, else (another serial, or none) the
  -- certificate's, as WeChat Pay answers a merchant in the middle of the
  -- switch between the two modes; control answers and notifications always
  -- under the PUB_KEY_ID
  local answer_serial
  local db = assert(sqlite.open(dir .. "/sandbox.db", {busy_timeout = 20000, process_lock = true}))
  -- no mmap_size: with several connections each one remapped the growing
  -- file about once per request (munmap, a TLB shootdown on every core)
  local control_text, control

  local function sha256(s) return crypto.sha256(s) end

  local function load_control()
    local text = store.get_control(db)
    if text ~= control_text then
      control_text = text
      local c = cjson.decode(text) or {}
      local n = type(c.notify) == "table" and c.notify or {}
      control = {faults = c.faults or {}, clock_offset = c.clock_offset or 0,
        notify = {retry_interval = n.retry_interval or RETRY_INTERVAL, retries = n.retries or RETRIES,
          signed_by = n.signed_by or "public_key"}}
    end
    return control
  end

  -- signed(status, body[, tamper[, serial]]) -> status, headers, body
  local function signed(status, body, tamper_kinds, serial)
    local ts = tostring(floor(qos.time()))
    local nonce = crypto.sha256(crypto.random_bytes(16)):sub(1, 32)
    serial = serial or answer_serial or id.key_id
    local sent_body = body
    if tamper_kinds then
      for _, kind in ipairs(tamper_kinds) do
        if kind == "timestamp" then ts = tostring(floor(qos.time()) - 3600)
        elseif kind == "serial" then serial = "PUB_KEY_ID_0000000000000000000000000000"
        end
      end
    end
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
      ["Wechatpay-Signature-Type"] = SCHEME,
    }, sent_body
  end

  local function answer_error(err, location, tamper)
    return signed(err.status, error_body(err, location), tamper)
  end

  -- authenticate(req, path, sign_body) -> true | nil, err
  local function authenticate(req, sign_body)
    local f, err = parse_authorization(req.headers.authorization)
    if not f then return nil, err end
    if f.mchid ~= id.mchid then
      return nil, sign_error("mchid not found", "商户号不存在或与证书不匹配 (unknown mchid " .. f.mchid .. ")", "mchid")
    end
    if f.serial_no:upper() ~= id.serial then
      return nil, sign_error("serial_no not found", "商户证书序列号有误 (serial_no does not name the merchant certificate)", "serial_no")
    end
    local ts = f.timestamp:match("^%d+$") and tonumber(f.timestamp)
    if not ts or math.abs(qos.time() - ts) > 300 then
      return nil, sign_error("timestamp expired", "请求的时间戳与当前时间相差超过5分钟 (timestamp is more than 300 s off)", "timestamp")
    end
    if #f.nonce_str > 64 then
      return nil, sign_error("nonce_str too long", "Http头Authorization值格式错误 (nonce_str longer than 64)", "nonce_str")
    end
    local message = sign.message(req.method, req.path, f.timestamp, f.nonce_str, sign_body)
    local ok = merchant_pub:verify(message, f.signature)
    if not ok then
      return nil, sign_error("sign not match", "错误的签名，验签失败 (signature does not verify)", "signature", {
        sign_information = {method = req.method, url = req.path, sign_message_length = #message,
          truncated_sign_message = message:sub(1, 160)}})
    end
    return f
  end

  -- ---- COUPON.USE notifications ----

  -- note_serial() -> the serial notifications are signed under: the
  -- PUB_KEY_ID, or the platform certificate's for a merchant in certificate
  -- mode (policy signed_by)
  local function note_serial()
    return load_control().notify.signed_by == "certificate" and cert_serial or id.key_id
  end

  -- notification(coupon, now) -> {headers, body}: the coupon-use event as
  -- WeChat Pay POSTs it: the coupon encrypted with the APIv3 key
  -- (AEAD_AES_256_GCM, associated data "coupon"), the body signed with the
  -- platform key
  local function notification(coupon, now)
    local nonce = crypto.nonce(12)
    local body = util.encode {
      id = "EV-" .. time.beijing(now, "%Y%m%d%H%M%S") .. crypto.nonce(14):upper(),
      create_time = time.beijing(now),
      resource_type = "encrypt-resource",
      event_type = "COUPON.USE",
      summary = "用券成功",
      resource = {
        original_type = "coupon", algorithm = "AEAD_AES_256_GCM", associated_data = "coupon", nonce = nonce,
        ciphertext = crypto.aes_gcm_encrypt(apiv3, nonce, "coupon", util.encode(coupon)),
      },
    }
    local _, headers = signed(200, body, nil, note_serial())
    return {headers = headers, body = body}
  end

  -- The outbox: a notification to deliver is a row of `notifications`. The
  -- first attempt is made at once, inside /sandbox/coupons/use; when the
  -- receiver does not answer 2xx, the main thread retries it (run_due) every
  -- retry_interval seconds, up to `retries` times. Every attempt is signed
  -- anew (fresh timestamp and nonce) over the same body: a receiver sees the
  -- same event id again, as from WeChat Pay. A row's next_at is pushed past
  -- the attempt's timeout before the attempt (LEASE), so a sandbox killed
  -- meanwhile retries it after a restart. A callback switched off (or
  -- removed) ends the retries of what was sent to it.

  -- attempt(row) -> delivery {notify_url, attempts, state, status | error
  -- [, retry_in_seconds]}
  local function attempt(row)
    local now = qos.time()
    check(db:run("UPDATE notifications SET next_at = ? WHERE event_id = ?", now + LEASE, row.event_id))
    if row.attempts > 0 then
      local cb = check(db:first("SELECT switch FROM callbacks WHERE mchid = ? AND notify_url = ?", id.mchid, row.notify_url))
      if not cb or cb.switch == 0 then
        check(db:run("UPDATE notifications SET state = 'failed', next_at = NULL, last_error = ?, update_time = ? WHERE event_id = ?",
          "callback switched off or changed: no more retries", floor(now), row.event_id))
        return
      end
    end
    local _, headers = signed(200, row.body, nil, note_serial())
    local list = {}
    for k, v in pairs(headers) do list[#list + 1] = k .. ": " .. v end
    table.sort(list)
    local res, err = require("quan.http").request {
      method = "POST", url = row.notify_url, headers = list, body = row.body, timeout = DELIVERY_TIMEOUT,
      cafile = row.ca_file or (dir .. "/ca.pem"),
    }
    local attempts = row.attempts + 1
    local delivered = res and res.status >= 200 and res.status < 300
    local policy = load_control().notify
    local wait = not delivered and attempts <= policy.retries and policy.retry_interval or nil
    local state = delivered and "delivered" or (wait and "pending" or "failed")
    check(db:run("UPDATE notifications SET attempts = attempts + 1, state = ?, next_at = ?, last_status = ?, last_error = ?, "
      .. "update_time = ? WHERE event_id = ?", state, wait and qos.time() + wait, res and res.status,
      not res and err or nil, floor(qos.time()), row.event_id))
    return {notify_url = row.notify_url, attempts = attempts, state = state, status = res and res.status,
      error = not res and err or nil, retry_in_seconds = wait}
  end

  -- deliver(note, ca_file) -> what happened, for the control answer: nil
  -- when no callback URL is set (or it is switched off), else attempt()'s
  -- delivery
  local function deliver(note, ca_file)
    local cb = check(db:first("SELECT notify_url, switch FROM callbacks WHERE mchid = ?", id.mchid))
    if not cb or cb.switch == 0 then return nil end
    local row = {event_id = cjson.decode(note.body).id, notify_url = cb.notify_url, body = note.body,
      ca_file = ca_file, attempts = 0}
    local now = floor(qos.time())
    check(db:run("INSERT INTO notifications (event_id, notify_url, body, ca_file, attempts, state, next_at, create_time, update_time) "
      .. "VALUES (?, ?, ?, ?, 0, 'pending', ?, ?, ?)", row.event_id, row.notify_url, row.body, ca_file,
      now + LEASE, now, now))
    return attempt(row)
  end

  -- run_due() -> 1 when a retry was due and attempted, else 0: one per
  -- call, as it may wait DELIVERY_TIMEOUT and the caller's wait checks for
  -- signals between calls
  local function run_due()
    local row = check(db:first("SELECT * FROM notifications WHERE next_at IS NOT NULL AND next_at <= ? ORDER BY next_at LIMIT 1",
      qos.time()))
    if not row then return 0 end
    attempt(row)
    return 1
  end

  -- notifications(req) -> the control answer of /sandbox/notifications
  local function notifications(req)
    if req.method == "POST" then
      local b, berr = control_body(req)
      if not b then return answer_error(berr) end
      local interval, retries, signed_by = b.retry_interval, b.retries, b.signed_by
      if signed_by ~= nil and signed_by ~= "public_key" and signed_by ~= "certificate" then
        return answer_error({status = 400, code = "PARAM_ERROR", message = "signed_by must be public_key or certificate",
          field = "signed_by"})
      end
      if interval ~= nil and (type(interval) ~= "number" or not (interval >= 0 and interval <= 86400)) then
        return answer_error({status = 400, code = "PARAM_ERROR", message = "retry_interval must be seconds from 0 to 86400",
          field = "retry_interval"})
      end
      if retries ~= nil and (type(retries) ~= "number" or retries % 1 ~= 0 or not (retries >= 0 and retries <= 100)) then
        return answer_error({status = 400, code = "PARAM_ERROR", message = "retries must be a whole number from 0 to 100",
          field = "retries"})
      end
      check(db:transaction(function()
        local cur = cjson.decode(store.get_control(db)) or {}
        local n = type(cur.notify) == "table" and cur.notify or {}
        if interval ~= nil then n.retry_interval = interval end
        if retries ~= nil then n.retries = floor(retries) end
        if signed_by ~= nil then n.signed_by = signed_by end
        cur.notify = n
        store.set_control(db, cur)
      end))
    end
    local policy = load_control().notify
    local list, now = {}, qos.time()
    for row in db:rows("SELECT * FROM notifications ORDER BY create_time DESC, rowid DESC LIMIT 100") do
      list[#list + 1] = {event_id = row.event_id, notify_url = row.notify_url, state = row.state, attempts = row.attempts,
        status = row.last_status, error = row.last_error,
        retry_in_seconds = row.state == "pending" and row.next_at and math.max(0, row.next_at - now) or nil}
    end
    return signed(200, util.encode {retry_interval = policy.retry_interval, retries = policy.retries,
      signed_by = policy.signed_by, data = util.array(list)})
  end

  -- ---- GET /v3/certificates ----

  -- certificates(query) -> {data = {...}}: the platform certificate,
  -- encrypted with the APIv3 key as WeChat Pay sends it
  local function certificates(q)
    local algo = q.algorithm_type
    if algo ~= nil and algo ~= "RSA" and algo ~= "SM2" and algo ~= "ALL" then
      return nil, {status = 400, code = "PARAM_ERROR", message = "algorithm_type must be RSA, SM2 or ALL",
        field = "algorithm_type", value = algo}
    end
    if algo == "SM2" then return {data = util.array({})} end
    local nonce = crypto.nonce(12)
    return {data = util.array {{
      serial_no = cert_serial,
      effective_time = time.beijing(platform_cert:not_before()),
      expire_time = time.beijing(platform_cert:not_after()),
      encrypt_certificate = {algorithm = "AEAD_AES_256_GCM", nonce = nonce, associated_data = "certificate",
        ciphertext = crypto.aes_gcm_encrypt(apiv3, nonce, "certificate", platform_cert:pem())},
    }}}
  end

  -- ---- control endpoints (sandbox only, unsigned requests) ----

  local function control_request(req, path)
    local c = load_control()
    if path == "/sandbox/health" then
      return signed(200, cjson.encode {ok = true, mchid = id.mchid, appid = id.appid,
        now = time.beijing(qos.time() + c.clock_offset)})
    elseif path == "/sandbox/faults" then
      if req.method == "POST" then
        local b, berr = control_body(req)
        if not b then return answer_error(berr) end
        local spec = b.spec
        if spec == nil then
          local items = {}
          for k, v in pairs(b) do items[#items + 1] = k .. "=" .. tostring(v) end
          spec = table.concat(items, ",")
        end
        local f, err = util.parse_faults(spec)
        if not f then return answer_error({status = 400, code = "PARAM_ERROR", message = err, field = "spec"}) end
        check(db:transaction(function()
          local cur = cjson.decode(store.get_control(db)) or {}
          cur.faults = f
          store.set_control(db, cur)
        end))
        return signed(200, cjson.encode {faults = util.format_faults(f)})
      end
      return signed(200, cjson.encode {faults = util.format_faults(c.faults)})
    elseif path == "/sandbox/clock" then
      if req.method == "POST" then
        local b, berr = control_body(req)
        if not b then return answer_error(berr) end
        local offset
        check(db:transaction(function()
          local cur = cjson.decode(store.get_control(db)) or {}
          offset = cur.clock_offset or 0
          if b.advance_seconds ~= nil then
            if type(b.advance_seconds) ~= "number" or b.advance_seconds < 0 then
              offset = nil
              return
            end
            offset = offset + b.advance_seconds
          elseif b.reset then
            offset = 0
          end
          cur.clock_offset = offset
          store.set_control(db, cur)
        end))
        if not offset then
          return answer_error({status = 400, code = "PARAM_ERROR", message = "advance_seconds must be a number >= 0 (the clock only moves forward)",
            field = "advance_seconds"})
        end
        return signed(200, cjson.encode {now = time.beijing(qos.time() + offset), offset_seconds = offset})
      end
      return signed(200, cjson.encode {now = time.beijing(qos.time() + c.clock_offset), offset_seconds = c.clock_offset})
    elseif path == "/sandbox/coupons/use" and req.method == "POST" then
      local b, berr = control_body(req)
      if not b then return answer_error(berr) end
      if b.ca_file ~= nil and type(b.ca_file) ~= "string" then
        return answer_error({status = 400, code = "PARAM_ERROR", message = "ca_file must be a path", field = "ca_file"})
      end
      local now = floor(qos.time() + c.clock_offset)
      local coupon, err = store.use_coupon(db, {mchid = id.mchid, appid = id.appid, now = now}, b)
      if not coupon then return answer_error(err) end
      local note = notification(coupon, now)
      return signed(200, util.encode {coupon = coupon, notification = note, delivery = deliver(note, b.ca_file)})
    elseif path == "/sandbox/notifications" then
      return notifications(req)
    elseif path == "/sandbox/requests" then
      if req.method == "POST" then
        local b, berr = control_body(req)
        if not b then return answer_error(berr) end
        if b.reset ~= true then
          return answer_error({status = 400, code = "PARAM_ERROR", message = "the only request is {\"reset\": true}", field = "reset"})
        end
        check(db:run("DELETE FROM requests"))
      end
      return signed(200, util.encode(store.request_counts(db)))
    end
    return answer_error({status = 404, code = "NOT_FOUND", message = "no such sandbox endpoint: " .. path})
  end

  -- ---- the API ----

  local REPLAY = sign_error("nonce reused", "重复的请求 (nonce_str was already used within the time window)", "nonce_str")

  local function dispatch(action, ctx, captures, body, query, parts)
    if action == "create_stock" then return store.create_stock(db, ctx, body)
    elseif action == "transition" then return store.transition(db, ctx, captures[1], captures[2], body)
    elseif action == "list_stocks" then return store.list_stocks(db, ctx, query)
    elseif action == "get_stock" then return store.get_stock(db, ctx, captures[1], query)
    elseif action == "list_merchants" then return store.list_merchants(db, ctx, captures[1], query)
    elseif action == "list_items" then return store.list_items(db, ctx, captures[1], query)
    elseif action == "send_coupon" then return store.send_coupon(db, ctx, url.decode(captures[1]), body)
    elseif action == "get_coupon" then return store.get_coupon(db, ctx, url.decode(captures[1]), captures[2], query)
    elseif action == "list_coupons" then return store.list_coupons(db, ctx, url.decode(captures[1]), query)
    elseif action == "certificates" then return certificates(query)
    elseif action == "set_callback" then return store.set_callback(db, ctx, body)
    elseif action == "get_callback" then return store.get_callback(db, ctx, query)
    elseif action == "upload_image" then
      local meta = cjson.decode(parts.meta.data)
      if type(meta) ~= "table" then
        return nil, {status = 400, code = "PARAM_ERROR", message = "meta is not a JSON object", field = "meta"}
      end
      return store.upload_image(db, ctx, meta, parts.file and parts.file.data)
    end
  end

  local function api_request(req, path, query)
    local c = load_control()
    local faults = c.faults
    local route, captures
    local sub = path:sub(#PREFIX + 1)
    if path == CERTIFICATES and req.method == "GET" then
      route, captures = {"GET", nil, nil, "certificates"}, {}
    elseif path:sub(1, #PREFIX) == PREFIX then
      for _, r in ipairs(ROUTES) do
        if r[1] == req.method then
          local caps = {sub:match(r[2])}
          if caps[1] ~= nil then
            route, captures = r, caps
            break
          end
        end
      end
    end
    -- the body that was signed: the meta part for an upload
    local sign_body, parts = req.body, nil
    if route and route[4] == "upload_image" then
      local perr
      parts, perr = util.multipart(req.headers["content-type"], req.body)
      if not parts or not parts.meta then
        return answer_error({status = 400, code = "PARAM_ERROR", message = "multipart body: " .. (perr or "no meta part"), field = "meta"})
      end
      sign_body = parts.meta.data
    end
    local auth, err = authenticate(req, sign_body)
    if not auth then return answer_error(err) end
    local action = route and route[4]
    -- the body, checked before taking the write lock; reported after the
    -- nonce check, as the service would
    local body, location, body_err = nil, "query", nil
    if route and req.method == "POST" and action ~= "upload_image" then
      location = "body"
      local derr
      body, derr = cjson.decode(req.body)
      if type(body) ~= "table" then
        body_err = {status = 400, code = "PARAM_ERROR", message = "request body is not a JSON object" .. (derr and (": " .. derr) or "")}
      else
        -- time rules on the business clock; the validator allows a
        -- request's trip (validate.TRAVEL: a begin time of "now" stays valid)
        local vok, findings = validate.request(req.method, PREFIX .. route[3], body,
          {now = floor(qos.time() + (c.clock_offset or 0))})
        if vok == false and type(findings) == "table" and findings[1] then
          local f1 = findings[1]
          body_err = {status = 400, code = "PARAM_ERROR", message = tostring(f1.path) .. ": " .. tostring(f1.rule or f1.desc or "invalid"),
            field = f1.path, value = f1.value}
        end
      end
    end
    if route and faults.latency then qos.sleep(faults.latency) end
    local ctx = {mchid = id.mchid, appid = id.appid, now = floor(qos.time() + (c.clock_offset or 0)), sha256 = sha256}
    -- one write transaction per request: the nonce and the business change
    local res
    res, err = check(db:transaction(function()
      if not store.remember_nonce(db, auth.mchid, auth.nonce_str, floor(qos.time())) then return nil, REPLAY end
      store.count_request(db, req.method, route and (route[3] and PREFIX .. route[3] or path) or "(no such endpoint)")
      if not route then
        return nil, {status = 404, code = "NOT_FOUND", message = "no such endpoint: " .. req.method .. " " .. path}
      end
      if faults.error429 and random() < faults.error429 then
        return nil, {status = 429, code = "FREQUENCY_LIMIT_EXCEED", message = "请求频率超过限制 (rate limited by the sandbox fault injector)"}
      end
      if faults.error500 and random() < faults.error500 then
        return nil, {status = 500, code = "SYSTEM_ERROR", message = "系统错误 (injected by the sandbox)"}
      end
      if body_err then return nil, body_err end
      return dispatch(action, ctx, captures, body, query, parts)
    end))
    if route and res and faults.drop and random() < faults.drop then return "drop" end
    local tamper = route and faults.tamper and #faults.tamper > 0 and random() < (faults.tamper_rate or 1) and faults.tamper or nil
    if not res then return answer_error(err, err.location or location, tamper) end
    return signed(200, util.encode(res), tamper)
  end

  local function handle(req)
    local path, query = url.split(req.path)
    if path:sub(1, 9) == "/sandbox/" then
      answer_serial = nil
      return control_request(req, path)
    end
    answer_serial = req.headers["wechatpay-serial"] ~= id.key_id and cert_serial or nil
    return api_request(req, path, query)
  end

  return {handle = handle, run_due = run_due}
end

function M.new(dir)
  return build(dir).handle
end

function M.outbox(dir)
  return build(dir).run_due
end

return M
