-- tests.support.connections: many connections at once to a server, through
-- tests/support/connections.py (independent of quan's HTTP code), and one
-- timed request through curl.
local sh = require "tests.support.sh"
local qos = require "quan.os"
local cjson = require "cjson"

local M = {}

local function argv(mode, port, args)
  local a = {"python3", "tests/support/connections.py", mode, "--port", tostring(port)}
  for _, x in ipairs(args or {}) do a[#a + 1] = tostring(x) end
  return a
end

-- run(mode, port, {args...}) -> the JSON result of connections.py
function M.run(mode, port, args)
  local quoted = {}
  for i, x in ipairs(argv(mode, port, args)) do quoted[i] = sh.quote(x) end
  local out, err = sh.run(table.concat(quoted, " "))
  return assert(cjson.decode(out), err)
end

-- start(mode, port, {args...}) -> wait(): runs connections.py in the
-- background until it has its connections open ("ready"); wait([stop]) ->
-- its JSON result once it ends (at once with stop: a slowloris run ends at
-- SIGTERM)
function M.start(mode, port, args)
  local d = sh.tmpdir()
  local a = argv(mode, port, args)
  a[#a + 1] = "--ready"
  a[#a + 1] = d .. "/ready"
  local pid = assert(qos.spawn(a, {stdout = d .. "/out", stderr = d .. "/err"}))
  local deadline = qos.now() + 60
  while not io.open(d .. "/ready") do
    assert(not qos.wait(pid, true), "connections.py ended early: " .. sh.read(d .. "/err"))
    assert(qos.now() < deadline, "connections.py did not get its connections open")
    qos.sleep(0.05)
  end
  return function(stop)
    if stop then qos.kill(pid, "TERM") end
    qos.wait(pid)
    return cjson.decode(sh.read(d .. "/out"))
  end
end

-- timed(url [, curl_args]) -> status, seconds: one request on a new
-- connection
function M.timed(url, curl_args)
  local out = sh.run(("curl -sS -m 10 -o /dev/null -w '%%{http_code} %%{time_total}' %s %s"):format(curl_args or "",
    sh.quote(url)))
  local status, t = out:match("^(%d+) ([%d.]+)$")
  return tonumber(status), tonumber(t)
end

-- tls_handshake(port, version, cafile) -> s_client's output, exit code:
-- openssl's client limited to one TLS version ("tls1", "tls1_1", "tls1_2",
-- "tls1_3"), with every cipher allowed so that only the server can refuse
function M.tls_handshake(port, version, cafile)
  local out, _, code = sh.run(("openssl s_client -connect 127.0.0.1:%d -%s -cipher 'DEFAULT:@SECLEVEL=0' -CAfile %s "
    .. "</dev/null"):format(port, version, sh.quote(cafile)))
  return out, code
end

return M
