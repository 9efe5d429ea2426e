-- quan.sandbox.files: the state directory of a sandbox. On first start it
-- makes the CA, the server certificate, the merchant identity and key, the
-- platform key and its PUB_KEY_ID, and the APIv3 key, as files with fixed
-- names (docs/sandbox.md lists them); config.lua is rewritten at every start
-- with the address the sandbox listens on.
local M = {}

local crypto = require "quan.crypto"
local qos = require "quan.os"

local qpath = require "quan.path"
local read = qpath.read

-- write(path, text [, mode]): quan.path.write's, raising
local function write(path, text, mode)
  assert(qpath.write(path, text, mode))
end
M.write = write

local function trim(s) return s and (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function digits(n)
  local out = {}
  local bytes = crypto.random_bytes(n)
  for i = 1, n do out[i] = tostring(bytes:byte(i) % 10) end
  return table.concat(out)
end

local function hex(n)
  return (crypto.random_bytes(n):gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- exists(dir) -> true when the state dir has been set up
function M.exists(dir)
  return read(dir .. "/platform.key_id") ~= nil
end

-- the identity files setup makes (platform.pem is made again at each start)
M.IDENTITY = { "ca.pem", "server.pem", "server.key.pem", "mchid", "appid", "merchant.key.pem", "merchant.pem",
  "merchant.serial", "platform.key.pem", "platform.pub.pem", "apiv3.key", "platform.key_id" }

-- setup(dir): makes the identity files unless they exist. Raises on failure
-- (an unwritable state dir is fatal for the sandbox), and for a state made
-- before that lacks some of them (they cannot be made again: the keys the
-- profiles and certificates name would change)
function M.setup(dir)
  qos.mkdir(dir, 448) -- 0700; fine when it exists
  if M.exists(dir) then
    local missing = {}
    for _, name in ipairs(M.IDENTITY) do
      if not qos.stat(dir .. "/" .. name) then missing[#missing + 1] = name end
    end
    if #missing > 0 then
      error(("the state lacks %s: put %s back, or start with a new --state"):format(
        table.concat(missing, ", "), #missing == 1 and "it" or "them"), 0)
    end
    return false
  end
  local p = function(name) return dir .. "/" .. name end
  -- CA and the server certificate for 127.0.0.1 and localhost
  local ca_key = crypto.generate_rsa(2048)
  local ca = crypto.make_certificate {key = ca_key, subject = "/O=quan sandbox/CN=quan sandbox CA", days = 3650, ca = true}
  local server_key = crypto.generate_rsa(2048)
  local server = crypto.make_certificate {key = server_key, issuer_key = ca_key, issuer_cert = ca,
    subject = "/O=quan sandbox/CN=127.0.0.1", days = 3650, san = {"127.0.0.1", "localhost"}}
  write(p("ca.pem"), ca:pem(), 420)
  write(p("server.pem"), server:pem() .. ca:pem(), 420)
  assert(server_key:write_pem(p("server.key.pem")))
  -- the merchant: id, appid, API key and certificate (its serial names the key)
  local mchid = "19" .. digits(8)
  write(p("mchid"), mchid .. "\n", 420)
  write(p("appid"), "wx" .. hex(8) .. "\n", 420)
  local merchant_key = crypto.generate_rsa(2048)
  local merchant = crypto.make_certificate {key = merchant_key, issuer_key = ca_key, issuer_cert = ca,
    subject = "/O=quan sandbox/OU=" .. mchid .. "/CN=merchant " .. mchid, days = 3650}
  assert(merchant_key:write_pem(p("merchant.key.pem")))
  write(p("merchant.pem"), merchant:pem(), 420)
  write(p("merchant.serial"), merchant:serial() .. "\n", 420)
  -- the platform: the WeChat Pay public key and its id
  local platform_key = crypto.generate_rsa(2048)
  assert(platform_key:write_pem(p("platform.key.pem")))
  write(p("platform.pub.pem"), platform_key:pem_public(), 420)
  -- APIv3 key: 32 characters, as the merchant portal sets it
  write(p("apiv3.key"), crypto.nonce(32), 384)
  -- last, so a half-made dir is made again
  write(p("platform.key_id"), "PUB_KEY_ID_0114" .. digits(24) .. "\n", 420)
  return true
end

-- platform_certificate(dir[, existing]) -> cert: the platform certificate
-- of the platform key (platform.pem). Made (or made again when it is not
-- the platform key's) by the sandbox's start, under the state lock, also in
-- a state dir made before it existed; existing = true only loads it (the
-- handlers). Self-signed: WeChat Pay's are issued by its own CA, whose chain
-- no SDK checks. Its serial is the certificate-mode name of the key that
-- PUB_KEY_ID_... names in public-key mode.
function M.platform_certificate(dir, existing)
  local path = dir .. "/platform.pem"
  local cert = crypto.certificate("file://" .. path)
  if existing then return assert(cert, "sandbox state " .. dir .. ": missing platform.pem") end
  local pub = read(dir .. "/platform.pub.pem")
  if cert and cert:public_key():pem_public() == pub then return cert end
  local key = assert(crypto.private_key("file://" .. dir .. "/platform.key.pem"))
  cert = assert(crypto.make_certificate {key = key, days = 1825,
    subject = "/C=CN/L=ShenZhen/O=Tenpay.com/OU=Tenpay.com CA Center/CN=Tenpay.com sign (quan sandbox)"})
  write(path, cert:pem(), 420)
  return cert
end

-- identity(dir) -> {mchid, appid, serial, key_id}
function M.identity(dir)
  local function field(name)
    local v = trim(read(dir .. "/" .. name))
    if not v or v == "" then error("sandbox state " .. dir .. ": missing " .. name, 2) end
    return v
  end
  return {mchid = field("mchid"), appid = field("appid"), serial = field("merchant.serial"):upper(),
    key_id = field("platform.key_id")}
end

local function lua_string(s) return ("%q"):format(s) end

-- KEY_MODES: how the sandbox's merchant verifies WeChat Pay's answers, as
-- `quan sandbox --key-mode` names them (docs/sandbox.md, "Key modes"):
--   public_key   a merchant who joined since 2024: everything signed under
--                the WeChat Pay public key (PUB_KEY_ID_...), no platform
--                certificates (the default)
--   certificate  a merchant in certificate mode: everything signed under the
--                platform certificate's serial, certificates served
--   switching    a merchant switching from the certificate to the public
--                key: an answer under the PUB_KEY_ID when the request's
--                Wechatpay-Serial names it, else under the certificate
M.KEY_MODES = {"public_key", "certificate", "switching"}
M.DEFAULT_KEY_MODE = "public_key"

-- certs_text(dir, id, mode) -> the `certs` entry of the profile: the keys a
-- merchant in that key mode holds
local function certs_text(dir, id, mode)
  local f = function(name) return lua_string("file://" .. dir .. "/" .. name) end
  local by_key = "[" .. lua_string(id.key_id) .. "] = " .. f("platform.pub.pem")
  local serial = M.platform_certificate(dir, true):serial():upper()
  local by_cert = "[" .. lua_string(serial) .. "] = " .. f("platform.pem")
  if mode == "certificate" then return "{ " .. by_cert .. " }" end
  if mode == "switching" then return "{ " .. by_key .. ", " .. by_cert .. " }" end
  return "{ " .. by_key .. " }"
end

-- config_text(dir, base_url[, key_mode]) -> the client config file
-- (docs/client.md format); its certs hold what a merchant in key_mode
-- (default public_key) holds
function M.config_text(dir, base_url, key_mode)
  local id = M.identity(dir)
  local mode = key_mode or M.DEFAULT_KEY_MODE
  local f = function(name) return lua_string("file://" .. dir .. "/" .. name) end
  return table.concat({
    "-- written by `quan sandbox` at every start; edits are overwritten",
    "-- key mode " .. mode .. " (docs/sandbox.md, \"Key modes\")",
    "return {",
    "  default = \"sandbox\",",
    "  profiles = {",
    "    sandbox = {",
    "      mchid = " .. lua_string(id.mchid) .. ",",
    "      serial = " .. lua_string(id.serial) .. ",",
    "      private_key = " .. f("merchant.key.pem") .. ",",
    "      apiv3_key = " .. f("apiv3.key") .. ",",
    "      certs = " .. certs_text(dir, id, mode) .. ",",
    "      base_url = " .. lua_string(base_url) .. ",",
    "      ca_file = " .. lua_string(dir .. "/ca.pem") .. ",",
    "      appid = " .. lua_string(id.appid) .. ",",
    "      sandbox_state = " .. lua_string(dir) .. ", -- a sandbox: quan plan reads its business clock",
    "    },",
    "  },",
    "}",
    "",
  }, "\n")
end

return M
