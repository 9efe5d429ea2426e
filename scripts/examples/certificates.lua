-- scripts/examples/certificates.lua: downloads WeChat Pay's platform
-- certificates (GET /v3/certificates, decrypted with the APIv3 key of the
-- profile), writes each to DIR/<serial>.pem and prints the `certs` entry of
-- the profile that uses them. Run it before the current certificate expires
-- (WeChat Pay adds the next one 10 days ahead; keep both during the switch).
--
--   quan run [--profile NAME] scripts/examples/certificates.lua [DIR]
--   quan sandbox --key-mode certificate --state /tmp/sbxc &
--   QUAN_CONFIG=/tmp/sbxc/config.lua quan run scripts/examples/certificates.lua /tmp/certs
local wechatpay = require "wechatpay"
local qos = require "quan.os"

local dir = arg[1] or "certs"
if dir == "-h" or dir == "--help" then
  print("usage: quan run scripts/examples/certificates.lua [DIR]  (default ./certs)")
  return
end
if dir:sub(1, 1) ~= "/" then dir = qos.cwd() .. "/" .. dir end -- the profile may be read elsewhere
local wx = wechatpay.client()
local list, err = wx:certificates()
if not list then
  io.stderr:write("certificates: ", tostring(err), "\n")
  if err.code == "RESOURCE_NOT_EXISTS" then -- 无可用的平台证书
    io.stderr:write("certificates: a merchant that uses the WeChat Pay public key (PUB_KEY_ID_...) has no platform ",
      "certificates; its certs keep that key\n")
  end
  os.exit(1)
end
local ok, why = qos.mkdir(dir, 493) -- 0755: certificates are public
if not ok then
  io.stderr:write("certificates: ", tostring(why), "\n")
  os.exit(1)
end
local lines = {}
for _, c in ipairs(list) do
  local path = dir .. "/" .. c.serial_no .. ".pem"
  local tmp = path .. ".tmp" -- whole or not at all: a profile may be reading the old one
  local f = assert(io.open(tmp, "wb"))
  f:write(c.pem)
  f:close()
  assert(os.rename(tmp, path))
  io.stderr:write(("%s  valid %s .. %s  -> %s\n"):format(c.serial_no, c.effective_time, c.expire_time, path))
  lines[#lines + 1] = ("    [%q] = %q,"):format(c.serial_no, "file://" .. path)
end
-- what the profile's certs gets (keep a PUB_KEY_ID_... entry you have)
print("certs = {")
print(table.concat(lines, "\n"))
print("}")
