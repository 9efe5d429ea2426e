-- The quan binary as a drop-in lua interpreter.
local sh = require "tests.support.sh"
local q = sh.quan

describe("quan as a lua interpreter", function()
  it("preloads cjson from Debian's static library", function()
    local out = sh.run(q .. [[ -e 'print(require"cjson".encode{1,2})']])
    assert.equal("[1,2]\n", out)
    out = sh.run(q .. [[ -e 'print(require"cjson.safe".decode("{bad"))']])
    assert.matches("^nil\t", out)
  end)

  it("runs stdin with '-' and builds arg as lua.c does", function()
    local out = sh.run("echo 'print(arg[1], arg[0], #arg)' | " .. q .. " - x y")
    assert.equal("x\t-\t2\n", out)
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/a.lua", "print(arg[0], arg[1], arg[2], arg[-1])")
    out = sh.run(q .. " " .. script .. " one two")
    assert.equal(script .. "\tone\ttwo\t" .. q .. "\n", out)
  end)

  it("treats `quan run script` as `quan script`", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/a.lua", "print(...)")
    assert.equal("a\tb\n", (sh.run(q .. " run " .. script .. " a b")))
  end)

  it("takes quan's long options before or after the command word", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/p.lua", "print(os.getenv('QUAN_PROFILE'), os.getenv('QUAN_DEBUG'), ...)")
    for _, cmd in ipairs {
      " --profile p --verbose run " .. script .. " a",
      " run --profile p --verbose " .. script .. " a",
      " --profile=p run --verbose " .. script .. " a",
    } do
      local out, err, code = sh.run(q .. cmd)
      assert.equal(0, code, cmd .. "\n" .. err)
      assert.equal("p\t1\ta\n", out, cmd)
    end
    local out, err, code = sh.run(q .. " --profile p check " .. script)
    assert.equal(0, code, err)
    assert.matches("^p\tnil\nquan check: 0 requests", out)
    _, err, code = sh.run(q .. " --bogus run " .. script)
    assert.equal(1, code)
    assert.matches("unrecognized option '%-%-bogus'", err)
  end)

  it("handles -e, -l mod, -l g=mod, -v, --", function()
    assert.equal("3\n", (sh.run(q .. [[ -e 'print(1+2)']])))
    assert.equal("table\n", (sh.run(q .. [[ -l quan.os -e 'print(type(_G["quan.os"]))']])))
    assert.equal("function\n", (sh.run(q .. [[ -l qos=quan.os -e 'print(type(qos.now))']])))
    assert.matches("^quan %S+ %(Lua 5%.4", (sh.run(q .. " -v")))
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/-dash.lua", "print('dash')")
    assert.equal("dash\n", (sh.run("cd " .. dir .. " && " .. q .. " -- -dash.lua")))
  end)

  it("honours LUA_INIT_5_4 over LUA_INIT, and -E ignores both", function()
    assert.equal("54\n", (sh.run("LUA_INIT='print(1)' LUA_INIT_5_4='print(54)' " .. q .. " -e ''")))
    assert.equal("1\n", (sh.run("LUA_INIT='print(1)' " .. q .. " -e ''")))
    assert.equal("", (sh.run("LUA_INIT='print(1)' " .. q .. " -E -e ''")))
  end)

  it("turns warnings on with -W", function()
    local _, err = sh.run(q .. [[ -W -e 'warn("careful")']])
    assert.matches("careful", err)
    _, err = sh.run(q .. [[ -e 'warn("careful")']])
    assert.equal("", err)
    -- a warning in pieces is one line; "@off" and "@on" turn them off and on
    _, err = sh.run(q .. [[ -W -e 'warn("a", "b", "c") warn("@off") warn("hidden") warn("@on") warn("again")']])
    assert.equal("Lua warning: abc\nLua warning: again\n", err)
  end)

  it("prints a traceback and exits 1 on an uncaught error", function()
    local _, err, code = sh.run(q .. [[ -e 'local function f() error("boom") end f()']])
    assert.equal(1, code)
    assert.matches("boom", err)
    assert.matches("stack traceback", err)
  end)

  it("names an embedded module's file and line in errors and tracebacks (bytecode keeps its debug information)", function()
    local _, err, code = sh.run(q .. [[ -e 'require("quan.async").sleep(-1)']])
    assert.equal(1, code)
    assert.matches("bad argument #1 to 'sleep' %(negative duration%)", err)
    assert.matches("lua/quan/async%.lua:%d+: in function 'quan%.async%.sleep'", err)
    local out = sh.run(q .. [[ -e 'local i = debug.getinfo(require("wechatpay.sign").message, "S")
      print(i.source, i.linedefined > 0, debug.getinfo(1, "S").source)']])
    assert.equal("@lua/wechatpay/sign.lua\ttrue\t=(command line)\n", out)
  end)

  it("prints an error table through its __tostring", function()
    local _, err, code = sh.run(q .. [[ -e 'error(setmetatable({}, {__tostring=function() return "custom" end}))']])
    assert.equal(1, code)
    assert.matches("custom", err)
  end)

  it("names the script's file:line of the failing call for an uncaught error without a place", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/job.lua", table.concat({
      "local function check(x)",
      "  return x == 2",
      "end",
      "assert(check(1))",
    }, "\n"))
    local _, err, code = sh.run(q .. " " .. script)
    assert.equal(1, code)
    assert.matches("^" .. q:gsub("%p", "%%%0") .. ": " .. script:gsub("%p", "%%%0") .. ":4: assertion failed!\n", err)
    assert.matches("stack traceback", err)
    -- an error table (what assert(wx...:get{...}) raises): its text after
    -- the place, no traceback
    script = sh.write(dir .. "/api.lua", "local e = setmetatable({}, {__tostring = function() return "
      .. "'GET /v3/x: PARAM_ERROR: bad (status 400, request-id R-1)' end})\nlocal r = nil\nassert(r, e)\n")
    _, err, code = sh.run(q .. " " .. script)
    assert.equal(1, code)
    assert.equal(q .. ": " .. script .. ":3: GET /v3/x: PARAM_ERROR: bad (status 400, request-id R-1)\n", err)
    -- a message that names its place keeps it; a module's lines are passed over
    _, err = sh.run(q .. " -e " .. sh.quote("require('wechatpay.favor').yuan('x')"))
    assert.matches("^" .. q:gsub("%p", "%%%0") .. ": %(command line%):1: favor%.yuan: ", err)
    _, err = sh.run(q .. " -e " .. sh.quote("error('where', 0)"))
    assert.matches(": %(command line%):1: where\n", err)
  end)

  it("names the script's line and the request id of an API error that ends it", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/stock.lua", table.concat({
      "local wx = require('wechatpay').client()",
      "local res = assert(wx.v3.marketing.favor.stocks._stock_id_:get {",
      "  stock_id = '404404', query = { stock_creator_mchid = wx.mchid } })",
    }, "\n"))
    local _, err, code = sh.run(q .. " run --sandbox " .. script)
    assert.equal(1, code)
    assert.matches("\n" .. q:gsub("%p", "%%%0") .. ": " .. script:gsub("%p", "%%%0") .. ":2: GET /v3/marketing/favor/stocks/404404%?"
      .. "stock_creator_mchid=%d+: RESOURCE_NOT_EXISTS: [^\n]*%(status 404, request%-id [%w%-]+%)\n$", err)
  end)

  it("shows its usage on --help and -h, on stdout, with exit 0", function()
    for _, flag in ipairs { "--help", "-h" } do
      local out, err, code = sh.run(q .. " " .. flag)
      assert.equal(0, code)
      assert.equal("", err)
      assert.matches("^usage: ", out)
      assert.matches("%-%-profile NAME", out)
    end
  end)

  it("rejects an unknown option with usage", function()
    local _, err, code = sh.run(q .. " -z")
    assert.equal(1, code)
    assert.matches("unrecognized option '%-z'", err)
    assert.matches("\nusage: ", err, 1, true)
  end)

  it("refuses a --log-format it does not know with exit 2, naming the values", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/s.lua", "print('ran')")
    for _, cmd in ipairs {
      " --log-format xml run " .. script, " run --log-format xml " .. script, " --log-format=xml " .. script,
      " --log-format xml check " .. script, " check --log-format xml " .. script, " check --log-format=xml " .. script,
    } do
      local out, err, code = sh.run(q .. cmd)
      assert.equal(2, code, cmd)
      assert.equal("", out, cmd)
      assert.matches("%-%-log%-format must be one of bar, json, text, got 'xml'\n$", err, nil, cmd)
    end
    local out, err, code = sh.run(q .. " --log-format text run " .. script)
    assert.equal(0, code, err)
    assert.equal("ran\n", out)
  end)

  it("refuses `quan run` without a script with exit 2; `quan run -` reads stdin", function()
    for _, cmd in ipairs { " run", " run --profile p", " --sandbox run" } do
      local out, err, code = sh.run("echo 'print(\"read stdin\")' | " .. q .. cmd)
      assert.equal(2, code, cmd)
      assert.equal("", out, cmd)
      assert.matches("run: no script given %('%-' reads one from stdin%)\nusage: %S+ run %[options%] script", err)
    end
    local out, err, code = sh.run("echo 'print(\"read stdin\")' | " .. q .. " run -")
    assert.equal(0, code, err)
    assert.equal("read stdin\n", out)
    -- -e is a script of its own: `quan run -e CODE` runs it
    out, err, code = sh.run(q .. " run -e 'print(1 + 1)' < /dev/null")
    assert.equal(0, code, err)
    assert.equal("2\n", out)
  end)

  it("says which option lacks its value", function()
    for _, opt in ipairs { "-e", "-l", "--profile", "--config", "--log-format" } do
      local _, err, code = sh.run(q .. " " .. opt)
      assert.equal(1, code, opt)
      assert.equal(q .. ": '" .. opt .. "' needs argument", err:match("^[^\n]*"), opt)
    end
  end)

  it("enters the REPL after the script with -i, the script's globals in scope", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/s.lua", "x = 40 + #arg")
    local out, _, code = sh.run("printf 'return x + 1\\n' | " .. q .. " -i " .. script .. " a b")
    assert.equal(0, code)
    assert.matches("^quan %S+ %(Lua 5%.4", out)
    assert.matches("\n?> 43\n", out)
    -- after the script, -i is one of the script's arguments, as in lua.c
    out = sh.run(q .. " " .. sh.write(dir .. "/t.lua", "print(arg[1])") .. " -i </dev/null")
    assert.equal("-i\n", out)
  end)

  it("exits 1 when a -l module or the script cannot be loaded", function()
    local _, err, code = sh.run(q .. " -l no.such.module -e 'print(1)'")
    assert.equal(1, code)
    assert.matches("module 'no.such.module' not found", err, 1, true)
    _, err, code = sh.run(q .. " /nonexistent/script.lua")
    assert.equal(1, code)
    assert.matches("cannot open /nonexistent/script.lua", err, 1, true)
  end)

  it("interrupts a running script on SIGINT", function()
    local dir = sh.tmpdir()
    -- the script says when it runs (its handler is set by then); no fixed sleep
    local ready = dir .. "/ready"
    local script = sh.write(dir .. "/loop.lua", "io.open('" .. ready .. "', 'w'):close() while true do end")
    local how, code, _, err = sh.interrupt(script, ready)
    assert.same({ "exit", 1 }, { how, code })
    assert.matches("interrupted!", err)
  end)

  it("ends a command on SIGINT with one line and exit 130, no traceback", function()
    local dir = sh.tmpdir()
    local ready = dir .. "/ready"
    -- a campaign file that never returns: plan is stopped while it loads
    local file = sh.write(dir .. "/slow.lua", "io.open('" .. ready .. "', 'w'):close() while true do end")
    local how, code, out, err = sh.interrupt({ "plan", file }, ready)
    assert.same({ "exit", 130 }, { how, code })
    assert.equal("", out)
    assert.equal("quan plan: interrupted\n", err)
  end)

  it("interrupts a quan.async task that runs without yielding, and a batch whose sends never wait", function()
    local dir = sh.tmpdir()
    local ready = dir .. "/ready"
    local cases = {
      spin = "local a = require 'quan.async'; a.spawn(function() io.open('" .. ready .. "', 'w'):close() "
        .. "while true do end end); a.run()",
      -- a stand-in send that answers at once: the first worker would go through the whole input
      batch = "local b = require 'quan.batch'; local n = 0; local s = b.run { journal = '" .. dir .. "/j.db', "
        .. "input = function() n = n + 1; if n == 1000 then io.open('" .. ready .. "', 'w'):close() end; "
        .. "if n <= 3000000 then return ('o%08d'):format(n) end end, rate = 1e9, log_format = 'json', "
        .. "out = io.open('/dev/null', 'w'), send = function(item) return { status = 200, json = { coupon_id = 'C' } } end } "
        .. "print(s.exit_code, s.rows)",
    }
    for name, code in pairs(cases) do
      os.remove(ready)
      local script = sh.write(dir .. "/" .. name .. ".lua", code)
      -- not stopped within 5 s of the SIGINT: killed, and the case fails
      local how, rc, out, err = sh.interrupt(script, ready)
      if name == "spin" then
        assert.same({ "exit", 1 }, { how, rc })
        assert.matches("interrupted!", err)
      else
        local exit, rows = out:match("^(%d+)\t(%d+)\n")
        assert.equal("130", exit, out .. err)
        assert.is_true(tonumber(rows) < 3000000, rows) -- stopped, not run to the end
      end
    end
  end)

  it("loads system Lua 5.4 modules as lua5.4 does", function()
    local out = sh.run("cd /tmp && " .. q .. [[ -e 'print(require("pl.stringx").strip("  a "))']])
    assert.equal("a\n", out)
  end)

  it("runs the REPL on -i with expression values printed", function()
    local out = sh.run("printf 'return 2+3\\n=7\\nfunction f()\\nreturn 9 end\\nf()\\n' | " .. q .. " -i")
    assert.matches("5\n", out, 1, true)
    assert.matches("7\n", out, 1, true)
    assert.matches("9\n", out, 1, true)
  end)

  it("installs with make install PREFIX=... and runs from any folder, modules embedded", function()
    local build = q:match("^(.*)/quan$")
    local root = build:match("^(.*)/build$") or build:match("^(.*)/build/[^/]+$")
    if not root then return pending("binary under test is not in a build folder: " .. q) end
    local mk = "make -s -C " .. sh.quote(root) .. " BUILD=" .. sh.quote(build:sub(#root + 2))
    -- only when the binary is up to date, so the spec never rebuilds it
    if select(3, sh.run(mk .. " -q all")) ~= 0 then return pending("build is not up to date") end
    local prefix = sh.tmpdir() .. "/usr"
    local _, err, code = sh.run(mk .. " install PREFIX=" .. sh.quote(prefix))
    assert.equal(0, code, err)
    local out
    out, err, code = sh.run("cd / && " .. prefix .. "/bin/quan -e " .. sh.quote(
      "print(require('wechatpay')._VERSION, type(require('wechatpay.favor.validate').request), require('cjson').encode{1})"))
    assert.equal(0, code, err)
    assert.matches("^%S+\tfunction\t%[1%]\n$", out)
  end)

  it("adds no globals from its modules", function()
    local out = sh.run(q .. [[ -e 'local before = {} for k in pairs(_G) do before[k] = true end
      for _, m in ipairs{"quan.os", "cjson", "quan.cli"} do require(m) end
      for k in pairs(_G) do if not before[k] then print(k) end end']])
    assert.equal("", out)
  end)
end)
