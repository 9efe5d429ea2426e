-- tests/fuzz/natives.lua: what the fuzz target (tests/fuzz/natives.c) runs
-- for each input. Every call below takes bytes a peer or a file controls and
-- promises to answer with a value or `nil, message`: one(data) raises when a
-- call raises instead, or when a round trip does not hold.
package.path = "./?.lua;" .. package.path
local crypto = require "quan.crypto"
local fastjson = require "quan.json"
-- wechatpay.json without its C fast path: the Lua encoder alone
local saved = package.preload["quan.json"]
package.preload["quan.json"] = nil
local json = require "wechatpay.json"
package.preload["quan.json"] = saved
local verify = require "wechatpay.verify"
local validate = require "wechatpay.favor.validate"
local create_stock = require("wechatpay.favor.schema").by_id.create_stock
local cjson = require "cjson.safe"

local key = crypto.generate_rsa(2048)
local pub = key:public()
local apiv3 = "0123456789abcdef0123456789ABCDEF"
local keys = { PUB_KEY_ID_0114 = pub }
-- a client whose platform key is `key`: notifications signed here verify,
-- so a fuzzed body reaches the decoding and decryption behind the checks
local hooks = require("wechatpay").hooks
local errors = require("wechatpay").errors
local wx = require("wechatpay").new {
  mchid = "1900000001", serial = "ABC123", private_key = crypto.generate_rsa(2048),
  certs = { PUB_KEY_ID_0114 = pub }, apiv3_key = apiv3, base_url = "https://127.0.0.1:1",
}

local function must(what, ok, ...)
  if not ok then error(what .. " raised: " .. tostring((...)), 0) end
  return ...
end

function one(data)
  -- base64: a decode is nil or a round trip of what it accepted
  local raw = must("base64_decode", pcall(crypto.base64_decode, data))
  if raw and crypto.base64_encode(raw) ~= data then error("base64 round trip: " .. data, 0) end
  -- keys and certificates from PEM or DER text
  must("public_key", pcall(crypto.public_key, data))
  must("private_key", pcall(crypto.private_key, data))
  local cert = must("certificate", pcall(crypto.certificate, data))
  if cert then
    must("cert:serial", pcall(cert.serial, cert))
    must("cert:not_after", pcall(cert.not_after, cert))
    must("cert:public_key", pcall(cert.public_key, cert))
  end
  -- a signature from the world
  if must("verify", pcall(pub.verify, pub, "message", data)) then error("a fuzzed signature verified", 0) end
  -- AES-GCM: nonce and associated data from the input too
  local n = #data > 0 and (data:byte(1) % 16) + 1 or 1
  must("aes_gcm_decrypt", pcall(crypto.aes_gcm_decrypt, apiv3, ("n"):rep(n), data:sub(2, 9), data))
  -- JSON: what cjson reads, the fast encoder writes as the Lua encoder does
  local v = cjson.decode(data)
  if type(v) == "table" then
    local fast = must("quan.json.encode", pcall(fastjson.encode, v))
    if fast ~= nil then
      local slow = must("json.encode", pcall(json.encode, v))
      if fast ~= slow then error("fast and Lua encoders differ:\n" .. fast .. "\n" .. slow, 0) end
    end
    -- as a create-stock body (numbers as wechatpay.json.decode makes them):
    -- the text the validator writes of a body it passes is the encoder's
    fastjson.integers(v)
    local text = must("validate.text", pcall(validate.text, create_stock, v, { now = 1700000000 }))
    if text ~= nil then
      local slow = must("json.encode", pcall(json.encode, v))
      if text ~= slow then error("validate.text and the encoder differ:\n" .. text .. "\n" .. slow, 0) end
    end
  end
  -- a response or notification's checks, headers from the input
  local h = {
    ["wechatpay-timestamp"] = data:sub(1, 10), ["wechatpay-nonce"] = data:sub(11, 42),
    ["wechatpay-signature"] = data:sub(43, 386), ["wechatpay-serial"] = "PUB_KEY_ID_0114",
  }
  local ok = must("verify.check", pcall(verify.check, h, data, keys, 1700000000))
  if ok == true then error("fuzzed headers verified", 0) end
  -- a notification with a good signature over a fuzzed body (JSON-looking
  -- inputs only: signing costs a millisecond)
  if data:find("^%s*{") then
    local ts, nonce = "1700000000", "fuzz"
    local nh = {
      ["Wechatpay-Timestamp"] = ts, ["Wechatpay-Nonce"] = nonce, ["Wechatpay-Serial"] = "PUB_KEY_ID_0114",
      ["Wechatpay-Signature"] = key:sign(ts .. "\n" .. nonce .. "\n" .. data .. "\n"),
    }
    local ev, err = must("notification", pcall(wx.notification, wx, nh, data, { now = 1700000000 }))
    if ev == nil and (type(err) ~= "table" or err.kind ~= "verify") then error("notification: no verify error", 0) end
    -- the same body as a certificates answer (signed under the held serial,
    -- so its data is read): a list or an error table, never a raise
    local now = tostring(os.time())
    local answer = { status = 200, body = data, headers = {
      ["Wechatpay-Timestamp"] = now, ["Wechatpay-Nonce"] = nonce, ["Wechatpay-Serial"] = "PUB_KEY_ID_0114",
      ["Wechatpay-Signature"] = key:sign(now .. "\n" .. nonce .. "\n" .. data .. "\n") } }
    hooks.before_send = function() return answer end
    local list, cerr = must("certificates", pcall(wx.certificates, wx))
    hooks.before_send = nil
    if list == nil and not errors.is(cerr) then error("certificates: no error table: " .. tostring(cerr), 0) end
  end
end
