-- quan.sandbox.auth: the request signature, checked as WeChat Pay checks it.
--
-- A request carries `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="...",
-- serial_no="...",timestamp="...",nonce_str="...",signature="..."`, the
-- signature being RSA-SHA256 over "METHOD\nPATH\nTIMESTAMP\nNONCE\nBODY\n"
-- under the merchant's key. Every refusal is a 401 SIGN_ERROR whose detail
-- names the field (as the API's do).
local M = {}

local sign = require "wechatpay.sign"

M.SCHEME = sign.SCHEME

-- sign_error(issue, message, field[, extra]) -> the error table of a 401
-- SIGN_ERROR (extra: more detail fields)
function M.sign_error(issue, message, field, extra)
  local detail = {field = field, location = "authorization", issue = issue}
  if extra then for k, v in pairs(extra) do detail[k] = v end end
  return {status = 401, code = "SIGN_ERROR", message = message, detail = detail}
end
local sign_error = M.sign_error

-- parse(value) -> fields {mchid, serial_no, timestamp, nonce_str,
-- signature, ...} | nil, error table
function M.parse(h)
  if not h or h == "" then
    return nil, sign_error("authorization header is missing", "Http头缺少Authorization (the Authorization header is missing)", "authorization")
  end
  local scheme, rest = h:match("^(%S+) (.*)$")
  if scheme ~= M.SCHEME then
    return nil, sign_error("unsupported authorization scheme", "Http头Authorization值格式错误 (the scheme must be " .. M.SCHEME .. ")", "authorization")
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

-- check(req, sign_body, merchant, now) -> fields | nil, error table
-- req: {method, path, headers}; sign_body: the body that was signed (the
-- meta part of an upload); merchant: {mchid, serial (of its certificate,
-- upper case), public_key}; now: epoch seconds (the timestamp must be
-- within 300 s of it).
function M.check(req, sign_body, merchant, now)
  local f, err = M.parse(req.headers.authorization)
  if not f then return nil, err end
  if f.mchid ~= merchant.mchid then
    return nil, sign_error("mchid not found", "商户号不存在或与证书不匹配 (unknown mchid " .. f.mchid .. ")", "mchid")
  end
  if f.serial_no:upper() ~= merchant.serial then
    return nil, sign_error("serial_no not found", "商户证书序列号有误 (serial_no does not name the merchant certificate)", "serial_no")
  end
  local ts = f.timestamp:match("^%d+$") and tonumber(f.timestamp)
  if not ts or math.abs(now - ts) > 300 then
    return nil, sign_error("timestamp expired", "请求的时间戳与当前时间相差超过5分钟 (timestamp is more than 300 s off)", "timestamp")
  end
  if #f.nonce_str > 64 then
    return nil, sign_error("nonce_str too long", "Http头Authorization值格式错误 (nonce_str longer than 64)", "nonce_str")
  end
  local message = sign.message(req.method, req.path, f.timestamp, f.nonce_str, sign_body)
  local ok = merchant.public_key:verify(message, f.signature)
  if not ok then
    return nil, sign_error("sign not match", "错误的签名，验签失败 (signature does not verify)", "signature", {
      sign_information = {method = req.method, url = req.path, sign_message_length = #message,
        truncated_sign_message = message:sub(1, 160)}})
  end
  return f
end

-- REPLAY: the error of a nonce already used within the time window
M.REPLAY = sign_error("nonce reused", "重复的请求 (nonce_str was already used within the time window)", "nonce_str")

return M
