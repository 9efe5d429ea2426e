local qos = require "quan.os"
local sh = require "tests.support.sh"
local md = require "tests.support.mdexamples"

describe("quan.os", function()
  it("measures time", function()
    local a = qos.now()
    qos.sleep(0.01)
    assert.is_true(qos.now() > a)
    assert.is_true(math.abs(qos.time() - os.time()) < 2)
    assert.is_true(qos.cputime() >= 0)
    assert.is_true(qos.maxrss() > 0)
  end)

  it("resumes a coroutine with a time limit, stopping it in the coroutines it made and through its pcalls", function()
    local function within(fn, ...)
      local co = coroutine.create(fn)
      local t0 = qos.now()
      local out = table.pack(qos.resume_within(0.2, co, ...))
      return out, qos.now() - t0, coroutine.status(co)
    end
    for _, fn in ipairs {
      function() while true do end end,
      function() while true do pcall(function() while true do end end) end end,
      function() coroutine.wrap(function() while true do end end)() end,
    } do
      local out, took, status = within(fn)
      assert.is_true(out[1], "late")
      assert.is_true(took >= 0.2 and took < 2, "stopped at its limit: " .. took)
      assert.equal("dead", status)
      assert.is_false(out[2])
      assert.matches("time limit passed$", out[3])
    end
    -- within the time: as resume does
    local out, _, status = within(function(a, b) return a + b end, 2, 3)
    assert.same({ false, true, 5, n = 3 }, out)
    assert.equal("dead", status)
    out, _, status = within(function() coroutine.yield("y") end)
    assert.same({ false, true, "y", n = 3 }, out)
    assert.equal("suspended", status)
    out = within(function() error("boom", 0) end)
    assert.same({ false, false, "boom", n = 3 }, out)
    -- a loop of waits in C is stopped at its next call
    local out2, took2 = within(function() while true do qos.sleep(0.05) end end)
    assert.is_true(out2[1])
    assert.is_true(took2 < 1, "stopped between sleeps: " .. took2)
    -- nested: the earlier deadline holds; a coroutine made inside keeps the limit after an inner
    -- resume; stopped says the limit stopped code of the call, here the child's
    local nested, took3 = within(function()
      local child = coroutine.create(function() coroutine.yield(); while true do end end)
      qos.resume_within(100, child)
      return coroutine.resume(child)
    end)
    assert.same({ true, true, false, "time limit passed" }, { nested[1], nested[2], nested[3], nested[4] })
    assert.is_true(took3 < 2, "the outer deadline held: " .. took3)
    -- not a suspended coroutine: as resume says, its hook untouched
    local me = within(function() return qos.resume_within(1, (coroutine.running())) end)
    assert.same({ false, true, false, false, "cannot resume non-suspended coroutine" }, { me[1], me[2], me[3], me[4], me[5] })
    -- a coroutine made inside and kept runs free once the resume is over
    local kept
    within(function() kept = coroutine.create(function() for _ = 1, 1e6 do end return "done" end) end)
    qos.sleep(0.25)
    assert.same({ true, "done" }, { coroutine.resume(kept) })
    assert.has_error(function() qos.resume_within(-1, coroutine.create(print)) end)
    assert.has_error(function() qos.resume_within(1, print) end)
  end)

  it("spawns, waits and kills processes", function()
    local dir = sh.tmpdir()
    local pid = assert(qos.spawn({"sh", "-c", "echo hi; exit 3"}, {stdout = dir .. "/out"}))
    local how, code = qos.wait(pid)
    assert.equal("exit", how)
    assert.equal(3, code)
    assert.equal("hi\n", sh.read(dir .. "/out"))
    pid = assert(qos.spawn({"sleep", "30"}))
    assert.is_false(qos.wait(pid, true))
    assert.is_true(qos.kill(pid, "KILL"))
    how, code = qos.wait(pid)
    assert.equal("signal", how)
    assert.equal(9, code)
    local ok, msg, code = qos.spawn({"/nonexistent/prog"})
    assert.is_nil(ok)
    assert.matches("/nonexistent/prog", msg)
    assert.equal("noent", code)
  end)

  it("names the redirect file that cannot be opened, not the program", function()
    local ok, msg, code = qos.spawn({"true"}, {stdout = "/nonexistent/dir/out"})
    assert.is_nil(ok)
    assert.equal("/nonexistent/dir/out: No such file or directory", msg)
    assert.equal("noent", code)
    ok, msg = qos.spawn({"true"}, {stdin = "/nonexistent/in"})
    assert.equal("/nonexistent/in: No such file or directory", msg)
  end)

  it("detaches a child into its own process group on request", function()
    local dir = sh.tmpdir()
    local pid = assert(qos.spawn({"sh", "-c", "ps -o pgid= -p $$ > " .. dir .. "/pg"}, {detach = true}))
    qos.wait(pid)
    assert.equal(tostring(pid), sh.read(dir .. "/pg"):match("%d+"))
    pid = assert(qos.spawn({"sh", "-c", "ps -o pgid= -p $$ > " .. dir .. "/pg"}))
    qos.wait(pid)
    assert.not_equal(tostring(pid), sh.read(dir .. "/pg"):match("%d+"))
  end)

  it("tells the real working directory, whatever $PWD says", function()
    local dir = sh.tmpdir()
    local out = sh.run("cd " .. dir .. " && PWD=/ " .. sh.quan .. " -e 'print(require(\"quan.os\").cwd())'")
    assert.equal(dir .. "\n", out)
  end)

  it("reports file modes and makes private directories", function()
    local dir = sh.tmpdir()
    assert.equal(tonumber("700", 8), qos.mode(dir))
    sh.write(dir .. "/f", "x")
    assert.is_true(qos.chmod(dir .. "/f", tonumber("640", 8)))
    assert.equal(tonumber("640", 8), qos.mode(dir .. "/f"))
    assert.is_true(qos.mkdir(dir))
    local ok, why, code = qos.mkdir(dir .. "/f")
    assert.is_nil(ok)
    assert.matches("Not a directory", why)
    assert.equal("notdir", code)
    local m, msg
    m, msg, code = qos.mode(dir .. "/missing")
    assert.is_nil(m)
    assert.equal(dir .. "/missing: No such file or directory", msg)
    assert.equal("noent", code)
  end)

  it("tells what kind of file a path is, its size, its owner, its names and which file it is", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/f", "hello")
    local uid, gid = sh.run("stat -c '%u %g' " .. sh.quote(dir .. "/f")):match("^(%d+) (%d+)")
    local st = qos.stat(dir .. "/f")
    assert.same({ kind = "file", size = 5, mode = qos.mode(dir .. "/f"), uid = tonumber(uid), gid = tonumber(gid),
                  links = 1 },
      { kind = st.kind, size = st.size, mode = st.mode, uid = st.uid, gid = st.gid, links = st.links })
    assert.equal(tonumber((sh.run("id -u"))), qos.geteuid())
    assert.equal(qos.geteuid(), qos.stat(dir).uid)
    assert.equal(0, qos.stat("/").uid)
    assert.equal(tonumber("1777", 8), qos.stat("/tmp").mode) -- the sticky bit is among the mode bits
    assert.is_true(math.type(st.device) == "integer" and math.type(st.inode) == "integer")
    -- another name of the same file: the same device and inode, two links; a
    -- symbolic link is followed
    assert.is_true(os.execute(("ln %s %s && ln -s f %s"):format(sh.quote(dir .. "/f"), sh.quote(dir .. "/g"),
      sh.quote(dir .. "/s"))))
    local g, s = qos.stat(dir .. "/g"), qos.stat(dir .. "/s")
    assert.same({ st.device, st.inode, 2 }, { g.device, g.inode, g.links })
    assert.same({ st.device, st.inode }, { s.device, s.inode })
    assert.not_equal(st.inode, qos.stat(dir).inode)
    assert.equal("directory", qos.stat(dir).kind)
    assert.equal("char", qos.stat("/dev/zero").kind)
    local st, msg, code = qos.stat(dir .. "/missing")
    assert.is_nil(st)
    assert.matches("missing", msg)
    assert.equal("noent", code)
    assert.has_error(function() qos.stat() end, "bad argument #1 to 'stat' (string expected, got no value)")
  end)

  it("reads and lowers resource limits, and tells whether the process may dump core", function()
    local out, err, code = sh.run(sh.quan .. " -e " .. sh.quote([[
      local qos = require "quan.os"
      local soft, hard = qos.rlimit("cpu")
      assert(soft == math.huge or math.type(soft) == "integer", soft)
      assert(hard == math.huge or hard >= soft)
      assert(qos.rlimit("cpu", 100) == 100)
      local _, data_hard = qos.rlimit("data")
      print(select(2, qos.rlimit("cpu")) == hard, qos.rlimit("data", data_hard) == data_hard, (qos.rlimit("core", 0)))
      local p = io.popen("ulimit -t")
      print(p:read("a"))
      p:close()
      print(type(qos.dumpable()))
      for _, bad in ipairs { { "stack" }, { "cpu", -1 }, { "cpu", 0 / 0 }, { "core", "x" } } do
        print((select(2, pcall(qos.rlimit, table.unpack(bad)))))
      end]]))
    assert.equal(0, code, err)
    assert.equal("true\ttrue\t0\n100\n\nboolean\n"
      .. "bad argument #1 to 'quan.os.rlimit' (invalid option 'stack')\n"
      .. "bad argument #2 to 'quan.os.rlimit' (a limit is a number >= 0)\n"
      .. "bad argument #2 to 'quan.os.rlimit' (a limit is a number >= 0)\n"
      .. "bad argument #2 to 'quan.os.rlimit' (number expected, got string)\n", out)
  end)

  it("lists a directory's entries as ls -A does, dot files and links included", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/b", "x")
    sh.write(dir .. "/.hidden", "x")
    sh.write(dir .. "/with space", "x")
    assert(qos.mkdir(dir .. "/sub"))
    sh.write(dir .. "/sub/inner", "x")
    sh.run("ln -s /nonexistent " .. sh.quote(dir .. "/dangling"))
    local names = assert(qos.list(dir))
    table.sort(names)
    local ls = {}
    for name in sh.run("LC_ALL=C ls -A " .. sh.quote(dir)):gmatch("[^\n]+") do ls[#ls + 1] = name end
    table.sort(ls)
    assert.same(ls, names)
    assert.same({ ".hidden", "b", "dangling", "sub", "with space" }, names)
    assert.same({ "inner" }, qos.list(dir .. "/sub"))
    assert(qos.mkdir(dir .. "/empty"))
    assert.same({}, qos.list(dir .. "/empty"))
    for _, c in ipairs { { dir .. "/missing", "noent" }, { dir .. "/b", "notdir" } } do
      local list, msg, code = qos.list(c[1])
      assert.is_nil(list)
      assert.equal(c[1] .. ": " .. (c[2] == "noent" and "No such file or directory" or "Not a directory"), msg)
      assert.equal(c[2], code)
    end
    assert.has_error(function() qos.list() end, "bad argument #1 to 'list' (string expected, got no value)")
  end)

  it("refuses a second holder of a lock, across processes", function()
    local dir = sh.tmpdir()
    local path = dir .. "/j.lock"
    local lock = assert(qos.lock(path))
    local out = sh.run(sh.quan .. " -e " .. sh.quote(
      "local l, m, c = require('quan.os').lock('" .. path .. "') print(l, c)"))
    assert.equal("nil\tbusy\n", out)
    lock:close()
    out = sh.run(sh.quan .. " -e " .. sh.quote(
      "local l = require('quan.os').lock('" .. path .. "') print(l ~= nil)"))
    assert.equal("true\n", out)
  end)

  it("names each failure by its errno, as a string", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/f", "x")
    assert.is_true(qos.chmod(dir, tonumber("500", 8))) -- no writing in dir
    local cases = {
      { "noent", qos.chmod, dir .. "/missing", 384 },
      { "notdir", qos.stat, dir .. "/f/below" },
      { "noent", qos.mkdtemp, dir .. "/missing/x-" },
      { "srch", qos.kill, 4194305, "ZERO" }, -- past pid_max: no such process
      { "child", qos.wait, qos.getpid() },
    }
    -- root ignores permissions: then EACCES cannot be shown
    if not io.open(dir .. "/probe", "w") then cases[#cases + 1] = { "acces", qos.lock, dir .. "/l" } end
    for _, c in ipairs(cases) do
      local none, msg, code = c[2](table.unpack(c, 3))
      assert.is_nil(none)
      assert.is_string(msg)
      assert.equal(c[1], code, msg)
    end
    qos.chmod(dir, tonumber("700", 8))
  end)

  it("raises one interrupt value on Ctrl-C and tells it from any other error", function()
    assert.equal("interrupted!", tostring(qos.interrupt))
    assert.equal("quan.interrupt", getmetatable(qos.interrupt).__name)
    local ok, err = pcall(error, qos.interrupt)
    assert.is_false(ok)
    assert.is_true(qos.is_interrupt(err))
    -- the same value however it travels: through a coroutine and a task
    local co = coroutine.create(function() error(qos.interrupt) end)
    local _, cerr = qos.resume(co)
    assert.is_true(qos.is_interrupt(cerr))
    local async = require "quan.async"
    local t = async.spawn(function() async.sleep(0); error(qos.interrupt, 0) end)
    local tok, terr = pcall(async.run)
    assert.is_false(tok)
    assert.is_true(qos.is_interrupt(terr))
    assert.equal("rejected", t:status())
    -- ordinary errors are never the interrupt, whatever their text
    for _, v in ipairs { "interrupted!", "x.lua:3: interrupted!", "interrupted", { message = "interrupted!" },
                         setmetatable({}, { __tostring = function() return "interrupted!" end }), 130 } do
      assert.is_false(qos.is_interrupt(v), tostring(v))
      assert.is_false(qos.is_interrupt(select(2, pcall(error, v))), tostring(v))
    end
    assert.is_false(qos.is_interrupt(nil))
    assert.has_error(function() qos.is_interrupt() end, "bad argument #1 to 'is_interrupt' (value expected)")
    -- a real Ctrl-C raises that value: a script catches it and tells
    local dir = sh.tmpdir()
    local ready = dir .. "/ready"
    local script = sh.write(dir .. "/catch.lua", "local qos = require 'quan.os' "
      .. "local ok, e = pcall(function() io.open('" .. ready .. "', 'w'):close() while true do end end) "
      .. "print(ok, qos.is_interrupt(e), tostring(e))")
    local out = sh.run("sh -c '" .. sh.quan .. " " .. script .. " & p=$!; i=0; "
      .. "while [ ! -e " .. ready .. " ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; "
      .. "kill -INT $p; wait $p'")
    assert.equal("false\ttrue\tinterrupted!\n", out)
  end)

  it("traps SIGTERM and SIGHUP as a Ctrl-C while a trap is open, notes them while it holds, and keeps their defaults otherwise", function()
    local dir = sh.tmpdir()
    -- a script that makes a file once its trap is open, then spins until
    -- interrupted, and prints what it caught (phase "hold": a held trap,
    -- the signal noted; "closed": the trap closed, the default action)
    local script = sh.write(dir .. "/t.lua", [[
      local qos = require "quan.os"
      local ready, phase = ...
      local trap = qos.trap { "TERM", "HUP" }
      if phase == "hold" then trap:hold() end
      if phase == "closed" then trap:close() end
      io.open(ready, "w"):close()
      local ok, e = pcall(function()
        local deadline = qos.now() + 10
        while qos.now() < deadline and not (phase == "hold" and qos.interrupt_signal()) do qos.sleep(0.01) end
      end)
      print(ok, qos.is_interrupt(e), qos.interrupt_signal())
      trap:close()
    ]])
    local function signalled(signal, phase, prefix)
      local ready = dir .. "/ready-" .. signal .. "-" .. phase
      local pid = assert(qos.spawn({ "sh", "-c", (prefix or "") .. "exec " .. sh.quote(sh.quan) .. " "
        .. sh.quote(script) .. " " .. sh.quote(ready) .. " " .. phase }, { stdout = ready .. ".out" }))
      local deadline = qos.now() + 20
      while not io.open(ready) and qos.now() < deadline do qos.sleep(0.02) end
      qos.kill(pid, signal)
      local how, code = qos.wait(pid)
      return how, code, sh.read(ready .. ".out")
    end
    assert.same({ "exit", 0, "false\ttrue\tTERM\n" }, { signalled("TERM", "open") })
    assert.same({ "exit", 0, "false\ttrue\tHUP\n" }, { signalled("HUP", "open") })
    assert.same({ "exit", 0, "true\tfalse\tTERM\n" }, { signalled("TERM", "hold") })
    assert.same({ "signal", 15, "" }, { signalled("TERM", "closed") })
    -- a signal ignored on entry (nohup's SIGHUP) stays ignored; a TERM then interrupts as usual
    local ready = dir .. "/ready-nohup"
    local pid = assert(qos.spawn({ "sh", "-c", "trap '' HUP; exec " .. sh.quote(sh.quan) .. " "
      .. sh.quote(script) .. " " .. sh.quote(ready) .. " open" }, { stdout = ready .. ".out" }))
    local deadline = qos.now() + 20
    while not io.open(ready) and qos.now() < deadline do qos.sleep(0.02) end
    qos.kill(pid, "HUP")
    qos.sleep(0.2)
    assert.is_false(qos.wait(pid, true), "an ignored SIGHUP stays ignored")
    qos.kill(pid, "TERM")
    assert.same({ "exit", 0 }, { qos.wait(pid) })
    assert.equal("false\ttrue\tTERM\n", sh.read(ready .. ".out"))
    assert.has_error(function() qos.trap { "KILL" } end,
      "bad argument #1 to 'trap' (signal 1: expected INT, TERM or HUP)")
    assert.has_error(function() qos.trap() end, "bad argument #1 to 'trap' (table expected, got no value)")
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() qos.sleep(-1) end, "bad argument #1 to 'sleep' (negative duration)")
    assert.has_error(function() qos.sleep(math.huge) end, "bad argument #1 to 'sleep' (duration too long)")
    assert.has_error(function() qos.sleep(0 / 0) end, "bad argument #1 to 'sleep' (NaN is not a duration)")
    assert.has_error(function() qos.spawn({}) end, "bad argument #1 to 'spawn' (empty argv)")
    assert.has_error(function() qos.kill(1, "NOPE") end, "bad argument #2 to 'kill' (invalid option 'NOPE')")
    assert.has_error(function() qos.spawn({"true"}, {stdout = {}}) end,
      "bad argument #2 to 'spawn' (stdout must be a path string, got table)")
  end)

  it("runs the examples of docs/os.md and docs/errors.md", function()
    md.run("docs/os.md", 1)
    assert.equal(1, #md.blocks("docs/errors.md"))
    md.run("docs/errors.md", 1)
  end)
end)
