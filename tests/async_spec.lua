-- quan.async: tasks and promises over quan.http, against a loopback HTTPS
-- server with a CA made at test time.
local async = require "quan.async"
local http = require "quan.http"
local qos = require "quan.os"
local cjson = require "cjson"
local sh = require "tests.support.sh"
local https = require "tests.support.https"

describe("quan.async", function()
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
    t.url = server:url(path)
    t.cafile = pki.ca
    return t
  end

  local function stats(s)
    return cjson.decode(assert(http.request { url = (s or server):url("/stats"), cafile = pki.ca }).body)
  end

  describe("requests in tasks", function()
    it("keeps 50 requests in flight and gives each task its own result", function()
      local tasks = {}
      for i = 1, 50 do
        tasks[i] = async.spawn(function(n)
          local res, err = async.request(req("/echo?id=" .. n, { method = "POST", body = "id=" .. n }))
          assert(res, err)
          local echo = cjson.decode(res.body)
          return echo.body, echo.path
        end, i)
      end
      -- every task yielded at its request: all 50 are in flight together
      for i = 1, 50 do assert.equal("pending", tasks[i]:status()) end
      for i = 1, 50 do
        local body, path = tasks[i]:wait()
        assert.equal("id=" .. i, body)
        assert.equal("/echo?id=" .. i, path)
      end
    end)

    it("yields on a plain request inside a task: two slow requests overlap", function()
      local s = https.start(pki.cert, pki.key) -- its own counters
      local ok, err = pcall(function()
        local function slow()
          local res = assert(async.request { url = s:url("/slow?ms=300"), cafile = pki.ca })
          return res.status
        end
        local a, b = async.spawn(slow), async.spawn(slow)
        assert.same({ 200, 200 }, async.all { a, b }:wait())
        assert.equal(2, stats(s).max_active)
      end)
      s:stop()
      assert(ok, err)
    end)

    it("returns transport failures as values inside a task", function()
      local t = async.spawn(function()
        return async.request { url = ("https://127.0.0.1:%d/"):format(server.closed_port) }
      end)
      local res, err, code = t:wait()
      assert.is_nil(res)
      assert.equal("connect", code)
      assert.matches("^GET https://127%.0%.0%.1:%d+/: ", err)
      res, err, code = async.request(req("/slow?ms=3000", { timeout = 0.2 }))
      assert.is_nil(res)
      assert.equal("timeout", code)
    end)

    it("drives the loop outside a task, so other tasks progress meanwhile", function()
      local t = async.spawn(function()
        local a = assert(async.request(req("/echo?step=1")))
        local b = assert(async.request(req("/echo?step=2")))
        return a.status + b.status
      end)
      assert.equal("pending", t:status())
      local res = assert(async.request(req("/slow?ms=600")))
      assert.equal(200, res.status)
      assert.equal("fulfilled", t:status())
      assert.equal(400, t:wait())
    end)

    it("reports whether it runs in a task", function()
      assert.is_false(async.in_task())
      assert.is_true(async.spawn(function() return async.in_task() end):wait())
      -- a coroutine of one's own is not a task
      local co = coroutine.wrap(function() return async.in_task() end)
      assert.is_false(co())
    end)
  end)

  describe("sleep and run", function()
    it("wakes sleeping tasks in deadline order", function()
      local order = {}
      local a = async.spawn(function() async.sleep(0.06) order[#order + 1] = "a" end)
      local b = async.spawn(function() async.sleep(0.01) order[#order + 1] = "b" end)
      local c = async.spawn(function() async.sleep(0) order[#order + 1] = "c" end)
      assert.same({}, order)
      async.run()
      assert.same({ "c", "b", "a" }, order)
      for _, t in ipairs { a, b, c } do assert.equal("fulfilled", t:status()) end
    end)

    it("sleeps outside a task while tasks progress", function()
      local done = false
      async.spawn(function() async.sleep(0.01) done = true end)
      async.sleep(0.05)
      assert.is_true(done)
    end)

    it("sleeps its own time while a slow request is in flight", function()
      local t = async.spawn(function() return async.request(req("/slow?ms=600")) end)
      local t0 = qos.now()
      async.sleep(0.05)
      assert.is_true(qos.now() - t0 < 0.4, "slept until the request ended")
      assert.equal("pending", t:status())
      local waiter = async.spawn(function() async.sleep(0.05) return "woke" end)
      t0 = qos.now()
      assert.equal("woke", waiter:wait()) -- a wait ends with the timer that ends it
      assert.is_true(qos.now() - t0 < 0.4, "waited until the request ended")
      assert.equal(200, t:wait().status)
    end)

    it("keeps the network going while a task sleeps 0 in a loop", function()
      local res
      local t = async.spawn(function() res = async.request(req("/echo")) end)
      local turns = 0
      local poller = async.spawn(function()
        while not res and turns < 1e6 do turns = turns + 1; async.sleep(0) end
      end)
      local t0 = qos.now()
      poller:wait()
      assert.is_true(qos.now() - t0 < 5, "the request starved")
      assert.equal(200, res.status)
      t:wait()
    end)

    it("run re-raises an error nobody observed, once", function()
      local t = async.spawn(function() error({ kind = "boom" }) end)
      assert.equal("rejected", t:status())
      local ok, err = pcall(async.run)
      assert.is_false(ok)
      assert.same({ kind = "boom" }, err)
      assert.has_no_error(async.run)
    end)

    it("writes a rejection nothing observed to stderr when the state closes", function()
      local cases = {
        { "a.spawn(function() error('boom') end)", "quan.async: a rejection nothing observed: .*boom\n" },
        { "a.resolved(1):next(function() error('in next') end)", "observed: .*in next\n" },
        { "a.spawn(function() error('caught') end):catch(function() end); a.run()", nil },
        { "a.spawn(function() error('waited') end); pcall(a.run)", nil },
      }
      for _, c in ipairs(cases) do
        local out, err, code = sh.run(("%s -e %q"):format(sh.quan,
          "local a = require 'quan.async'; " .. c[1] .. "; print('end')"))
        assert.equal("end\n", out)
        assert.equal(0, code)
        if c[2] then assert.matches(c[2], err) else assert.equal("", err) end
      end
    end)

    it("keeps the first 100 rejections nothing observed and counts the rest", function()
      local out, err, code = sh.run(("%s -e %q"):format(sh.quan, [[
        local a = require 'quan.async'
        local ps = {}
        for i = 1, 250 do ps[i] = a.spawn(function() error('e' .. i, 0) end) end
        for i = 201, 250 do ps[i]:catch(function() end) end
        ps = nil; collectgarbage(); print('end')]]))
      assert.equal("end\n", out)
      assert.equal(0, code)
      local lines = {}
      for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equal(101, #lines)
      assert.equal("quan.async: a rejection nothing observed: e1", lines[1])
      assert.equal("quan.async: a rejection nothing observed: e100", lines[100])
      assert.equal("quan.async: and 100 more rejections nothing observed", lines[101])
    end)

    it("run stays quiet about errors that were caught", function()
      local t = async.spawn(function() async.sleep(0) error("late") end)
      local caught = t:catch(function(e) return e end)
      async.run()
      assert.matches("late$", caught:wait())
    end)

    it("raises on a wait that nothing can end", function()
      local p = async.promise(function() end)
      assert.has_error(function() p:wait() end, "async: deadlock: nothing left that could finish the wait")
    end)

    it("rejects a task that yields by itself", function()
      local t = async.spawn(function() coroutine.yield("mine") end)
      assert.equal("rejected", t:status())
      assert.has_error(function() t:wait() end,
        "async: a task yielded outside quan.async (use async.request, async.sleep, :wait)")
    end)
  end)

  describe("promises", function()
    it("chains next: each return value feeds the next callback", function()
      local p = async.promise(function(resolve) resolve(1, "x") end)
        :next(function(n, s) return n + 1, s .. "y" end)
        :next(function(n, s) return n * 10, s .. "z" end)
      assert.same({ 20, "xyz" }, { p:wait() })
    end)

    it("sends an error down to catch, and catch recovers the chain", function()
      local seen = {}
      local p = async.resolved(1)
        :next(function() error("bad step", 0) end)
        :next(function() seen[#seen + 1] = "skipped" end)
        :catch(function(e) return "caught: " .. e end)
        :next(function(v) return v .. "!" end)
      assert.equal("caught: bad step!", p:wait())
      assert.same({}, seen)
    end)

    it("waits for a promise returned by a callback", function()
      local p = async.resolved(2):next(function(n)
        return async.spawn(function()
          local res = assert(async.request(req("/echo?n=" .. n)))
          return cjson.decode(res.body).path
        end)
      end)
      assert.equal("/echo?n=2", p:wait())
    end)

    it("lets callbacks yield: a request inside next", function()
      local p = async.resolved("/echo?in=next"):next(function(path)
        return assert(async.request(req(path))).status
      end)
      assert.equal(200, p:wait())
    end)

    it("wait re-raises the rejection value as is", function()
      local e = setmetatable({ code = "X" }, { __tostring = function() return "X!" end })
      local ok, err = pcall(function() return async.rejected(e):wait() end)
      assert.is_false(ok)
      assert.equal(e, err)
      ok, err = pcall(function() return async.spawn(function() error("plain") end):wait() end)
      assert.is_false(ok)
      assert.matches("async_spec%.lua:%d+: plain$", err)
    end)

    it("settles once; resolving with a promise adopts it; executor errors reject", function()
      local p = async.promise(function(resolve, reject)
        resolve("first")
        resolve("second")
        reject("third")
      end)
      assert.equal("first", p:wait())
      local adopted = async.promise(function(resolve) resolve(async.rejected("inner")) end)
      assert.has_error(function() adopted:wait() end, "inner")
      local thrown = async.promise(function() error("in executor", 0) end)
      assert.equal("rejected", thrown:status())
      assert.has_error(function() thrown:wait() end, "in executor")
    end)

    it("resolves later, from a task", function()
      local resolve
      local p = async.promise(function(r) resolve = r end)
      async.spawn(function() async.sleep(0.01) resolve("later") end)
      assert.equal("pending", p:status())
      assert.equal("later", p:wait())
    end)

    it("all gathers first values in order, plain values included", function()
      local slow = async.spawn(function()
        return cjson.decode(assert(async.request(req("/slow?ms=100"))).body).path
      end)
      local fast = async.spawn(function()
        return cjson.decode(assert(async.request(req("/echo"))).body).path
      end)
      local r = async.all { slow, fast, "plain", async.resolved(1, 2) }:wait()
      assert.same({ "/slow?ms=100", "/echo", "plain", 1 }, r)
      assert.same({}, async.all({}):wait())
    end)

    it("all rejects with the first rejection", function()
      local never = async.promise(function() end)
      local p = async.all { never, async.rejected("no"), async.resolved(1) }
      assert.equal("rejected", p:status())
      assert.has_error(function() p:wait() end, "no")
    end)

    it("wait inside a task yields instead of blocking", function()
      local inner = async.spawn(function() return assert(async.request(req("/slow?ms=100"))).status end)
      local outer = async.spawn(function() return inner:wait() + 1 end)
      assert.equal("pending", outer:status())
      assert.equal(201, outer:wait())
    end)

    it("prints its state", function()
      assert.equal("quan.async.promise (fulfilled)", tostring(async.resolved()))
      assert.is_true(async.is_promise(async.spawn(function() end)))
      assert.is_false(async.is_promise({}))
    end)
  end)

  describe("cancel", function()
    it("stops a task before its request is sent: the server never sees it", function()
      local s = https.start(pki.cert, pki.key)
      local after = false
      local t = async.spawn(function()
        async.request { url = s:url("/slow?ms=10"), method = "POST", body = "x", cafile = pki.ca }
        after = true
      end)
      assert.is_true(t:cancel())
      assert.equal("rejected", t:status())
      async.sleep(0.3) -- the loop runs on: nothing of the task is left in it
      assert.is_false(after)
      assert.equal(0, stats(s).max_active)
      local ok, err = pcall(t.wait, t)
      assert.is_false(ok)
      assert.equal("async: cancelled", err)
      s:stop()
    end)

    it("drops the answer of a request in flight; the task never resumes", function()
      local s = https.start(pki.cert, pki.key)
      local after = false
      local t = async.spawn(function()
        async.request { url = s:url("/slow?ms=400"), cafile = pki.ca }
        after = true
      end)
      local deadline = qos.now() + 5
      repeat async.sleep(0.02) until stats(s).active == 1 or qos.now() > deadline
      assert.equal(1, stats(s).active) -- the request is at the server
      assert.is_true(t:cancel("stop"))
      async.sleep(0.5)
      assert.is_false(after)
      assert.same({ false, "stop" }, { pcall(t.wait, t) })
      assert.equal(200, async.request(req("/echo")).status) -- the loop still works
      s:stop()
    end)

    it("stops a sleeping task and closes its to-be-closed variables", function()
      local woke, closed = false, false
      local t = async.spawn(function()
        local guard <close> = setmetatable({}, { __close = function() closed = true end })
        async.sleep(0.1)
        woke = true
      end)
      assert.is_true(t:cancel())
      assert.is_true(closed)
      async.sleep(0.2)
      assert.is_false(woke)
    end)

    it("forgets the sleep of a cancelled task: a deadlock is found at once", function()
      local t = async.spawn(function() async.sleep(30) end)
      t:cancel()
      local t0 = qos.now()
      local ok, err = pcall(function() async.promise(function() end):wait() end)
      assert.is_false(ok)
      assert.matches("deadlock", err)
      assert.is_true(qos.now() - t0 < 5)
    end)

    it("rejects with an error raised while closing the task's variables", function()
      local t = async.spawn(function()
        local guard <close> = setmetatable({}, { __close = function() error("close failed", 0) end })
        async.sleep(1)
      end)
      assert.is_true(t:cancel())
      assert.same({ false, "close failed" }, { pcall(t.wait, t) })
    end)

    it("stops a task waiting on a promise; run does not wait for it", function()
      local never = async.promise(function() end)
      local after = false
      local t = async.spawn(function() never:wait(); after = true end)
      assert.is_true(t:cancel())
      async.run() -- no deadlock: the cancelled task is not live
      assert.is_false(after)
    end)

    it("passes to whatever waits on the task, and counts as observed", function()
      local t = async.spawn(function() async.sleep(5) end)
      local seen = async.spawn(function()
        local ok, err = pcall(t.wait, t)
        return ok, err
      end)
      t:cancel({ code = "cancelled" })
      local ok, err = seen:wait()
      assert.is_false(ok)
      assert.same({ code = "cancelled" }, err)
      async.run() -- raises for an unobserved rejection: there is none
    end)

    it("rejects a plain pending promise; a later resolve is ignored", function()
      local resolve
      local p = async.promise(function(res) resolve = res end)
      assert.is_true(p:cancel())
      resolve(42)
      assert.equal("rejected", p:status())
      assert.is_false(p:cancel()) -- already settled
      assert.is_false(async.resolved(1):cancel())
    end)

    it("refuses to cancel the running task", function()
      local t
      t = async.spawn(function()
        async.sleep(0)
        return pcall(t.cancel, t)
      end)
      local ok, err = t:wait()
      assert.is_false(ok)
      assert.matches("a task cannot be cancelled while it runs", err)
    end)
  end)

  describe("bad arguments", function()
    local p = async.resolved(1)
    local cases = {
      { function() async.spawn(nil) end, "bad argument #1 to 'spawn' (function expected, got nil)" },
      { function() async.spawn({}) end, "bad argument #1 to 'spawn' (function expected, got table)" },
      { function() async.request("https://x") end, "bad argument #1 to 'request' (table expected, got string)" },
      { function() async.sleep("1") end, "bad argument #1 to 'sleep' (number expected, got string)" },
      { function() async.sleep(-1) end, "bad argument #1 to 'sleep' (negative duration)" },
      { function() async.sleep(0 / 0) end, "bad argument #1 to 'sleep' (NaN is not a duration)" },
      { function() async.sleep(math.huge) end, "bad argument #1 to 'sleep' (infinite duration)" },
      { function() async.sleep(-math.huge) end, "bad argument #1 to 'sleep' (negative duration)" },
      { function() async.promise(1) end, "bad argument #1 to 'promise' (function expected, got number)" },
      { function() async.all(nil) end, "bad argument #1 to 'all' (table expected, got nil)" },
      { function() p:next(1) end, "bad argument #1 to 'next' (function or nil expected, got number)" },
      { function() p:next(nil, "x") end, "bad argument #2 to 'next' (function or nil expected, got string)" },
      { function() p:catch() end, "bad argument #1 to 'catch' (function expected, got nil)" },
      { function() p.wait({}) end, "calling 'wait' on bad self (promise expected, got table)" },
    }
    for i, case in ipairs(cases) do
      it("raises for case " .. i .. ": " .. case[2], function()
        local ok, err = pcall(case[1])
        assert.is_false(ok)
        assert.equal("tests/async_spec.lua:" .. debug.getinfo(case[1], "S").linedefined .. ": " .. case[2], err)
      end)
    end

    it("rejects a task that sleeps NaN or forever, at once", function()
      for _, bad in ipairs { 0 / 0, math.huge } do
        local line = debug.getinfo(1, "l").currentline + 1
        local t = async.spawn(function() async.sleep(bad) end)
        assert.equal("rejected", t:status())
        local ok, err = pcall(t.wait, t)
        assert.is_false(ok)
        assert.matches("^tests/async_spec%.lua:" .. line .. ": bad argument #1 to 'sleep' %(", err)
      end
    end)

    it("raises request-table errors at the caller", function()
      local ok, err = pcall(function() async.request { url = "https://x", nope = true } end)
      assert.is_false(ok)
      assert.matches("^tests/async_spec%.lua:%d+: http request: unknown field 'nope'$", err)
      ok, err = pcall(function() async.request {} end)
      assert.matches("^tests/async_spec%.lua:%d+: http request: 'url' is required$", err)
    end)
  end)

  it("abandons a request whose wait an error unwinds: it is never sent later", function()
    local s = https.start(pki.cert, pki.key)
    local perform = getmetatable(http.multi()).__index.perform
    -- what Ctrl-C does: an error raised where the loop would wait
    debug.sethook(function()
      if debug.getinfo(2, "f").func == perform then
        debug.sethook()
        error(require("quan.os").interrupt, 0)
      end
    end, "c")
    local ok, err = pcall(async.request, { url = s:url("/slow?ms=10"), method = "POST", body = "x", cafile = pki.ca })
    debug.sethook()
    assert.is_false(ok)
    assert.is_true(require("quan.os").is_interrupt(err))
    -- the loop runs again (another request, a sleep): the abandoned one stays gone
    assert.equal(200, async.request(req("/echo")).status)
    async.sleep(0.3)
    assert.equal(0, stats(s).max_active)
    s:stop()
  end)

  it("lets Ctrl-C interrupt tasks waiting on the network", function()
    local how, code, out, err = https.interrupt(pki, [[
      local async = require "quan.async"
      for i = 1, 3 do
        async.spawn(function() return async.request { url = arg[1], cafile = arg[2] } end)
      end
      async.run()
      print("not reached")
    ]], 3)
    assert.equal("exit", how)
    assert.equal(1, code)
    assert.matches("interrupted!", err)
    assert.equal("", out)
  end)

  it("adds no globals", function()
    local out, err = sh.run(sh.quan .. [[ -e 'local g = {} for k in pairs(_G) do g[k] = true end
      local a = require "quan.async"
      a.spawn(function() a.sleep(0) end):wait()
      for k in pairs(_G) do if not g[k] then print(k) end end']])
    assert.equal("", err)
    assert.equal("", out)
  end)
end)
