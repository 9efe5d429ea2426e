-- tests.support.wxfake: key material made with the openssl command line and
-- the python stand-in server (tests/support/fake_wechatpay.py) on loopback.
--   local fake = wxfake.start()      -- keys in a fresh dir, server running
--   fake.options()                   -- options for wechatpay.new
--   fake.stop()
local sh = require "tests.support.sh"
local qos = require "quan.os"

local M = {}

M.MCHID = "1900000001"
M.MERCHANT_SERIAL = "5F1C2A3B4D5E6F708192A3B4C5D6E7F801234567"
M.PUBKEY_ID = "PUB_KEY_ID_0114232134912410000000000000"
M.PLATFORM_SERIAL = "7132D72A03E93CDDF8C03BBD1F37EEDF01234567"

local function must(cmd)
  local out, err, code = sh.run(cmd)
  if code ~= 0 then error("command failed: " .. cmd .. "\n" .. out .. err, 2) end
  return out
end

-- keys(dir): writes every key and certificate the tests need into dir
function M.keys(dir)
  local q = sh.quote
  local script = table.concat({
    "set -e", "cd " .. q(dir),
    -- merchant API key and certificate (serial known)
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout merchant.key.pem -out merchant.crt.pem"
      .. " -subj /CN=merchant -days 2 -set_serial 0x" .. M.MERCHANT_SERIAL .. " 2>/dev/null",
    -- WeChat Pay public key (PUB_KEY_ID mode)
    "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out platform.key.pem 2>/dev/null",
    "openssl pkey -in platform.key.pem -pubout -out platform.pub.pem",
    -- a platform certificate (serial mode)
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout platcert.key.pem -out platcert.crt.pem"
      .. " -subj /CN=platform -days 2 -set_serial 0x" .. M.PLATFORM_SERIAL .. " 2>/dev/null",
    -- loopback TLS: a CA and a server certificate for 127.0.0.1
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem"
      .. " -subj /CN=fake-ca -days 2 -addext basicConstraints=critical,CA:TRUE"
      .. " -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null",
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout tls.key -out tls.csr"
      .. " -subj /CN=127.0.0.1 2>/dev/null",
    "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > tls.ext",
    "openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -set_serial 0x0A11 -days 2"
      .. " -extfile tls.ext -out tls.pem 2>/dev/null",
    "printf '%s' 0123456789abcdef0123456789ABCDEF > apiv3.key",
    "chmod 600 merchant.key.pem apiv3.key",
  }, "\n")
  must("sh -c " .. q(script))
end

local function here()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then dir = os.getenv("PWD") .. "/" .. dir end
  return dir
end

-- options_for(dir, base_url) -> options for wechatpay.new over the keys in dir
function M.options_for(dir, base_url)
  return {
    mchid = M.MCHID, serial = M.MERCHANT_SERIAL,
    private_key = "file://" .. dir .. "/merchant.key.pem",
    certs = {
      [M.PUBKEY_ID] = "file://" .. dir .. "/platform.pub.pem",
      [M.PLATFORM_SERIAL] = "file://" .. dir .. "/platcert.crt.pem",
    },
    apiv3_key = "file://" .. dir .. "/apiv3.key",
    base_url = base_url, ca_file = dir .. "/ca.pem", timeout = 10,
  }
end

-- start([dir]) -> fake: {dir, port, base_url, pid, options(), stop()}
function M.start(dir)
  if not dir then
    dir = sh.tmpdir()
    M.keys(dir)
  end
  local portfile = dir .. "/port." .. tostring(math.random(1, 1 << 30))
  local pid = assert(qos.spawn({
    "python3", here() .. "/fake_wechatpay.py",
    "--tls-cert", dir .. "/tls.pem", "--tls-key", dir .. "/tls.key",
    "--merchant-cert", dir .. "/merchant.crt.pem", "--mchid", M.MCHID,
    "--signer", M.PUBKEY_ID .. "=" .. dir .. "/platform.key.pem",
    "--signer", M.PLATFORM_SERIAL .. "=" .. dir .. "/platcert.key.pem",
    "--port-file", portfile,
  }, { stderr = dir .. "/server.err" }))
  local port
  for _ = 1, 400 do
    local f = io.open(portfile)
    if f then
      port = tonumber(f:read("l"))
      f:close()
      if port then break end
    end
    if qos.wait(pid, true) then break end
    qos.sleep(0.025)
  end
  if not port then
    qos.kill(pid, "KILL")
    error("fake_wechatpay did not start: " .. (sh.read(dir .. "/server.err") or ""))
  end
  local fake = { dir = dir, port = port, pid = pid, base_url = "https://127.0.0.1:" .. port }
  function fake.options(extra)
    local o = M.options_for(dir, fake.base_url)
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end
  function fake.stop()
    if fake.pid then
      qos.kill(fake.pid, "TERM")
      qos.wait(fake.pid)
      fake.pid = nil
    end
  end
  return fake
end

return M
