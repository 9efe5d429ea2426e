-- tests.support.https: a CA, certificates and a loopback HTTPS server
-- (tests/support/https_server.py) for the http and async specs.
local qos = require "quan.os"
local cjson = require "cjson"
local sh = require "tests.support.sh"

local M = {}

local function run(cmd)
  local out, err, code = sh.run(cmd)
  assert(code == 0, cmd .. " failed: " .. err)
  return out
end

local function ca(dir, name)
  local key, pem = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".pem"
  run(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    .. " -keyout %s -out %s -days 2 -subj /CN=%s"):format(key, pem, name))
  return key, pem
end

local function leaf(dir, name, san, ca_key, ca_pem)
  local key, csr, pem = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".csr", dir .. "/" .. name .. ".pem"
  local ext = sh.write(dir .. "/" .. name .. ".ext", "subjectAltName=" .. san
    .. "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
  run(("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    .. " -keyout %s -out %s -subj /CN=%s"):format(key, csr, name))
  run(("openssl x509 -req -in %s -CA %s -CAkey %s -set_serial 0x%s -days 2 -out %s -extfile %s")
    :format(csr, ca_pem, ca_key, tostring(os.time()) .. tostring(math.random(1000, 9999)), pem, ext))
  return key, pem
end

-- pki() -> {dir, ca, other_ca, cert, key, wrong_cert, wrong_key}: a test CA,
-- a server certificate for 127.0.0.1 and localhost signed by it, one for
-- another name only (hostname mismatch), and an unrelated second CA.
function M.pki()
  local dir = sh.tmpdir()
  local ca_key, ca_pem = ca(dir, "quan-test-ca")
  local _, other = ca(dir, "quan-other-ca")
  local key, cert = leaf(dir, "server", "IP:127.0.0.1,DNS:localhost", ca_key, ca_pem)
  local wkey, wcert = leaf(dir, "wrong", "DNS:other.invalid", ca_key, ca_pem)
  return { dir = dir, ca = ca_pem, other_ca = other, cert = cert, key = key,
           wrong_cert = wcert, wrong_key = wkey }
end

local Server = {}
Server.__index = Server

-- start(cert, key) -> server {port, closed_port, url(path), stop()}
function M.start(cert, key)
  local dir = sh.tmpdir()
  local out = dir .. "/server.out"
  local pid = assert(qos.spawn({ "python3", "tests/support/https_server.py", cert, key },
    { stdout = out, stderr = dir .. "/server.err" }))
  local line
  local deadline = qos.now() + 20
  repeat
    qos.sleep(0.02)
    local f = io.open(out)
    if f then line = f:read("l"); f:close() end
    if not line and qos.wait(pid, true) then
      error("test server exited: " .. sh.read(dir .. "/server.err"))
    end
  until line or qos.now() > deadline
  assert(line, "test server did not start")
  local info = cjson.decode(line)
  return setmetatable({ pid = pid, port = math.tointeger(info.port),
    closed_port = math.tointeger(info.closed_port) }, Server)
end

function Server:url(path)
  return ("https://127.0.0.1:%d%s"):format(self.port, path or "/")
end

-- stats() -> {connections, active, max_active, drops} of the server
function Server:stats(ca_path)
  local res = assert(require("quan.http").request { url = self:url("/stats"), cafile = ca_path })
  return cjson.decode(res.body)
end

-- interrupt(pki, source, in_flight) -> how, code, stdout, stderr
-- Runs `source` as a quan script with arg[1] = the URL of a 20 s request and
-- arg[2] = the CA file, waits until the server has `in_flight` requests of it
-- in flight, sends SIGINT and waits for the process to end.
function M.interrupt(pki, source, in_flight)
  local dir = sh.tmpdir()
  local script = sh.write(dir .. "/script.lua", source)
  local s = M.start(pki.cert, pki.key)
  local pid = assert(qos.spawn({ sh.quan, script, s:url("/slow?ms=20000"), pki.ca },
    { stdout = dir .. "/out", stderr = dir .. "/err" }))
  local deadline = qos.now() + 20
  while s:stats(pki.ca).active < in_flight and qos.now() < deadline do qos.sleep(0.02) end
  qos.kill(pid, "INT")
  local how, code = qos.wait(pid)
  s:stop()
  return how, code, sh.read(dir .. "/out"), sh.read(dir .. "/err")
end

function Server:stop()
  if self.pid then
    qos.kill(self.pid, "KILL")
    qos.wait(self.pid)
    self.pid = nil
  end
end

return M
