-- scripts/bench/http.lua: quan.http over loopback HTTPS (a Python test server,
-- which bounds the rate): requests per second and client CPU per request,
-- sequentially (one kept-alive connection) and 16 in flight with quan.async.
-- Run from the repository root: build/quan scripts/bench/http.lua [N]
package.path = "./?.lua;" .. package.path
local http = require "quan.http"
local async = require "quan.async"
local qos = require "quan.os"
local https = require "tests.support.https"

local N = tonumber(arg and arg[1]) or 300
local pki = https.pki()
local server = https.start(pki.cert, pki.key)
local req = { url = server:url("/echo"), cafile = pki.ca, method = "POST", body = ("x"):rep(512) }

local function measure(fn)
  local w, c = qos.now(), qos.cputime()
  fn()
  return qos.now() - w, qos.cputime() - c
end

assert(http.request(req)) -- warm the connection
local seq_wall, seq_cpu = measure(function()
  for _ = 1, N do assert(http.request(req).status == 200) end
end)

local par_wall, par_cpu = measure(function()
  local next_i = 0
  local function worker()
    while next_i < N do
      next_i = next_i + 1
      assert(assert(async.request(req)).status == 200)
    end
  end
  local tasks = {}
  for i = 1, 16 do tasks[i] = async.spawn(worker) end
  async.all(tasks):wait()
end)
server:stop()

print(("http sequential: %.0f req/s"):format(N / seq_wall))
print(("http sequential client cpu: %.1f us/req"):format(seq_cpu / N * 1e6))
print(("http 16 in flight: %.0f req/s"):format(N / par_wall))
print(("http 16 in flight client cpu: %.1f us/req"):format(par_cpu / N * 1e6))
print(("http 16 in flight / sequential: %.2f x"):format(seq_wall / par_wall))
