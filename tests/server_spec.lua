-- quan.server: HTTPS on loopback, one Lua state per connection thread.
local sh = require "tests.support.sh"
local server = require "quan.server"
local crypto = require "quan.crypto"
local cjson = require "cjson"

-- a CA and a server certificate for 127.0.0.1, made for this run
local dir, ca_pem
local function tls_files()
  if dir then return dir end
  dir = sh.tmpdir()
  local ca_key = crypto.generate_rsa(2048)
  local ca = crypto.make_certificate {key = ca_key, subject = "/CN=test ca", days = 2, ca = true}
  local key = crypto.generate_rsa(2048)
  local cert = crypto.make_certificate {key = key, issuer_key = ca_key, issuer_cert = ca, subject = "/CN=127.0.0.1",
    days = 2, san = {"127.0.0.1", "localhost"}}
  ca_pem = sh.write(dir .. "/ca.pem", ca:pem())
  sh.write(dir .. "/cert.pem", cert:pem())
  assert(key:write_pem(dir .. "/key.pem"))
  return dir
end

local function curl(url, args)
  local out, err, code = sh.run("curl -sS --cacert " .. ca_pem .. " " .. (args or "") .. " " .. sh.quote(url))
  return out, err, code
end

describe("quan.server", function()
  local srv, base
  setup(function()
    local d = tls_files()
    srv = assert(server.start {handler = "tests.support.echo_handler", arg = "hello",
      cert = "file://" .. d .. "/cert.pem", key = "file://" .. d .. "/key.pem"})
    base = "https://127.0.0.1:" .. srv:port()
  end)
  teardown(function() srv:stop() end)

  it("serves HTTPS on a free port and passes the raw target, headers and body", function()
    assert.is_true(srv:port() > 0)
    local out = curl(base .. "/a%20b/c?x=1+2&y=%2B", "-X POST -H 'X-Test: one' -H 'X-Test: two' --data-binary 'payload'")
    local r = cjson.decode(out)
    assert.equal("POST", r.method)
    assert.equal("/a%20b/c?x=1+2&y=%2B", r.path)
    assert.equal("payload", r.body)
    assert.equal("one, two", r.headers["x-test"])
    assert.matches("^127%.0%.0%.1:%d+$", r.remote)
    local _, err = curl(base .. "/x", "-I")
    assert.equal("", err)
  end)

  it("hands arg to the module's new() and keeps a state per connection", function()
    local out = curl(base .. "/state", "-D - -o /dev/null")
    assert.matches("X%-Arg: hello", out)
    -- two requests on one kept-alive connection see the same state
    local bodies = sh.run("curl -sS --cacert " .. ca_pem .. " " .. sh.quote(base .. "/s1") .. " " .. sh.quote(base .. "/s2"))
    local c1, c2 = bodies:match('"count":(%d+).*"count":(%d+)')
    assert.equal(1, tonumber(c1))
    assert.equal(2, tonumber(c2))
  end)

  it("accepts headers as an array of lines", function()
    local out = curl(base .. "/headers", "-i")
    assert.matches("^HTTP/1%.1 201", out)
    assert.matches("X%-One: 1", out)
    assert.matches("X%-Two: two", out)
  end)

  it("closes the connection without an answer on \"drop\"", function()
    local _, err, code = curl(base .. "/drop")
    assert.not_equal(0, code)
    assert.truthy(err ~= "")
  end)

  it("answers 500 SYSTEM_ERROR when the handler raises or returns no status", function()
    local out = curl(base .. "/error", "-i")
    assert.matches("^HTTP/1%.1 500", out)
    assert.matches('"code":"SYSTEM_ERROR"', out)
    out = curl(base .. "/nostatus", "-i")
    assert.matches("^HTTP/1%.1 500", out)
  end)

  it("lets a slow request block only its own connection", function()
    local d = sh.tmpdir()
    -- a slow request in the background, a fast one meanwhile
    os.execute("curl -sS --cacert " .. ca_pem .. " " .. sh.quote(base .. "/sleep") .. " > " .. d .. "/slow &")
    local out = curl(base .. "/fast")
    assert.equal("/fast", cjson.decode(out).path)
    os.execute("sleep 0.5")
    assert.equal("/sleep", cjson.decode(sh.read(d .. "/slow")).path)
  end)

  it("serves plain HTTP without cert and key, and reports a busy port", function()
    local s = assert(server.start {handler = "tests.support.echo_handler"})
    local out = sh.run("curl -sS http://127.0.0.1:" .. s:port() .. "/plain")
    assert.equal("/plain", cjson.decode(out).path)
    local t, msg, code = server.start {handler = "tests.support.echo_handler", port = s:port()}
    assert.is_nil(t)
    assert.equal("bind", code)
    assert.matches("cannot listen", msg)
    s:stop()
    s:stop()
    assert.matches("stopped", tostring(s))
    assert.has_error(function() s:port() end, "server: stopped")
  end)

  it("waits until timeout, SIGTERM or the parent changes", function()
    local s = assert(server.start {handler = "tests.support.echo_handler"})
    assert.equal("timeout", (s:wait {timeout = 0.05}))
    assert.equal("parent", (s:wait {parent = 1}))
    s:stop()
    local out = sh.run(sh.quote(sh.quan) .. [[ -e 'local s = require("quan.server").start{handler="tests.support.echo_handler"}
      io.stdout:write(s:wait{timeout = 5}, "\n") s:stop()' & sleep 0.3; kill -TERM $!; wait]])
    assert.equal("signal\n", out)
  end)

  it("calls tick while it waits, signals still caught, and raises tick's error", function()
    local s = assert(server.start {handler = "tests.support.echo_handler"})
    local n = 0
    assert.equal("timeout", (s:wait {timeout = 0.5, every = 0.05, tick = function() n = n + 1 end}))
    assert.is_true(n >= 3 and n <= 11, tostring(n))
    assert.has_error(function() s:wait {timeout = 5, tick = function() error("tick broke", 0) end} end, "tick broke")
    assert.has_error(function() s:wait {tick = 42} end)
    s:stop()
    -- SIGTERM while tick runs: still ends the wait as "signal"
    local out = sh.run(sh.quote(sh.quan) .. [[ -e 'local s = require("quan.server").start{handler="tests.support.echo_handler"}
      io.stdout:write(s:wait{timeout = 5, every = 0, tick = function() require("quan.os").sleep(0.01) end}, "\n") s:stop()' & sleep 0.3; kill -TERM $!; wait]])
    assert.equal("signal\n", out)
  end)

  it("hands an ended connection's state to a later connection with reuse", function()
    local s = assert(server.start {handler = "tests.support.echo_handler", reuse = 2})
    local url = "http://127.0.0.1:" .. s:port() .. "/count"
    -- one connection per curl process; the first one's thread may still be
    -- ending when the next connects, so allow a few attempts
    local counts = {}
    for i = 1, 20 do
      counts[i] = cjson.decode((sh.run("curl -sS " .. url))).count
      if counts[i] > 1 then break end
      require("quan.os").sleep(0.05)
    end
    assert.is_true(counts[#counts] > 1)
    s:stop()
    -- without reuse every connection starts afresh (the state per connection above)
    s = assert(server.start {handler = "tests.support.echo_handler"})
    url = "http://127.0.0.1:" .. s:port() .. "/count"
    for _ = 1, 3 do assert.equal(1, cjson.decode((sh.run("curl -sS " .. url))).count) end
    s:stop()
  end)

  it("checks its arguments", function()
    assert.has_error(function() server.start {} end)
    assert.has_error(function() server.start {handler = "x", reuse = -1} end)
    assert.has_error(function() server.start {handler = "x", port = 70000} end)
    assert.has_error(function() server.start {handler = "x", host = "localhost"} end)
    assert.has_error(function() server.start {handler = "x", cert = "c"} end)
    local s, msg, code = server.start {handler = "x", cert = "file:///nonexistent/c.pem", key = "file:///nonexistent/k.pem"}
    assert.is_nil(s)
    assert.equal("tls", code)
    assert.matches("nonexistent", msg)
    s, msg, code = server.start {handler = "x", cert = "not a pem", key = "not a pem"}
    assert.is_nil(s)
    assert.equal("tls", code)
  end)
end)
