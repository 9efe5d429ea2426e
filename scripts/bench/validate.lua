-- scripts/bench/validate.lua: the cost of validating the seed's create-stock
-- body (filled), against one request's CPU = one RSA-2048 sign + one verify,
-- both measured in this run, warm (best of rounds) and right after an idle
-- wait (medians). Prints `name: value unit` lines.
package.path = "./?.lua;" .. package.path
local validate = require "wechatpay.favor.validate"
local seed = require "tests.support.seed"
local clock = os.clock

local body = seed.filled(seed.NOW)
local opts = { now = seed.NOW }
local PATH = "/v3/marketing/favor/coupon-stocks"
assert(validate.request("POST", PATH, body, opts), "the filled seed must validate")

-- best of several rounds: the machine is shared, the minimum is the cost
local function best(rounds, n, fn)
  local b = math.huge
  for _ = 1, rounds do
    local t = clock()
    for _ = 1, n do fn() end
    b = math.min(b, (clock() - t) / n)
  end
  return b
end

local v = best(15, 2000, function() validate.request("POST", PATH, body, opts) end)
print(("validate.seed_us: %.2f us"):format(v * 1e6))

local bad = seed.verbatim()
local vb = best(5, 500, function() validate.request("POST", PATH, bad, opts) end)
print(("validate.seed_verbatim_16_findings_us: %.2f us"):format(vb * 1e6))

local ok, crypto = pcall(require, "quan.crypto")
if ok and crypto.generate_rsa then
  local key = crypto.generate_rsa(2048)
  local pub = key:public()
  local msg = "POST\n" .. PATH .. "\n1795824000\nNONCE\n" .. require("cjson").encode(body) .. "\n"
  local sig = key:sign(msg)
  local s = best(5, 40, function() key:sign(msg) end)
  local ver = best(5, 200, function() assert(pub:verify(msg, sig)) end)
  print(("validate.rsa2048_sign_us: %.1f us"):format(s * 1e6))
  print(("validate.rsa2048_verify_us: %.1f us"):format(ver * 1e6))
  print(("validate.share_of_request: %.2f%%"):format(100 * v / (s + ver)))

  -- The same right after an idle wait as long as a loopback round trip,
  -- as a sequential client runs it: the machine's other work leaves the
  -- caches cold (see docs/client.md). Medians of interleaved samples.
  local qos = require "quan.os"
  local vs, cs = {}, {}
  for i = 1, 400 do
    qos.sleep(0.0015)
    local c0 = qos.cputime()
    if i % 2 == 0 then
      validate.request("POST", PATH, body, opts)
      vs[#vs + 1] = qos.cputime() - c0
    else
      assert(pub:verify(msg, key:sign(msg)))
      cs[#cs + 1] = qos.cputime() - c0
    end
  end
  table.sort(vs)
  table.sort(cs)
  local vw, cw = vs[(#vs + 1) // 2], cs[(#cs + 1) // 2]
  print(("validate.seed_after_wait_us: %.1f us"):format(vw * 1e6))
  print(("validate.share_after_wait: %.2f%% (of a sign + verify after the same wait)"):format(100 * vw / cw))
else
  print("validate.share_of_request: n/a (quan.crypto not built in)")
end
