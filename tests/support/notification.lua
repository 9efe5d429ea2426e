-- tests.support.notification: COUPON.USE notifications made as WeChat Pay
-- makes them, with a sandbox's keys (its state dir), for the receiver's
-- specs and benchmark: the coupon encrypted with the APIv3 key
-- (AEAD_AES_256_GCM, associated data "coupon"), the body signed with the
-- platform key under its PUB_KEY_ID.
--
--   local maker = require("tests.support.notification").new(state_dir)
--   local note = maker:make{coupon_id = "...", ...}   -- {id, body, headers = {name -> value}}
--   maker:sign(body[, {timestamp =, serial =, nonce =}]) -> headers
--   maker.lines(headers) -> {"Name: value", ...} (quan.http's form)
local M = {}

local crypto = require "quan.crypto"
local cjson = require "cjson"
local qos = require "quan.os"
local qpath = require "quan.path"

local Maker = {}
Maker.__index = Maker

local function read(path) return assert(qpath.read(path)) end

-- new(state_dir) -> maker
function M.new(dir)
  return setmetatable({
    key = assert(crypto.private_key("file://" .. dir .. "/platform.key.pem")),
    key_id = (read(dir .. "/platform.key_id"):gsub("%s+$", "")),
    apiv3 = (read(dir .. "/apiv3.key"):gsub("%s+$", "")),
    seq = 0,
  }, Maker)
end

-- uuid() -> a random version-4 UUID, as real event ids are (the sandbox's)
local uuid = require("quan.sandbox.notify").event_id

-- maker:sign(body[, o]) -> headers: signed at o.timestamp (default now)
-- under o.serial (default the PUB_KEY_ID)
function Maker:sign(body, o)
  o = o or {}
  local ts = tostring(o.timestamp or math.floor(qos.time()))
  local nonce = o.nonce or crypto.nonce(32)
  return {
    ["Wechatpay-Timestamp"] = ts, ["Wechatpay-Nonce"] = nonce,
    ["Wechatpay-Signature"] = self.key:sign(ts .. "\n" .. nonce .. "\n" .. body .. "\n"),
    ["Wechatpay-Serial"] = o.serial or self.key_id,
    ["Wechatpay-Signature-Type"] = "WECHATPAY2-SHA256-RSA2048",
    ["Request-ID"] = crypto.nonce(24):upper(),
  }
end

-- maker:make([coupon][, o]) -> {id, body, headers}: a COUPON.USE event for
-- the coupon (fields merged into a made-up used coupon), signed as sign does
function Maker:make(coupon, o)
  self.seq = self.seq + 1
  local c = {
    stock_creator_mchid = "1900000001", stock_id = "16000001", coupon_id = ("%011d"):format(99000000000 + self.seq),
    coupon_name = "满2减1", status = "USED", description = "spec", create_time = "2027-03-01T10:00:00+08:00",
    coupon_type = "NORMAL", no_cash = false, singleitem = false,
    normal_coupon_information = { coupon_amount = 100, transaction_minimum = 200 },
    consume_information = { consume_time = "2027-03-01T12:00:00+08:00", consume_mchid = "1900000001",
      transaction_id = ("42000000012027%014d"):format(self.seq) },
  }
  for k, v in pairs(coupon or {}) do c[k] = v end
  local nonce = crypto.nonce(12)
  local id = (o and o.id) or uuid()
  local body = cjson.encode {
    id = id, create_time = "2027-03-01T12:00:01+08:00", resource_type = "encrypt-resource",
    event_type = "COUPON.USE", summary = "代金券核销通知",
    resource = { original_type = "coupon", algorithm = "AEAD_AES_256_GCM", associated_data = "coupon", nonce = nonce,
      ciphertext = crypto.aes_gcm_encrypt(self.apiv3, nonce, "coupon", cjson.encode(c)) },
  }
  return { id = id, body = body, headers = self:sign(body, o), coupon = c }
end

-- lines(headers) -> {"Name: value", ...}, sorted
function M.lines(headers)
  local list = {}
  for k, v in pairs(headers) do list[#list + 1] = k .. ": " .. v end
  table.sort(list)
  return list
end

return M
