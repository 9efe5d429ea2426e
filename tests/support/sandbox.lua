-- tests.support.sandbox: start a sandbox for a spec and talk to it with
-- signed requests, independently of the wechatpay client (signing through
-- quan.crypto, transport through the curl command line).
--
--   local sbx = require "tests.support.sandbox"
--   local h = sbx.start()                      -- or sbx.start{faults = "..."}
--   local res = sbx.request(h, "POST", "/v3/marketing/favor/coupon-stocks", body_table_or_text)
--   -- res = {status =, headers = {lower-case}, body =, json =}
--   assert(sbx.verify(h, res))                 -- response signature, platform key
--   h:stop()
local M = {}

local sh = require "tests.support.sh"
local crypto = require "quan.crypto"
local cjson = require "cjson"
local qos = require "quan.os"

-- start(opts) -> handle (see quan.sandbox.start); raises when it cannot start
function M.start(opts)
  local h = assert(require("quan.sandbox").start(opts))
  return h
end

local keys = {}
local function merchant_key(h)
  local k = keys[h.state]
  if not k then
    k = assert(crypto.private_key("file://" .. h.state .. "/merchant.key.pem"))
    keys[h.state] = k
  end
  return k
end

-- authorization(h, method, target, body [, o]) -> header value, ts, nonce
-- o.timestamp, o.nonce, o.mchid, o.serial override the signed fields.
function M.authorization(h, method, target, body, o)
  o = o or {}
  local ts = tostring(o.timestamp or math.floor(qos.time()))
  local nonce = o.nonce or crypto.nonce(32)
  local sig = merchant_key(h):sign(method .. "\n" .. target .. "\n" .. ts .. "\n" .. nonce .. "\n" .. (body or "") .. "\n")
  if o.signature then sig = o.signature end
  return ('WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",timestamp="%s",serial_no="%s",signature="%s"'):format(
    o.mchid or h.mchid, nonce, ts, o.serial or h.serial, sig), ts, nonce
end

local function parse_headers(text)
  local headers = {}
  -- the last response block only (curl may print 100 Continue first)
  local last = text
  for block in text:gmatch("HTTP/[^\r\n]*\r?\n.-\r?\n\r?\n") do last = block end
  local status = tonumber(last:match("^HTTP/%S+ (%d+)"))
  for k, v in last:gmatch("([%w%-]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
  return status, headers
end

-- raw(h, method, target, o) -> res | nil, curl error
-- o.body (string), o.headers (array of "Name: value"), o.form (array of curl
-- -F arguments), o.timeout
function M.raw(h, method, target, o)
  o = o or {}
  local dir = sh.tmpdir()
  local args = {"curl", "-sS", "--cacert", sh.quote(h.state .. "/ca.pem"), "-X", method,
    "-D", sh.quote(dir .. "/h"), "-o", sh.quote(dir .. "/b"), "-w", "'%{http_code}'",
    "--max-time", tostring(o.timeout or 20)}
  for _, line in ipairs(o.headers or {}) do
    args[#args + 1] = "-H"
    args[#args + 1] = sh.quote(line)
  end
  if o.form then
    for _, f in ipairs(o.form) do
      args[#args + 1] = "-F"
      args[#args + 1] = sh.quote(f)
    end
  elseif o.body then
    sh.write(dir .. "/req", o.body)
    args[#args + 1] = "--data-binary"
    args[#args + 1] = sh.quote("@" .. dir .. "/req")
  end
  args[#args + 1] = sh.quote(h.base_url .. target)
  local out, err, code = sh.run(table.concat(args, " "))
  local hf = io.open(dir .. "/h", "rb")
  local htext = hf and hf:read("a") or ""
  if hf then hf:close() end
  local bf = io.open(dir .. "/b", "rb")
  local body = bf and bf:read("a") or ""
  if bf then bf:close() end
  os.execute("rm -rf " .. sh.quote(dir))
  if code ~= 0 then return nil, err ~= "" and err or ("curl exit " .. tostring(code)), code end
  local status, headers = parse_headers(htext)
  local res = {status = status or tonumber(out), headers = headers, body = body}
  res.json = require("cjson.safe").decode(body)
  return res
end

-- request(h, method, target, body [, o]) -> res | nil, err
-- body: a table (JSON-encoded) or a string, signed as sent. o as in
-- authorization() plus o.headers and o.wechatpay_serial.
function M.request(h, method, target, body, o)
  o = o or {}
  if type(body) == "table" then body = cjson.encode(body) end
  local auth = M.authorization(h, method, target, body, o)
  local headers = {"Authorization: " .. auth, "Accept: application/json"}
  -- the key the answer is to be signed under, as a client sends it: the
  -- PUB_KEY_ID unless o.wechatpay_serial names another (false: none)
  local ws = o.wechatpay_serial
  if ws == nil then ws = h.key_id end
  if ws then headers[#headers + 1] = "Wechatpay-Serial: " .. ws end
  if body then headers[#headers + 1] = "Content-Type: application/json" end
  for _, line in ipairs(o.headers or {}) do headers[#headers + 1] = line end
  return M.raw(h, method, target, {body = body, headers = headers, timeout = o.timeout})
end

-- control(h, path, body) -> res: the sandbox-only endpoints (unsigned)
function M.control(h, path, body)
  return M.raw(h, body and "POST" or "GET", path, {body = body and cjson.encode(body),
    headers = {"Content-Type: application/json"}})
end

-- verify(h, res) -> true | false, reason: checks the response signature with
-- platform.pub.pem, the serial and the timestamp window, as a client must
local platform = {}
function M.verify(h, res)
  local key = platform[h.state]
  if not key then
    key = assert(crypto.public_key("file://" .. h.state .. "/platform.pub.pem"))
    platform[h.state] = key
  end
  local hd = res.headers
  local ts, nonce, sig, serial = hd["wechatpay-timestamp"], hd["wechatpay-nonce"], hd["wechatpay-signature"], hd["wechatpay-serial"]
  if not (ts and nonce and sig and serial) then return false, "headers missing" end
  -- the same key under either name: its PUB_KEY_ID or its certificate's serial
  local cert = crypto.certificate("file://" .. h.state .. "/platform.pem")
  if serial ~= h.key_id and not (cert and serial == cert:serial():upper()) then return false, "unknown serial " .. serial end
  if math.abs(qos.time() - tonumber(ts)) > 300 then return false, "timestamp out of window" end
  local ok = key:verify(ts .. "\n" .. nonce .. "\n" .. res.body .. "\n", sig)
  if not ok then return false, "signature mismatch" end
  return true
end

-- iso(epoch) -> RFC 3339 in +08:00
M.iso = require("quan.time").beijing

-- now(h) -> the sandbox's business clock (epoch seconds), which
-- POST /sandbox/clock may have moved ahead of real time
function M.now(h)
  local res = assert(M.control(h, "/sandbox/clock"))
  return require("quan.time").parse(res.json.now)
end

-- stock_body(h, over) -> a valid create-stock body, fields of `over` merged in
-- (nested tables merged one level deep)
function M.stock_body(h, over)
  local now = M.now(h)
  local b = {
    stock_name = "sandbox stock",
    belong_merchant = h.mchid,
    available_begin_time = M.iso(now),
    available_end_time = M.iso(now + 7 * 86400),
    stock_use_rule = {max_coupons = 10, max_amount = 1000, max_coupons_per_user = 2,
      natural_person_limit = false, prevent_api_abuse = false},
    no_cash = false,
    stock_type = "NORMAL",
    coupon_use_rule = {fixed_normal_coupon = {coupon_amount = 100, transaction_minimum = 200},
      coupon_available_time = {}},
    out_request_no = "stock" .. crypto.nonce(12),
  }
  for k, v in pairs(over or {}) do
    if type(v) == "table" and type(b[k]) == "table" then
      for k2, v2 in pairs(v) do b[k][k2] = v2 end
    else
      b[k] = v
    end
  end
  return b
end

return M
