-- quan's command line: one command table (quan.cli), `quan help [COMMAND]`,
-- `quan COMMAND --help`, `--version`, the unknown-command hint, usage errors
-- exiting 2, and the docs that list the commands and their exit codes.
local sh = require "tests.support.sh"
local cli = require "quan.cli"

local q = sh.quote(sh.quan)

-- lines(text) -> array of lines
local function lines(text)
  local t = {}
  for line in text:gmatch("([^\n]*)\n") do t[#t + 1] = line end
  return t
end

describe("quan's command line", function()
  it("names a plain word, a one-line summary and a runner for every command", function()
    assert.is_true(#cli.COMMANDS >= 5)
    for _, entry in ipairs(cli.COMMANDS) do
      assert.matches("^[a-z][a-z-]*$", entry.name)
      assert.is_string(entry.summary, entry.name)
      assert.not_matches("\n", entry.summary, entry.name)
      assert.equal(entry, cli.find(entry.name))
      if entry.host then
        assert.equal("run", entry.name) -- the one command main.c runs itself
      elseif entry.main then
        assert.is_function(entry.main)
      else
        assert.is_function(require(entry.module).main, entry.name)
      end
    end
    assert.is_nil(cli.find("nosuch"))
  end)

  it("lists every command with its summary: quan help", function()
    local out, err, code = sh.run(q .. " help")
    assert.equal(0, code)
    assert.equal("", err)
    assert.matches("^usage: quan %[options%] %[script %[args%]%]\n", out)
    for _, entry in ipairs(cli.COMMANDS) do
      assert.matches("\n  " .. entry.name:gsub("%-", "%%-") .. " +" .. entry.summary:gsub("%p", "%%%0") .. "\n", out)
    end
    assert.matches("'quan help COMMAND' or 'quan COMMAND %-%-help' shows a command's usage", out)
  end)

  it("prints a command's usage for quan help COMMAND and quan COMMAND --help alike, on stdout", function()
    for _, entry in ipairs(cli.COMMANDS) do
      local out, err, code = sh.run(q .. " help " .. entry.name)
      assert.equal(0, code, entry.name)
      assert.equal("", err, entry.name)
      assert.equal(cli.usage(entry.name), out)
      assert.matches("^usage: quan ", out)
      if not entry.host then
        for _, flag in ipairs { "--help", "-h" } do
          local out2, err2, code2 = sh.run(q .. " " .. entry.name .. " " .. flag .. " < /dev/null")
          assert.equal(0, code2, entry.name)
          assert.equal("", err2, entry.name)
          assert.equal(out, out2, entry.name .. " " .. flag)
        end
      end
    end
    local out = sh.run(q .. " help check")
    assert.matches("\n  %-%-now TIME +check as of TIME", out)
    assert.matches("\n  %-%-log%-format F +the log of a batch the script runs %(one of bar, json, text%)\n", out)
    assert.matches("'quan %-%-help' lists them", (sh.run(q .. " help run")))
  end)

  it("ends quan --help with the commands of the table", function()
    local out, _, code = sh.run(q .. " --help")
    assert.equal(0, code)
    assert.matches("\n  %-%-version +show quan's version and exit\n", out)
    assert.equal(cli.commands_text(), out:sub(-#cli.commands_text()))
  end)

  it("shows its version with --version, as -v does, and exits", function()
    local out, err, code = sh.run(q .. " --version")
    assert.equal(0, code)
    assert.equal("", err)
    assert.matches("^quan %d+%.%d+%.%d+ %(Lua 5%.4%.%d+, WeChat Pay APIv3 cash coupons%)\n$", out)
    assert.equal(out, (sh.run(q .. " -v")))
    assert.equal(out, (sh.run(q .. " --profile x --version run nosuch.lua")))
  end)

  it("prints the banner of `quan` alone for `quan repl`", function()
    local version = sh.run(q .. " -v")
    local out, _, code = sh.run("printf '=1+1\\n' | " .. q .. " repl")
    assert.equal(0, code)
    assert.equal(version, out:sub(1, #version))
    out = sh.run("printf '=1+1\\n' | " .. q .. " -i")
    assert.equal(version, out:sub(1, #version))
  end)

  it("refuses an unknown command with exit 2, naming the closest one", function()
    local dir = sh.tmpdir()
    for _, c in ipairs {
      { "chek", "^quan: unknown command 'chek'; did you mean 'check'%? %('quan help' lists the commands%)\n$" },
      { "sandbx --state x", "did you mean 'sandbox'%?" },
      { "Help", "did you mean 'help'%?" },
      { "xyzzy", "^quan: unknown command 'xyzzy' %('quan help' lists the commands%)\n$" },
      { "--profile p chek", "did you mean 'check'%?" },
      { "help chek", "^quan help: unknown command 'chek'; did you mean 'check'%?" },
    } do
      local out, err, code = sh.run("cd " .. dir .. " && " .. q .. " " .. c[1] .. " < /dev/null")
      assert.equal(2, code, c[1])
      assert.equal("", out, c[1])
      assert.matches(c[2], err)
    end
  end)

  it("runs a script named by a plain word, as lua does, when no command has that name", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/hello", "print('hello', ...)")
    local out, err, code = sh.run("cd " .. dir .. " && " .. q .. " hello a b")
    assert.equal(0, code, err)
    assert.equal("hello\ta\tb\n", out)
    out, err, code = sh.run("cd " .. dir .. " && " .. q .. " --profile p hello c")
    assert.equal(0, code, err)
    assert.equal("hello\tc\n", out)
    -- a path is always a script: a missing one is lua's error, exit 1
    _, err, code = sh.run("cd " .. dir .. " && " .. q .. " ./chek")
    assert.equal(1, code)
    assert.matches("cannot open %./chek", err)
    assert.not_matches("unknown command", err)
  end)

  it("gives every command's usage errors exit 2, the message first, then the usage", function()
    for _, c in ipairs {
      { "check", "quan check: expected script.lua %[args...%]" },
      { "check --bogus s.lua", "quan check: unknown option '%-%-bogus'" },
      { "check --now", "quan check: %-%-now needs a value" },
      { "check --log-formt json s.lua", "quan check: unknown option '%-%-log%-formt' %(did you mean %-%-log%-format%?%)" },
      { "check --verbose=1 s.lua", "quan check: %-%-verbose takes no value" },
      { "sandbox --bogus", "quan sandbox: unknown option '%-%-bogus'" },
      { "sandbox --listen", "quan sandbox: %-%-listen needs a value" },
      { "repl extra", "quan repl: unexpected argument 'extra'" },
      { "help check run", "quan help: unexpected argument 'run'" },
    } do
      local out, err, code = sh.run(q .. " " .. c[1] .. " < /dev/null")
      assert.equal(2, code, c[1])
      assert.equal("", out, c[1])
      local name = c[1]:match("^%S+")
      assert.matches("^" .. c[2] .. "\n" .. cli.usage(name):gsub("%p", "%%%0") .. "$", err)
    end
  end)

  it("says what a bad value should be, without the usage, exit 2", function()
    for _, c in ipairs {
      { "check --now tomorrow s.lua", "^quan check: %-%-now expects \"YYYY%-MM%-DD HH:MM\" or epoch seconds, got 'tomorrow'\n$" },
      { "check --log-format=xml s.lua", "^quan check: %-%-log%-format must be one of bar, json, text, got 'xml'\n$" },
    } do
      local out, err, code = sh.run(q .. " " .. c[1])
      assert.equal(2, code, c[1])
      assert.equal("", out, c[1])
      assert.matches(c[2], err)
    end
  end)

  it("passes the words after quan check's script to the script, options or not", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/args.lua", "io.stderr:write(table.concat({ ... }, ' '), '|', arg[0], '\\n')")
    local _, err, code = sh.run(q .. " check --now 1795824000 " .. script .. " --now x --bogus -h")
    assert.equal(0, code, err)
    assert.equal("--now x --bogus -h|" .. script .. "\n", err)
  end)
end)

describe("docs", function()
  local errors = sh.read("docs/errors.md")
  local cli_md = sh.read("docs/cli.md")

  it("describe every command in docs/cli.md and list its exit codes in docs/errors.md", function()
    local table_rows = errors:match("\n## Exit codes\n(.-)\n## ") or errors:match("\n## Exit codes\n(.*)$")
    assert.truthy(table_rows, "docs/errors.md has no exit code section")
    for _, entry in ipairs(cli.COMMANDS) do
      assert.matches("`quan " .. entry.name .. "[ `]", cli_md, nil, entry.name .. " in docs/cli.md")
      assert.matches("`quan " .. entry.name .. "[ `]", table_rows, nil, entry.name .. " in docs/errors.md")
    end
  end)

  it("run the example of docs/cli.md", function()
    require("tests.support.mdexamples").run("docs/cli.md", 1)
  end)

  it("name the Lua version the binary reports", function()
    local version = sh.run(q .. " --version"):match("^(.-)\n")
    local lua_release = version:match("Lua 5%.4%.%d+")
    for _, page in ipairs(lines(sh.run("ls README.md docs/*.md"))) do
      for found in sh.read(page):gmatch("Lua 5%.4%.%d+") do
        assert.equal(lua_release, found, page)
      end
      for banner in sh.read(page):gmatch("quan %d+%.%d+%.%d+ %b()") do
        assert.equal(version, banner, page)
      end
    end
  end)
end)
