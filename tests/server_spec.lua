-- quan.server: HTTP(S) on loopback: an event loop for the connections, a
-- bounded pool of workers (one Lua state each) for the handlers.
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

  it("hands arg to the module's new() and keeps a state per worker, whatever the connection", function()
    local out = curl(base .. "/state", "-D - -o /dev/null")
    assert.matches("X%-Arg: hello", out)
    -- one worker: two connections (two curl processes) reach the same state
    local s = assert(server.start {handler = "tests.support.echo_handler", workers = 1})
    local url = "http://127.0.0.1:" .. s:port() .. "/count"
    assert.equal(1, cjson.decode((sh.run("curl -sS " .. url))).count)
    assert.equal(2, cjson.decode((sh.run("curl -sS " .. url))).count)
    assert.equal(1, s:stats().states)
    s:stop()
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

  it("runs handlers on a bounded pool of workers, each state made on first use", function()
    local s = assert(server.start {handler = "tests.support.echo_handler", workers = 2})
    assert.equal(1, s:stats().states) -- the first, made at start
    local url = "http://127.0.0.1:" .. s:port() .. "/sleep"
    local d = sh.tmpdir()
    local t0 = require("quan.os").now()
    -- three 0.3 s requests at once on two workers: the third waits for one
    sh.run(("for i in 1 2 3; do curl -sS -o %s/$i %s & done; wait"):format(d, sh.quote(url)))
    assert.is_true(require("quan.os").now() - t0 >= 0.6)
    for i = 1, 3 do assert.equal("/sleep", cjson.decode(sh.read(d .. "/" .. i)).path) end
    local stats = s:stats()
    assert.equal(2, stats.states)
    assert.equal(3, stats.requests)
    assert.equal(0, stats.queued)
    s:stop()
  end)

  it("checks its arguments", function()
    assert.has_error(function() server.start {} end)
    assert.has_error(function() server.start {handler = "x", reuse = 2} end, "bad argument #1 to 'start' (unknown option 'reuse')")
    assert.has_error(function() server.start {handler = "x", port = 70000} end)
    assert.has_error(function() server.start {handler = "x", host = "localhost"} end)
    assert.has_error(function() server.start {handler = "x", cert = "c"} end)
    assert.has_error(function() server.start {handler = "x", workers = 0} end,
      "bad argument #1 to 'start' (workers must be between 1 and 1024)")
    assert.has_error(function() server.start {handler = "x", max_connections = 0} end,
      "bad argument #1 to 'start' (max_connections must be between 1 and 1000000)")
    assert.has_error(function() server.start {handler = "x", threads = 0} end,
      "bad argument #1 to 'start' (threads must be between 1 and 64)")
    assert.has_error(function() server.start {handler = "x", idle_timeout = 0} end,
      "bad argument #1 to 'start' (idle_timeout must be between 0 and 86400 seconds)")
    assert.has_error(function() server.start {handler = "x", request_timeout = "soon"} end)
    local h = "tests.support.echo_handler"
    local s, msg, code = server.start {handler = h, cert = "file:///nonexistent/c.pem", key = "file:///nonexistent/k.pem"}
    assert.is_nil(s)
    assert.equal("tls", code)
    assert.matches("nonexistent", msg)
    s, msg, code = server.start {handler = h, cert = "not a pem", key = "not a pem"}
    assert.is_nil(s)
    assert.equal("tls", code)
    assert.matches("^server: cannot start TLS on 127%.0%.0%.1:%d+: the certificate or key is not usable", msg)
    -- a handler that cannot load is reported at start
    s, msg, code = server.start {handler = "tests.support.no_such_handler"}
    assert.is_nil(s)
    assert.equal("handler", code)
    assert.matches("no_such_handler", msg)
  end)
end)

local conns = require "tests.support.connections"

describe("quan.server connections", function()
  it("closes new connections past max_connections; the open ones go on", function()
    -- two event-loop threads: the limit holds across them
    local s = assert(server.start {handler = "tests.support.echo_handler", max_connections = 5, threads = 2})
    local port = s:port()
    -- five kept-alive clients, each answered, then held open
    local wait = conns.start("keepalive", port, {"--clients", 5, "--hold", 1})
    local _, err, code = sh.run("curl -sS -m 5 http://127.0.0.1:" .. port .. "/sixth")
    assert.not_equal(0, code) -- closed at once, without an answer
    assert.not_equal("", err)
    local r = wait()
    assert.same({5, 5, 5}, {r.connected, r.ok, r.ok_after_hold}) -- each answered again after the refusal
    assert.same({}, r.errors_after_hold)
    local stats = s:stats()
    assert.equal(1, stats.refused)
    assert.equal(5, stats.peak_connections)
    assert.equal(5, stats.max_connections)
    -- room again once they left
    assert.equal(200, (conns.timed("http://127.0.0.1:" .. port .. "/later")))
    s:stop()
  end)

  it("closes a silent connection after idle_timeout and a trickling request after request_timeout", function()
    local s = assert(server.start {handler = "tests.support.echo_handler", idle_timeout = 1, request_timeout = 1})
    local port = s:port()
    -- nothing sent at all
    local r = conns.run("slowloris", port, {"--silent", "--clients", 2, "--interval", 0.1, "--duration", 8})
    assert.equal(2, r.closed_by_server)
    assert.is_true(r.lifetime_min >= 0.9 and r.lifetime_max < 6, r.lifetime_max)
    -- a request line, then a header line every 0.2 s, never finished
    r = conns.run("slowloris", port, {"--clients", 2, "--interval", 0.2, "--duration", 8})
    assert.equal(2, r.closed_by_server)
    assert.is_true(r.lifetime_min >= 0.9 and r.lifetime_max < 6, r.lifetime_max)
    -- a kept-alive connection left idle after its answer
    r = conns.run("keepalive", port, {"--clients", 1, "--hold", 3})
    assert.equal(1, r.ok)
    assert.same({closed = 1}, r.errors_after_hold)
    assert.equal(2, s:stats().closed_slow)
    s:stop()
  end)

  -- under valgrind (tests/valgrind) a TLS handshake takes ~50 times longer:
  -- fewer slow connections there, and no bound on the time of an answer
  local valgrind = os.getenv("QUAN_SPEC_VALGRIND") ~= nil
  for _, tls in ipairs {false, true} do
    it("answers while 200 slowloris connections are open" .. (tls and " over TLS" or ""), function()
      local d = tls_files()
      local s = assert(server.start {handler = "tests.support.echo_handler",
        cert = tls and "file://" .. d .. "/cert.pem" or nil, key = tls and "file://" .. d .. "/key.pem" or nil})
      finally(function() s:stop() end)
      local url = (tls and "https" or "http") .. "://127.0.0.1:" .. s:port() .. "/health"
      local n = valgrind and 20 or 200
      local args = {"--clients", n, "--interval", 1, "--duration", 60}
      if tls then table.move({"--tls", ca_pem}, 1, 2, #args + 1, args) end
      local wait = conns.start("slowloris", s:port(), args)
      assert.equal(n, s:stats().connections)
      for _ = 1, 5 do
        local status, t = conns.timed(url, tls and "--cacert " .. ca_pem or "")
        assert.equal(200, status)
        -- 1 s is the target (scripts/bench/sandbox.lua); 3 s leaves a busy machine room
        if not valgrind then assert.is_true(t < 3, t) end
      end
      local r = wait(true)
      assert.same({n, n, 0}, {r.opened, r.open_at_end, r.closed_by_server})
      assert.same({}, r.failed)
    end)
  end

  it("raises the descriptor limit when it must, else shrinks the default max_connections or refuses", function()
    local script = sh.quote([[
      local function soft()
        for l in io.lines("/proc/self/limits") do
          local n = l:match("^Max open files%s+(%d+)")
          if n then return tonumber(n) end
        end
      end
      local server = require "quan.server"
      local before = soft()
      local s, msg, code = server.start {handler = "tests.support.echo_handler", max_connections = 1000}
      if s then print(before, soft(), s:stats().max_connections) s:stop() else print(msg, code) end
      s = assert(server.start {handler = "tests.support.echo_handler"})
      print(s:stats().max_connections)
      s:stop()]])
    -- a soft limit of 256 under a hard one of 4096: raised to 4096, which
    -- leaves the default 4096 - 16 workers x 8 - 4 - 64 connections
    local out = sh.run("ulimit -Sn 256 && ulimit -Hn 4096 && " .. sh.quote(sh.quan) .. " -e " .. script)
    assert.equal("256\t4096\t1000\n3900\n", out)
    -- a hard limit of 256: 1,000 connections refused, the default shrinks
    -- to 256 - 16 workers x 8 - 4 - 64
    out = sh.run("ulimit -Sn 256 && ulimit -Hn 256 && " .. sh.quote(sh.quan) .. " -e " .. script)
    assert.equal("server: 1000 connections and 16 workers need 1196 file descriptors; the limit is 256 (ulimit -n)"
      .. "\tlimit\n60\n", out)
  end)

  it("speaks TLS 1.2 and 1.3 only", function()
    local d = tls_files()
    local s = assert(server.start {handler = "tests.support.echo_handler", cert = "file://" .. d .. "/cert.pem",
      key = "file://" .. d .. "/key.pem"})
    for _, version in ipairs {"tls1", "tls1_1"} do
      local out, code = conns.tls_handshake(s:port(), version, ca_pem)
      assert.not_equal(0, code, version)
      assert.matches("Cipher is %(NONE%)", out)
    end
    local out, code = conns.tls_handshake(s:port(), "tls1_2", ca_pem)
    assert.equal(0, code)
    assert.matches("Protocol  : TLSv1.2", out, 1, true)
    out, code = conns.tls_handshake(s:port(), "tls1_3", ca_pem)
    assert.equal(0, code)
    assert.matches("New, TLSv1.3", out, 1, true)
    s:stop()
  end)
end)
