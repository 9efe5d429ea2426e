-- tests.support.openssl: key material made at test time with the openssl
-- command line, the independent implementation specs cross-check against.
local sh = require "tests.support.sh"

local M = {}

-- run(cmd) -> stdout; fails the test when cmd exits non-zero
function M.run(cmd)
  local out, err, code = sh.run(cmd)
  assert(code == 0, cmd .. " failed (" .. tostring(code) .. "): " .. err)
  return out
end

-- ok(cmd) -> true | false, stderr ; for commands expected to fail sometimes
function M.ok(cmd)
  local out, err, code = sh.run(cmd)
  return code == 0, err .. out
end

-- keys([serial]) -> a table of paths in a fresh directory:
--   pkcs8, pkcs1 (private), spki, pkcs1_pub (public), cert (self-signed,
--   serial given or 0x5F1C72E2A8931B72A2E13AF8DEE92471EB397115),
--   encrypted (PKCS#8 under `passphrase`), legacy (PKCS#1 with Proc-Type
--   encryption under `passphrase`), other (a second PKCS#8 key), dir
-- (keys come from the CLI, so a spec under valgrind does not pay for keygen)
function M.keys(serial)
  local dir = sh.tmpdir()
  local q = sh.quote
  local k = {
    dir = dir,
    pkcs8 = dir .. "/key8.pem",
    pkcs1 = dir .. "/key1.pem",
    spki = dir .. "/pub.pem",
    pkcs1_pub = dir .. "/pub1.pem",
    cert = dir .. "/cert.pem",
    encrypted = dir .. "/enc.pem",
    other = dir .. "/other.pem",
    legacy = dir .. "/legacy.pem",
    passphrase = "s3cret pass",
    serial = serial or "5F1C72E2A8931B72A2E13AF8DEE92471EB397115",
  }
  M.run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. q(k.pkcs8))
  M.run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. q(k.other))
  M.run("openssl rsa -in " .. q(k.pkcs8) .. " -traditional -out " .. q(k.pkcs1))
  M.run("openssl pkey -in " .. q(k.pkcs8) .. " -pubout -out " .. q(k.spki))
  M.run("openssl rsa -in " .. q(k.pkcs8) .. " -RSAPublicKey_out -out " .. q(k.pkcs1_pub))
  M.run("openssl req -x509 -new -key " .. q(k.pkcs8) .. " -subj '/CN=quan test/O=quan'"
    .. " -days 2 -set_serial 0x" .. k.serial .. " -out " .. q(k.cert))
  M.run("openssl pkcs8 -topk8 -in " .. q(k.pkcs8) .. " -passout " .. q("pass:" .. k.passphrase)
    .. " -out " .. q(k.encrypted))
  M.run("openssl rsa -in " .. q(k.pkcs8) .. " -traditional -aes256 -passout "
    .. q("pass:" .. k.passphrase) .. " -out " .. q(k.legacy))
  return k
end

-- decode base64 text with the openssl CLI into a file; returns the path
function M.unbase64(b64, path)
  sh.write(path .. ".b64", b64)
  M.run("openssl base64 -d -A -in " .. sh.quote(path .. ".b64") .. " -out " .. sh.quote(path))
  return path
end

-- base64 of a file's bytes, by the openssl CLI
function M.base64(path)
  return (M.run("openssl base64 -A -in " .. sh.quote(path)):gsub("%s+$", ""))
end

-- hex(s) -> lower-case hex of the bytes of s; unhex is the reverse
function M.hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function M.unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- python3 with the `cryptography` package, an AES-GCM implementation that
-- does not share our code path; nil when not installed
function M.python_crypto()
  local _, _, code = sh.run("python3 -c 'import cryptography' 2>/dev/null")
  return code == 0
end

-- py_gcm(ops) -> results: python AES-GCM over a batch (one process);
-- each op is {"enc"|"dec", key, nonce, aad, data} (raw bytes); each result is
-- the output bytes, or false when the tag does not verify
function M.py_gcm(ops)
  local script = [[
import sys, binascii
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
u = binascii.unhexlify
for line in sys.stdin.read().split("\n"):
    if not line:
        continue
    op, k, n, a, d = (line.split(" ") + [""] * 5)[:5]
    try:
        g = AESGCM(u(k))
        out = g.encrypt(u(n), u(d), u(a)) if op == "enc" else g.decrypt(u(n), u(d), u(a))
        print("ok:" + out.hex())
    except Exception:
        print("FAIL")
]]
  local lines = {}
  for i, op in ipairs(ops) do
    lines[i] = table.concat({op[1], M.hex(op[2]), M.hex(op[3]), M.hex(op[4]), M.hex(op[5])}, " ")
  end
  local input = sh.write(sh.tmpdir() .. "/gcm.txt", table.concat(lines, "\n") .. "\n")
  local out = M.run("python3 -c " .. sh.quote(script) .. " < " .. sh.quote(input))
  local results = {}
  for line in out:gmatch("[^\n]+") do
    results[#results + 1] = line:match("^ok:(%x*)$") and M.unhex(line:sub(4)) or false
  end
  assert(#results == #ops, "python3 gave " .. #results .. " results for " .. #ops .. " operations")
  return results
end

return M
