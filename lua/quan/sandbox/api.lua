-- quan.sandbox.api: the API as the sandbox serves it. ROUTES is the table
-- of endpoints, each a method, a path template and a small handler over the
-- store; handle(exchange) is what every API request passes through: the
-- route found, the signature checked (quan.sandbox.auth), the body checked
-- against the endpoint's schema, the faults applied, the nonce and the
-- business change in one transaction, the answer signed.
local M = {}

local crypto = require "quan.crypto"
local check = require("quan.sqlite").check -- a database failure raises: the request answers 500
local qos = require "quan.os"
local store = require "quan.sandbox.store"
local util = require "quan.sandbox.util"
local auth = require "quan.sandbox.auth"
local redemptions = require "quan.sandbox.redemptions"
local flows = require "quan.sandbox.flows"
local time = require "quan.time"
local url = require "quan.url"
local validate = require "wechatpay.favor.validate"

local floor, random, type = math.floor, math.random, type

local PREFIX = "/v3/marketing/favor"

-- route(method, template, handle[, opts]) -> a route. Each {name} of the
-- template matches one path segment, given to handle by name:
-- handle(exchange, params) -> result table | nil, error table, run inside
-- the request's transaction. The exchange (quan.sandbox.handler) holds db,
-- ctx (the store's context: mchid, appid, now, sha256), body (a POST's
-- JSON object), query, parts (an upload's). opts.multipart: the body is
-- multipart, its meta part the one that was signed; opts.download: handle
-- returns {file = bytes}, answered unsigned (quan.sandbox.flows).
local function route(method, template, handle, opts)
  local names = {}
  local pattern = template:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"):gsub("{([%w_]+)}", function(name)
    names[#names + 1] = name
    return "([^/]+)"
  end)
  return {method = method, template = template, pattern = "^" .. pattern .. "$", names = names,
    handle = handle, multipart = opts and opts.multipart or false, download = opts and opts.download or false}
end

local function transition(action)
  return function(ex, p) return store.transition(ex.db, ex.ctx, p.stock_id, action, ex.body) end
end

-- certificates: the platform certificate, encrypted with the APIv3 key as
-- WeChat Pay sends it; none for a merchant in public-key mode, who is
-- answered as WeChat Pay answers a merchant without platform certificates
-- (its text as wechatpay-java issues #354 and #400 quote it, 2025-2026)
local function certificates(ex)
  local sandbox, algo = ex.sandbox, ex.query.algorithm_type
  if algo ~= nil and algo ~= "RSA" and algo ~= "SM2" and algo ~= "ALL" then
    return nil, {status = 400, code = "PARAM_ERROR", message = "algorithm_type must be RSA, SM2 or ALL",
      field = "algorithm_type", value = algo}
  end
  if ex.control.key_mode == "public_key" then
    return nil, {status = 404, code = "RESOURCE_NOT_EXISTS",
      message = "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://pay.weixin.qq.com/doc/v3/merchant/4012153196"
        .. " (a merchant in public-key mode has no platform certificates: quan sandbox --key-mode)"}
  end
  if algo == "SM2" then return {data = util.array({})} end
  local cert, nonce = sandbox.platform_cert, crypto.nonce(12)
  return {data = util.array {{
    serial_no = sandbox.cert_serial,
    effective_time = time.beijing(cert:not_before()),
    expire_time = time.beijing(cert:not_after()),
    encrypt_certificate = {algorithm = "AEAD_AES_256_GCM", nonce = nonce, associated_data = "certificate",
      ciphertext = crypto.aes_gcm_encrypt(sandbox.apiv3, nonce, "certificate", cert:pem())},
  }}}
end

local function upload_image(ex)
  local meta = util.decode(ex.parts.meta.data)
  if type(meta) ~= "table" then
    return nil, {status = 400, code = "PARAM_ERROR", message = "meta is not a JSON object", field = "meta"}
  end
  return store.upload_image(ex.db, ex.ctx, meta, ex.parts.file and ex.parts.file.data)
end

M.ROUTES = {
  route("POST", PREFIX .. "/coupon-stocks", function(ex) return store.create_stock(ex.db, ex.ctx, ex.body) end),
  route("POST", PREFIX .. "/stocks/{stock_id}/start", transition "start"),
  route("POST", PREFIX .. "/stocks/{stock_id}/pause", transition "pause"),
  route("POST", PREFIX .. "/stocks/{stock_id}/restart", transition "restart"),
  route("POST", PREFIX .. "/stocks/{stock_id}/stop", transition "stop"),
  route("GET", PREFIX .. "/stocks", function(ex) return store.list_stocks(ex.db, ex.ctx, ex.query) end),
  route("GET", PREFIX .. "/stocks/{stock_id}/merchants",
    function(ex, p) return store.list_merchants(ex.db, ex.ctx, p.stock_id, ex.query) end),
  route("GET", PREFIX .. "/stocks/{stock_id}/items",
    function(ex, p) return store.list_items(ex.db, ex.ctx, p.stock_id, ex.query) end),
  route("GET", PREFIX .. "/stocks/{stock_id}",
    function(ex, p) return store.get_stock(ex.db, ex.ctx, p.stock_id, ex.query) end),
  route("POST", PREFIX .. "/users/{openid}/coupons",
    function(ex, p) return store.send_coupon(ex.db, ex.ctx, p.openid, ex.body) end),
  route("GET", PREFIX .. "/users/{openid}/coupons",
    function(ex, p) return store.list_coupons(ex.db, ex.ctx, p.openid, ex.query) end),
  route("GET", PREFIX .. "/users/{openid}/coupons/{coupon_id}",
    function(ex, p) return store.get_coupon(ex.db, ex.ctx, p.openid, p.coupon_id, ex.query) end),
  route("POST", PREFIX .. "/callbacks", function(ex) return store.set_callback(ex.db, ex.ctx, ex.body) end),
  route("GET", PREFIX .. "/callbacks", function(ex) return store.get_callback(ex.db, ex.ctx, ex.query) end),
  route("POST", PREFIX .. "/media/image-upload", upload_image, {multipart = true}),
  route("GET", PREFIX .. "/stocks/{stock_id}/use-flow", function(ex, p) return flows.link(ex, p.stock_id, "use-flow") end),
  route("GET", PREFIX .. "/stocks/{stock_id}/refund-flow", function(ex, p) return flows.link(ex, p.stock_id, "refund-flow") end),
  route("GET", "/v3/billdownload/file", flows.download, {download = true}), -- outside PREFIX
  route("GET", "/v3/certificates", certificates), -- outside PREFIX
}

-- openid(raw) -> the openid of a path | nil, error: percent-decoded, 1 to
-- 128 bytes (the API's string(128); its gateway counts bytes) of valid
-- UTF-8 without control characters (real ones are 28 of [A-Za-z0-9_-])
local function openid(raw)
  local id = url.decode(raw)
  local why = #id > 128 and ("is " .. #id .. " bytes long, more than 128")
    or (not utf8.len(id) and "is not valid UTF-8")
    or (id:find("%c") and "holds a control character")
  if why then
    return nil, {status = 400, code = "PARAM_ERROR", message = "openid: " .. why .. " (用户openid: 1 to 128 bytes)",
      field = "openid", location = "uri_template"}
  end
  return id
end

-- path_params(params) -> params | nil, error: the values of a route's path
-- variables, decoded and checked (openid)
local function path_params(params)
  if params.openid then
    local id, err = openid(params.openid)
    if not id then return nil, err end
    params.openid = id
  end
  return params
end

-- find(method, path) -> route, params | nil
function M.find(method, path)
  for _, r in ipairs(M.ROUTES) do
    if r.method == method then
      local captures = {path:match(r.pattern)}
      if captures[1] ~= nil then
        local params = {}
        for i, name in ipairs(r.names) do params[name] = captures[i] end
        return r, params
      end
    end
  end
end

-- check_body(ex) -> location, error | nil: a POST's JSON body, decoded
-- into ex.body and checked against the endpoint's schema (time rules on the
-- business clock; the validator allows a request's trip, validate.TRAVEL: a
-- begin time of "now" stays valid). location ("body", else "query") says
-- where an error's field is.
local function check_body(ex)
  local r, req = ex.route, ex.req
  if not (r and req.method == "POST" and not r.multipart) then return "query" end
  local body, derr = util.decode(req.body)
  if type(body) ~= "table" then
    return "body", {status = 400, code = "PARAM_ERROR", message = "request body is not a JSON object" .. (derr and (": " .. derr) or "")}
  end
  ex.body = body
  local ok, findings = validate.request(req.method, r.template, body, {now = ex:now()})
  if ok == false and type(findings) == "table" and findings[1] then
    local f1 = findings[1]
    return "body", {status = 400, code = "PARAM_ERROR", message = tostring(f1.path) .. ": " .. tostring(f1.rule or f1.desc or "invalid"),
      field = f1.path, value = f1.value}
  end
  return "body"
end

local function sha256(s) return crypto.sha256(s) end

-- handle(ex) -> status, headers, body | "drop" (a dropped connection)
function M.handle(ex)
  local req, faults = ex.req, ex.control.faults
  local r, params = M.find(req.method, ex.path)
  local path_err
  if r then params, path_err = path_params(params) end
  ex.route, ex.params = r, params
  -- the body that was signed: the meta part for an upload
  local sign_body = req.body
  if r and r.multipart then
    local parts, perr = util.multipart(req.headers["content-type"], req.body)
    if not parts or not parts.meta then
      return ex:fail({status = 400, code = "PARAM_ERROR", message = "multipart body: " .. (perr or "no meta part"), field = "meta"})
    end
    ex.parts, sign_body = parts, parts.meta.data
  end
  local signer, err = auth.check(req, sign_body, ex.sandbox.merchant, qos.time())
  if not signer then return ex:fail(err) end
  ex.auth = signer
  -- the body, checked before taking the write lock; reported after the
  -- nonce check, as the service would
  local location, body_err = check_body(ex)
  if r and faults.latency then qos.sleep(faults.latency) end
  local id = ex.sandbox.id
  ex.ctx = {mchid = id.mchid, appid = id.appid, now = ex:now(), sha256 = sha256}
  -- one write transaction per request: the nonce and the business change
  local db, res = ex.db, nil
  res, err = check(db:transaction(function()
    if not store.remember_nonce(db, signer.mchid, signer.nonce_str, floor(qos.time())) then return nil, auth.REPLAY end
    store.count_request(db, req.method, r and r.template or "(no such endpoint)") -- GET /sandbox/requests
    redemptions.settle_some(ex.sandbox, ex.ctx.now) -- redemptions the business clock has reached: answers never lag it
    if not r then
      return nil, {status = 404, code = "NOT_FOUND", message = "no such endpoint: " .. req.method .. " " .. ex.path}
    end
    if faults.error429 and random() < faults.error429 then
      return nil, {status = 429, code = "FREQUENCY_LIMIT_EXCEED", message = "请求频率超过限制 (rate limited by the sandbox fault injector)"}
    end
    if faults.error500 and random() < faults.error500 then
      return nil, {status = 500, code = "SYSTEM_ERROR", message = "系统错误 (injected by the sandbox)"}
    end
    if path_err then return nil, path_err end
    if body_err then return nil, body_err end
    return r.handle(ex, params)
  end))
  if r and res and faults.drop and random() < faults.drop then return "drop" end
  local tamper = r and faults.tamper and #faults.tamper > 0 and random() < (faults.tamper_rate or 1) and faults.tamper or nil
  if not res then return ex:fail(err, err.location or location, tamper) end
  if r.download then return flows.answer(ex, res.file, tamper) end
  return ex:answer(200, util.encode(util.times(ex.control.time_fraction)(res)), tamper)
end

return M
