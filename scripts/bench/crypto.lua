-- scripts/bench/crypto.lua: RSA-2048 signatures (and verifications) per
-- second through quan.crypto, beside `openssl speed rsa2048` in the same run.
-- Run as `build/quan scripts/bench/crypto.lua [seconds]`.
--
-- Both sides are measured in CPU seconds of their own process, as
-- `openssl speed` reports by default, so other load on the machine shifts
-- both alike. quan signs for half the time just before and half just after
-- openssl's signing phase and the two are pooled, so a drift in machine speed
-- during the run does not favour either side. On a shared machine single
-- runs still scatter by several per cent; `rounds` repeats the whole
-- sequence and pools all of it.
-- (A noise-free check, counting instructions under callgrind: one key:sign
-- of a 200-byte message costs 0.2% more instructions than one EVP_PKEY_sign
-- of openssl speed's loop.)
-- Usage: build/quan scripts/bench/crypto.lua [seconds=3] [rounds=2]
local crypto = require "quan.crypto"
local qos = require "quan.os"

local seconds = tonumber(arg and arg[1]) or 3
local rounds = math.tointeger(tonumber(arg and arg[2])) or 2

-- a typical string-to-sign: method, URL, timestamp, nonce, body, each
-- line ended by \n (docs/client.md, wechatpay.sign)
local message = "POST\n/v3/marketing/favor/coupon-stocks\n1554208460\n"
  .. crypto.nonce() .. "\n" .. string.rep('{"stock_name":"x"}', 8) .. "\n"

-- run(fn, every, secs) -> calls, CPU seconds: fn called for secs CPU seconds
local function run(fn, every, secs)
  local n, t0 = 0, qos.cputime()
  local t
  repeat
    for _ = 1, every do fn() end
    n = n + every
    t = qos.cputime() - t0
  until t >= secs
  return n, t
end

local function openssl_speed()
  local p = assert(io.popen("openssl speed -seconds " .. seconds .. " rsa2048 2>/dev/null"))
  local out = p:read("a")
  p:close()
  local s, v = out:match("rsa 2048 bits%s+[%d.]+s%s+[%d.]+s%s+([%d.]+)%s+([%d.]+)")
  assert(s, "cannot parse `openssl speed rsa2048` output:\n" .. out)
  return tonumber(s), tonumber(v)
end

local key = crypto.generate_rsa(2048)
local pub = key:public()
local sig = key:sign(message)
assert(pub:verify(message, sig))
for _ = 1, 50 do key:sign(message) end -- warm up

local sign = function() key:sign(message) end
local verify = function() pub:verify(message, sig) end
local sn, st, vn, vt, os_sign, os_verify = 0, 0, 0, 0, 0, 0
local runs = {}
for _ = 1, rounds do
  local n1, t1 = run(sign, 8, seconds / 2)
  local s, v = openssl_speed()
  local n2, t2 = run(sign, 8, seconds / 2)
  local n3, t3 = run(verify, 256, seconds)
  sn, st, vn, vt = sn + n1 + n2, st + t1 + t2, vn + n3, vt + t3
  os_sign, os_verify = os_sign + s / rounds, os_verify + v / rounds
  runs[#runs + 1] = string.format("%.0f/%.0f", (n1 + n2) / (t1 + t2), s)
end
local q_sign, q_verify = sn / st, vn / vt

local function line(name, value, unit)
  print(string.format("%s: %s%s", name, value, unit and " " .. unit or ""))
end
line("crypto.sign_per_sec", string.format("%.1f", q_sign), "sign/s")
line("openssl.sign_per_sec", string.format("%.1f", os_sign), "sign/s")
line("crypto.sign_ratio", string.format("%.3f", q_sign / os_sign))
line("crypto.verify_per_sec", string.format("%.1f", q_verify), "verify/s")
line("openssl.verify_per_sec", string.format("%.1f", os_verify), "verify/s")
line("crypto.verify_ratio", string.format("%.3f", q_verify / os_verify))
line("crypto.sign_rounds", table.concat(runs, " "), "sign/s (quan/openssl per round)")
