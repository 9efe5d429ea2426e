-- quan.http against a loopback HTTPS server with a CA made at test time.
local http = require "quan.http"
local qos = require "quan.os"
local cjson = require "cjson"
local sh = require "tests.support.sh"
local https = require "tests.support.https"

local md = require "tests.support.mdexamples"

describe("quan.http", function()
  local pki, server

  lazy_setup(function()
    pki = https.pki()
    server = https.start(pki.cert, pki.key)
  end)

  lazy_teardown(function()
    if server then server:stop() end
  end)

  local function req(path, t)
    t = t or {}
    t.url = t.url or server:url(path)
    if t.cafile == nil then t.cafile = pki.ca end
    return t
  end

  local function stats(s)
    local res = assert(http.request { url = s:url("/stats"), cafile = pki.ca })
    return cjson.decode(res.body)
  end

  describe("request", function()
    for _, method in ipairs { "GET", "POST", "PUT", "PATCH", "DELETE" } do
      it("sends " .. method .. " with its body and headers", function()
        local res, err = http.request(req("/echo?m=" .. method, {
          method = method,
          body = method .. " body \0 with a zero byte",
          headers = { "X-Array: one", ["X-Map"] = "two", ["X-Number"] = 3 },
        }))
        assert.is_nil(err)
        assert.equal(200, res.status)
        local echo = cjson.decode(res.body)
        assert.equal(method, echo.method)
        assert.equal("/echo?m=" .. method, echo.path)
        assert.equal(method .. " body \0 with a zero byte", echo.body)
        local h = {}
        for _, kv in ipairs(echo.headers) do h[kv[1]:lower()] = kv[2] end
        assert.equal("one", h["x-array"])
        assert.equal("two", h["x-map"])
        assert.equal("3", h["x-number"])
        assert.equal(tostring(#echo.body), h["content-length"])
        assert.matches("^quan/", h["user-agent"])
        assert.is_nil(h["expect"])         -- no 100-continue round trip
        assert.is_nil(h["content-type"])   -- no form type invented
      end)
    end

    it("sends an empty body for POST without one, and none for GET", function()
      local echo = cjson.decode(assert(http.request(req("/echo", { method = "POST" }))).body)
      assert.equal("", echo.body)
      local h = {}
      for _, kv in ipairs(echo.headers) do h[kv[1]:lower()] = kv[2] end
      assert.equal("0", h["content-length"])
      echo = cjson.decode(assert(http.request(req("/echo"))).body)
      assert.equal("GET", echo.method)
      assert.equal("", echo.body)
    end)

    it("lets the caller set Content-Type and User-Agent", function()
      local echo = cjson.decode(assert(http.request(req("/echo", {
        method = "POST", body = "{}",
        headers = { ["Content-Type"] = "application/json", ["User-Agent"] = "agent/1" },
      }))).body)
      local h = {}
      for _, kv in ipairs(echo.headers) do h[kv[1]:lower()] = kv[2] end
      assert.equal("application/json", h["content-type"])
      assert.equal("agent/1", h["user-agent"])
    end)

    it("reads headers case-insensitively and joins repeated ones", function()
      local res = assert(http.request(req("/repeat-header")))
      assert.equal("a=1, b=2", res.headers["set-cookie"])
      assert.equal("a=1, b=2", res.headers["Set-Cookie"])
      assert.equal("one, two", res.headers["X-MULTI"])
      assert.equal("application/json", res.headers["Content-Type"])
      assert.is_nil(res.headers["no-such-header"])
      assert.is_nil(res.headers[1])
      -- the stored keys are lower case
      for k in pairs(res.headers) do assert.equal(k:lower(), k) end
    end)

    it("keeps every header in order in header_list", function()
      local res = assert(http.request(req("/repeat-header")))
      local names, cookies = {}, {}
      for _, nv in ipairs(res.header_list) do
        names[#names + 1] = nv[1]
        if nv[1] == "Set-Cookie" then cookies[#cookies + 1] = nv[2] end
      end
      assert.same({ "a=1", "b=2" }, cookies)
      local multi = {}
      for _, nv in ipairs(res.header_list) do
        if nv[1] == "X-Multi" then multi[#multi + 1] = nv[2] end
      end
      assert.same({ "one", "two" }, multi)
      assert.is_true(#names >= 7)
      -- made when first read, then the same list; no other field appears
      assert.equal(res.header_list, res.header_list)
      assert.equal(res.header_list, rawget(res, "header_list"))
      assert.is_nil(res.no_such_field)
      assert.is_nil(res[1])
    end)

    it("returns error statuses as responses", function()
      for _, status in ipairs { 201, 204, 400, 404, 429, 500, 503 } do
        local res, err = http.request(req("/status/" .. status))
        assert.is_nil(err)
        assert.equal(status, res.status)
      end
    end)

    it("answers HEAD without a body", function()
      local res = assert(http.request(req("/echo", { method = "HEAD" })))
      assert.equal(200, res.status)
      assert.equal("", res.body)
    end)

    it("reports how long it took", function()
      local res = assert(http.request(req("/echo")))
      assert.is_number(res.time)
      assert.is_true(res.time >= 0)
    end)
  end)

  describe("keep-alive", function()
    it("never sends a request twice when a kept-alive connection closes without an answer", function()
      local fresh = https.start(pki.cert, pki.key)
      local ok, err = pcall(function()
        assert(http.request { url = fresh:url("/echo"), cafile = pki.ca }) -- a connection to reuse
        for _, method in ipairs { "POST", "PUT", "PATCH" } do
          local res, msg, code = http.request { url = fresh:url("/drop"), cafile = pki.ca, method = method, body = "once" }
          assert.is_nil(res)
          assert.equal("recv", code, msg)
          assert(http.request { url = fresh:url("/echo"), cafile = pki.ca }) -- and again
        end
        assert.equal(3, stats(fresh).drops) -- libcurl resent none of them
      end)
      fresh:stop()
      assert(ok, err)
    end)

    it("resends a bodiless request, and only that, when a kept-alive connection turns out closed", function()
      local fresh = https.start(pki.cert, pki.key)
      local ok, err = pcall(function()
        local function close_next() -- answered on a kept-alive connection: the next request there finds it closed
          assert.equal(200, assert(http.request { url = fresh:url("/close-next"), cafile = pki.ca }).status)
        end
        local cases = {
          { method = "GET" }, { method = "GET", body = "" }, { method = "DELETE" }, { method = "HEAD" },
        }
        for i, c in ipairs(cases) do
          close_next()
          local res, msg = http.request { url = fresh:url("/echo"), cafile = pki.ca, method = c.method, body = c.body }
          assert(res, c.method .. ": " .. tostring(msg))
          assert.equal(200, res.status)
          assert.equal(1, res.connects, c.method) -- sent again on a new connection
          assert.equal(i, stats(fresh).stale, c.method) -- after the server closed the kept-alive one
          if c.method ~= "HEAD" then
            local echo = cjson.decode(res.body)
            assert.equal(c.method, echo.method)
            for _, kv in ipairs(echo.headers) do
              assert.not_equal("content-length", kv[1]:lower(), c.method .. " carries no body")
            end
          end
        end
        for _, method in ipairs { "POST", "PUT", "PATCH" } do -- with a body, even an empty one: never twice
          close_next()
          local res, msg, code = http.request { url = fresh:url("/echo"), cafile = pki.ca, method = method, body = "" }
          assert.is_nil(res, method)
          assert.equal("recv", code, msg)
          assert.matches("not sent again", msg)
        end
        for _, method in ipairs { "GET", "DELETE" } do -- resend = false: a signed request's sender signs anew
          close_next()
          local res, msg, code = http.request { url = fresh:url("/echo"), cafile = pki.ca, method = method, resend = false }
          assert.is_nil(res, method)
          assert.equal("recv", code, msg)
          assert.matches("not sent again", msg)
        end
        assert.equal(#cases + 5, stats(fresh).stale)
        assert.has_error(function() http.request { url = fresh:url("/echo"), resend = "no" } end,
          "http request: 'resend' must be a boolean, got string")
      end)
      fresh:stop()
      assert(ok, err)
    end)

    it("sends a small POST whole: headers and body in one send (traced with strace)", function()
      local _, _, has = sh.run("strace -qq -e trace=sendto true")
      if has ~= 0 then return pending("strace is not usable here") end
      local dir = sh.tmpdir()
      sh.write(dir .. "/post.lua", ([[
        local http = require "quan.http"
        local req = { url = %q, cafile = %q }
        assert(http.request(req)) -- a connection to reuse
        io.stderr:write("MARK\n")
        req.method, req.body = "POST", ("x"):rep(600)
        assert(http.request(req).status == 200)
        io.stderr:write("DONE\n") -- before the close_notify sent at exit
      ]]):format(server:url("/echo"), pki.ca))
      local _, err, code = sh.run("strace -qq -e trace=sendto,sendmsg,write,writev -o " .. dir .. "/trace "
        .. sh.quan .. " " .. dir .. "/post.lua")
      assert.equal(0, code, err)
      local after, sends = false, 0
      for line in sh.read(dir .. "/trace"):gmatch("[^\n]+") do
        if line:find('"MARK\\n"', 1, true) then after = true
        elseif line:find('"DONE\\n"', 1, true) then break
        elseif after then
          local fd = tonumber(line:match("^%a+%((%d+),"))
          if fd and fd > 2 then sends = sends + 1 end
        end
      end
      assert.is_true(after)
      assert.equal(1, sends, sh.read(dir .. "/trace"))
    end)

    it("reuses one connection for consecutive requests", function()
      local fresh = https.start(pki.cert, pki.key) -- counts from zero
      local ok, err = pcall(function()
        local r1 = assert(http.request { url = fresh:url("/echo"), cafile = pki.ca })
        local r2 = assert(http.request { url = fresh:url("/echo"), cafile = pki.ca, method = "POST", body = "x" })
        local r3 = assert(http.request { url = fresh:url("/connections"), cafile = pki.ca })
        assert.equal(1, r1.connects)
        assert.equal(0, r2.connects)
        assert.equal(0, r3.connects)
        assert.equal(1, cjson.decode(r3.body).connections)
      end)
      fresh:stop()
      assert(ok, err)
    end)

    it("keeps a burst's connections through sequential use for the next burst", function()
      local fresh = https.start(pki.cert, pki.key)
      local ok, err = pcall(function()
        local function burst()
          local m, opened = http.multi(), 0
          for _ = 1, 12 do m:add { url = fresh:url("/slow?ms=300"), cafile = pki.ca } end
          while m:pending() > 0 do
            for _, c in ipairs(m:perform(5)) do opened = opened + assert(c.res, c.err).connects end
          end
          m:close()
          return opened
        end
        assert.equal(12, burst())
        for _ = 1, 6 do assert.equal(0, assert(http.request { url = fresh:url("/echo"), cafile = pki.ca }).connects) end
        assert.equal(0, burst())
      end)
      fresh:stop()
      assert(ok, err)
    end)
  end)

  describe("transport failures", function()
    it("returns code timeout when the total timeout passes", function()
      local res, err, code = http.request(req("/slow?ms=3000", { timeout = 0.2 }))
      assert.is_nil(res)
      assert.equal("timeout", code)
      assert.matches("^GET https://127%.0%.0%.1:%d+/slow%?ms=3000: ", err)
      assert.matches("timed out", err)
    end)

    it("returns code url for a URL longer than libcurl sends, naming its size, not the whole of it", function()
      local path = "/" .. ("a"):rep(2 * 1024 * 1024)
      local res, err, code = http.request(req(path))
      assert.is_nil(res)
      assert.equal("url", code)
      assert.matches("^GET https://127%.0%.0%.1:%d+/a+%.%.%.: the URL is %d+ bytes, more than libcurl sends %(1 MB with the headers%)$", err)
      assert.is_true(#err < 500)
    end)

    it("returns code too_large for an answer past max_response, with or without a length", function()
      for _, chunked in ipairs { "0", "1" } do
        local path = "/big?n=5000&chunked=" .. chunked
        local res, err, code = http.request(req(path, { max_response = 4000 }))
        assert.is_nil(res)
        assert.equal("too_large", code, chunked)
        assert.matches("answer larger than 4000 bytes %(max_response%)", err)
        res = assert(http.request(req(path, { max_response = 5000 })))
        assert.equal(5000, #res.body)
      end
      assert.equal(3000, #assert(http.request(req("/big?n=3000&chunked=1"))).body) -- the default: 64 MiB
    end)

    it("writes a 2xx body to the file named by output, keeping an error answer's body", function()
      local dir = sh.tmpdir()
      local file = dir .. "/got"
      for _, chunked in ipairs { "0", "1" } do
        os.remove(file)
        local res = assert(http.request(req("/big?n=250000&chunked=" .. chunked, { output = file })))
        assert.equal(200, res.status)
        assert.equal("", res.body)
        assert.equal(file, res.output)
        assert.equal(250000, res.size)
        assert.equal(("x"):rep(250000), sh.read(file))
        assert.equal(384, qos.mode(file)) -- 0600
      end
      -- an empty 2xx body makes an empty file; an old file is truncated
      local res = assert(http.request(req("/status/204", { output = file })))
      assert.equal(204, res.status)
      assert.equal("", sh.read(file))
      -- another status: the body stays in res.body, the file is not touched
      sh.write(file, "before")
      res = assert(http.request(req("/status/404", { output = file })))
      assert.equal(404, res.status)
      assert.equal("status", res.body)
      assert.is_nil(res.output)
      assert.equal("before", sh.read(file))
      -- through quan.async, the same
      os.remove(file)
      res = require("quan.async").spawn(function()
        return assert(require("quan.async").request(req("/big?n=3000", { output = file })))
      end):wait()
      assert.equal(3000, res.size)
      assert.equal(3000, #sh.read(file))
      os.execute("rm -rf " .. sh.quote(dir))
    end)

    it("fails with code io when the output file cannot be written, and removes a partial one", function()
      local dir = sh.tmpdir()
      local res, err, code = http.request(req("/big?n=100", { output = dir .. "/no/such/dir/f" }))
      assert.is_nil(res)
      assert.equal("io", code)
      assert.matches("^GET https://127%.0%.0%.1:%d+/big%?n=100: cannot write " .. dir:gsub("%p", "%%%0")
        .. "/no/such/dir/f: No such file or directory$", err)
      -- past max_response, or a transfer cut short: no partial file is left
      res, err, code = http.request(req("/big?n=5000&chunked=1", { output = dir .. "/big", max_response = 4000 }))
      assert.is_nil(res)
      assert.equal("too_large", code)
      assert.is_nil(qos.stat(dir .. "/big"))
      res, err, code = http.request(req("/slow?ms=3000", { output = dir .. "/slow", timeout = 0.2 }))
      assert.equal("timeout", code)
      assert.is_nil(qos.stat(dir .. "/slow"))
      os.execute("rm -rf " .. sh.quote(dir))
    end)

    it("returns code connect for a refused connection", function()
      local res, err, code = http.request { url = ("https://127.0.0.1:%d/"):format(server.closed_port) }
      assert.is_nil(res)
      assert.equal("connect", code)
      assert.matches("^GET https://127%.0%.0%.1:%d+/: ", err)
    end)

    it("returns code tls for a certificate no trusted CA signed", function()
      local res, err, code = http.request { url = server:url("/echo") } -- system CAs only
      assert.is_nil(res)
      assert.equal("tls", code)
      assert.matches("certificate", err)
      res, err, code = http.request { url = server:url("/echo"), cafile = pki.other_ca }
      assert.is_nil(res)
      assert.equal("tls", code)
    end)

    it("returns code tls for a certificate of another host", function()
      local wrong = https.start(pki.wrong_cert, pki.wrong_key)
      local res, err, code = http.request { url = wrong:url("/echo"), cafile = pki.ca }
      wrong:stop()
      assert.is_nil(res)
      assert.equal("tls", code)
      assert.matches("127%.0%.0%.1", err)
    end)

    it("returns code tls when the cafile does not exist", function()
      local res, _, code = http.request(req("/echo", { cafile = pki.dir .. "/missing.pem" }))
      assert.is_nil(res)
      assert.equal("tls", code)
    end)

    it("returns code url for what is not an http(s) URL", function()
      for _, url in ipairs { "ftp://127.0.0.1/", "https://", "file:///etc/passwd" } do
        local res, _, code = http.request { url = url }
        assert.is_nil(res)
        assert.equal("url", code)
      end
    end)

    it("returns code proxy when the proxy cannot be reached", function()
      local res, _, code = http.request(req("/echo", {
        proxy = ("http://127.0.0.1:%d"):format(server.closed_port) }))
      assert.is_nil(res)
      assert.equal("proxy", code)
    end)
  end)

  describe("multi", function()
    it("keeps many transfers in flight and matches each completion to its id", function()
      local m = http.multi()
      local want = {}
      for i = 1, 20 do
        local id = m:add(req("/echo?n=" .. i, { method = "POST", body = "n=" .. i }))
        assert.is_nil(want[id])
        want[id] = "n=" .. i
      end
      assert.equal(20, m:pending())
      local seen = 0
      while m:pending() > 0 do
        for _, c in ipairs(m:perform(5)) do
          assert.is_nil(c.err)
          assert.equal(want[c.id], cjson.decode(c.res.body).body)
          want[c.id] = nil
          seen = seen + 1
        end
      end
      assert.equal(20, seen)
      assert.is_nil(next(want))
      m:close()
    end)

    it("returns failures as completions with a code", function()
      local m = http.multi()
      local id = m:add { url = ("https://127.0.0.1:%d/"):format(server.closed_port) }
      local done = {}
      while m:pending() > 0 do
        for _, c in ipairs(m:perform()) do done[#done + 1] = c end
      end
      assert.equal(1, #done)
      assert.equal(id, done[1].id)
      assert.is_nil(done[1].res)
      assert.equal("connect", done[1].code)
      assert.matches("^GET ", done[1].err)
    end)

    it("returns from perform at max_wait with what is done so far", function()
      local m = http.multi()
      m:add(req("/slow?ms=1500"))
      assert.same({}, m:perform(0.05))
      assert.equal(1, m:pending())
      m:close()
    end)

    it("cancels one transfer: it never completes, the others go on", function()
      local m = http.multi()
      local slow = m:add(req("/slow?ms=300"))
      local quick = m:add(req("/echo?n=1"))
      assert.is_true(m:cancel(slow))
      assert.is_false(m:cancel(slow))
      assert.is_false(m:cancel(12345))
      assert.equal(1, m:pending())
      local done = {}
      local deadline = qos.now() + 10
      while qos.now() < deadline and (m:pending() > 0 or qos.now() < deadline - 9.4) do
        for _, c in ipairs(m:perform(0.1)) do done[#done + 1] = c.id end
      end
      assert.same({ quick }, done) -- and nothing for slow, though its 300 ms have passed
      assert.has_error(function() m:cancel("x") end)
      m:close()
      assert.has_error(function() m:cancel(quick) end, "http multi: used after close")
    end)

    it("returns at once when nothing is pending", function()
      local m = http.multi()
      assert.same({}, m:perform())
      assert.equal(0, m:pending())
    end)

    it("lets synchronous requests and a multi share the engine", function()
      local m = http.multi()
      local id = m:add(req("/slow?ms=200"))
      local res = assert(http.request(req("/echo")))
      assert.equal(200, res.status)
      local got
      while m:pending() > 0 do
        for _, c in ipairs(m:perform()) do got = c end
      end
      assert.equal(id, got.id)
      assert.equal(200, got.res.status)
    end)

    it("aborts what is in flight on close, and raises when used after", function()
      local m = http.multi()
      m:add(req("/slow?ms=1000"))
      m:close()
      m:close() -- idempotent
      assert.matches("closed", tostring(m))
      assert.has_error(function() m:add(req("/echo")) end, "http multi: used after close")
      assert.has_error(function() m:perform() end, "http multi: used after close")
      assert.has_error(function() m:pending() end, "http multi: used after close")
    end)

    it("is closed by a to-be-closed variable", function()
      local ref
      do
        local m <close> = http.multi()
        ref = m
        m:add(req("/slow?ms=1000"))
      end
      assert.matches("closed", tostring(ref))
    end)
  end)

  describe("bad arguments", function()
    local cases = {
      { nil, "bad argument #1 to '[%w.]-request' %(table expected, got nil%)" },
      { "https://x", "bad argument #1 to '[%w.]-request' %(table expected, got string%)" },
      { {}, "http request: 'url' is required" },
      { { url = 1 }, "http request: 'url' must be a string, got number" },
      { { url = "https://x/a\0b" }, "http request: 'url' contains a NUL byte" },
      { { url = "https://x", cafile = "/etc/ssl\0/x" }, "http request: 'cafile' contains a NUL byte" },
      { { url = "https://x", verify = false }, "http request: unknown field 'verify'" },
      { { url = "https://x", [1] = "y" }, "http request: unknown field of type number" },
      { { url = "https://x", method = "G T" }, "http request: bad method 'G T'" },
      { { url = "https://x", method = 1 }, "http request: 'method' must be a string, got number" },
      { { url = "https://x", body = {} }, "http request: 'body' must be a string, got table" },
      { { url = "https://x", timeout = "1" }, "http request: 'timeout' must be a number, got string" },
      { { url = "https://x", timeout = 0 }, "http request: 'timeout' must be positive" },
      { { url = "https://x", connect_timeout = -1 }, "http request: 'connect_timeout' must be positive" },
      { { url = "https://x", headers = "X: y" }, "http request: 'headers' must be a table, got string" },
      { { url = "https://x", headers = { "no colon" } }, "http request: header 'no colon' has no ':'" },
      { { url = "https://x", headers = { true } }, "http request: header entry 1 must be a string" },
      { { url = "https://x", headers = { ["X-A"] = "a\r\nX-B: b" } }, "http request: header 'X%-A' has a line break" },
      { { url = "https://x", headers = { ["Bad Name"] = "v" } }, "http request: bad header name 'Bad Name'" },
      { { url = "https://x", headers = { ["X-A"] = {} } }, "http request: header 'X%-A' must be a string, got table" },
      { { url = "https://x", cafile = false }, "http request: 'cafile' must be a string, got boolean" },
      { { url = "https://x", proxy = 1 }, "http request: 'proxy' must be a string, got number" },
      { { url = "https://x", max_response = 0 }, "http request: 'max_response' must be a positive integer %(bytes%), got number" },
    }
    for i, case in ipairs(cases) do
      it("raises for case " .. i .. ": " .. case[2]:gsub("%%", ""):gsub("%[%w%.%]%-", ""), function()
        local ok, err = pcall(http.request, case[1])
        assert.is_false(ok)
        assert.matches(case[2], err)
        ok, err = pcall(function() http.multi():add(case[1]) end)
        assert.is_false(ok)
        assert.matches((case[2]:gsub("'%[%%w%.%]%-request'", "'add'")), err)
      end)
    end

    it("names the caller's line in request-table errors", function()
      local ok, err = pcall(function() http.request { url = "https://x", nope = 1 } end)
      assert.is_false(ok)
      assert.matches("http_spec%.lua:%d+: http request: unknown field 'nope'", err)
    end)

    it("checks perform's wait", function()
      local m = http.multi()
      assert.has_error(function() m:perform(-1) end, "bad argument #1 to 'perform' (negative wait)")
      assert.has_error(function() m:perform("x") end)
    end)
  end)

  describe("signals", function()
    it("lets Ctrl-C interrupt a blocking request", function()
      local how, code, out, err = https.interrupt(pki, [[
        local http = require "quan.http"
        print(http.request { url = arg[1], cafile = arg[2] })
        print("not reached")
      ]], 1)
      assert.equal("exit", how)
      assert.equal(1, code)
      assert.matches("interrupted!", err)
      assert.equal("", out)
    end)

    it("lets Ctrl-C interrupt a blocking request made inside a coroutine", function()
      local how, code, out, err = https.interrupt(pki, [[
        local http = require "quan.http"
        coroutine.wrap(function() print(http.request { url = arg[1], cafile = arg[2] }) end)()
        print("not reached")
      ]], 1)
      assert.equal("exit", how)
      assert.equal(1, code)
      assert.matches("interrupted!", err)
      -- the coroutine sees the abort; the main thread's hook fires after it
      assert.matches("^nil\t[^\n]*interrupted\taborted\n$", out)
    end)

    it("returns a poll failure instead of spinning", function()
      -- with no file descriptor allowed, poll() fails with EINVAL
      local dir = sh.tmpdir()
      local script = sh.write(dir .. "/s.lua", [[
        print(require("quan.http").request { url = arg[1], cafile = arg[2] })]])
      local s = https.start(pki.cert, pki.key)
      local pid = assert(qos.spawn({ sh.quan, script, s:url("/slow?ms=20000"), pki.ca },
        { stdout = dir .. "/out", stderr = dir .. "/err" }))
      local deadline = qos.now() + 20
      while s:stats(pki.ca).active < 1 and qos.now() < deadline do qos.sleep(0.02) end
      local _, _, code = sh.run("prlimit --pid " .. pid .. " --nofile=0:0")
      assert.equal(0, code)
      local how = qos.wait(pid, true)
      while not how and qos.now() < deadline do qos.sleep(0.05) how = qos.wait(pid, true) end
      if not how then qos.kill(pid, "KILL") qos.wait(pid) end
      s:stop()
      assert.equal("exit", how)
      assert.matches("^nil\t[^\n]*: poll: Invalid argument\tother\n$", sh.read(dir .. "/out"))
    end)
  end)

  it("adds no globals", function()
    local out, err = sh.run(sh.quan .. [[ -e 'local g = {} for k in pairs(_G) do g[k] = true end
      require "quan.http" for k in pairs(_G) do if not g[k] then print(k) end end']])
    assert.equal("", err)
    assert.equal("", out)
  end)

  it("runs the examples in docs/http.md", function()
    local blocks = md.blocks("docs/http.md")
    assert.is_true(#blocks >= 1)
    for i, b in ipairs(blocks) do
      local env = setmetatable({ print = function() end }, { __index = _G })
      local chunk = assert(load(b.code, "=docs/http.md#" .. i, "t", env))
      chunk(server:url(""), pki.ca)
    end
  end)
end)
