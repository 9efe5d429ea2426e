-- quan.options, the one option parser of quan's commands and scripts, and
-- quan.suggest, its "did you mean".
local options = require "quan.options"
local suggest = require "quan.suggest"

-- a spec shaped like the commands': values, a flag, choices, a check, a default
local SPEC = {
  program = "quan demo",
  summary = "a command for the specs",
  arguments = { "STOCK_ID", "USERS.csv", "[JOURNAL]" },
  options = {
    { "--state DIR", "where it keeps things" },
    { "--ready-file FILE", "written once ready" },
    { "--temporary", "remove it at the end" },
    { "--log-format F", "the log", choices = { bar = true, json = true, text = true } },
    { "--mode M", "how", choices = { "fast", "slow" } },
    { "--rate N", "calls per second", check = options.positive_number },
    { "--listen HOST:PORT", "where to listen", default = "127.0.0.1:0" },
  },
  footer = "more in docs/cli.md",
}

-- a spec shaped like `quan check`: the words after the script are the script's
local SCRIPT = {
  program = "quan try",
  arguments = { "script.lua", "[args...]" },
  passthrough = true,
  options = { { "--now TIME", "as of TIME" }, { "--verbose", "say more" } },
}

describe("quan.options", function()
  it("reads values, flags, choices, checked values and defaults by key", function()
    for _, c in ipairs {
      { { "S", "u.csv" }, { listen = "127.0.0.1:0" }, { "S", "u.csv" } },
      { { "--state", "/d", "S", "u.csv", "J" }, { state = "/d", listen = "127.0.0.1:0" }, { "S", "u.csv", "J" } },
      { { "--state=/d=x", "S", "u.csv" }, { state = "/d=x", listen = "127.0.0.1:0" }, { "S", "u.csv" } },
      { { "S", "--ready-file", "r", "u.csv" }, { ready_file = "r", listen = "127.0.0.1:0" }, { "S", "u.csv" } },
      { { "--temporary", "S", "u.csv", "--listen", "127.0.0.2:9" }, { temporary = true, listen = "127.0.0.2:9" }, { "S", "u.csv" } },
      { { "--log-format", "json", "--mode=slow", "S", "u.csv" },
        { log_format = "json", mode = "slow", listen = "127.0.0.1:0" }, { "S", "u.csv" } },
      { { "--rate", "2.5", "--rate", "400", "S", "u.csv" }, { rate = 400, listen = "127.0.0.1:0" }, { "S", "u.csv" } },
      { { "--state", "-dash", "S", "u.csv" }, { state = "-dash", listen = "127.0.0.1:0" }, { "S", "u.csv" } },
      { { "--", "--state", "-", "x" }, { listen = "127.0.0.1:0" }, { "--state", "-", "x" } },
      { { "-", "u.csv" }, { listen = "127.0.0.1:0" }, { "-", "u.csv" } },
    } do
      local opts, arguments = options.parse(SPEC, c[1])
      assert.same(c[2], opts, table.concat(c[1], " "))
      assert.same(c[3], arguments, table.concat(c[1], " "))
    end
    assert.equal("integer", math.type((options.parse(SPEC, { "--rate", "400", "S", "u" })).rate))
  end)

  it("refuses what does not fit, saying what and whether the usage helps", function()
    for _, c in ipairs {
      { { "--bogus", "S", "u" }, "unknown option '--bogus'", "usage" },
      { { "--stat", "/d", "S", "u" }, "unknown option '--stat' (did you mean --state?)", "usage" },
      { { "--hlep" }, "unknown option '--hlep' (did you mean --help?)", "usage" },
      { { "-x", "S", "u" }, "unknown option '-x'", "usage" },
      { { "S", "u", "--state" }, "--state needs a value", "usage" },
      { { "--temporary=yes", "S", "u" }, "--temporary takes no value", "usage" },
      { { "S" }, "expected STOCK_ID USERS.csv [JOURNAL]", "usage" },
      { {}, "expected STOCK_ID USERS.csv [JOURNAL]", "usage" },
      { { "S", "u", "j", "extra" }, "unexpected argument 'extra'", "usage" },
      { { "--log-format", "xml", "S", "u" }, "--log-format must be one of bar, json, text, got 'xml'", "value" },
      { { "--mode=medium", "S", "u" }, "--mode must be one of fast, slow, got 'medium'", "value" },
      { { "--rate", "0", "S", "u" }, "--rate wants a positive number", "value" },
      { { "--rate", "x", "S", "u" }, "--rate wants a positive number", "value" },
    } do
      local opts, message, kind = options.parse(SPEC, c[1])
      assert.is_nil(opts, table.concat(c[1], " "))
      assert.equal(c[2], message)
      assert.equal(c[3], kind, c[2])
    end
  end)

  it("answers -h and --help before anything after them", function()
    for _, argv in ipairs { { "--help" }, { "-h", "--bogus" }, { "S", "--help", "u" } } do
      local opts, arguments = options.parse(SPEC, argv)
      assert.is_true(opts.help, table.concat(argv, " "))
      assert.same({}, arguments)
    end
    assert.equal("unknown option '--bogus'", select(2, options.parse(SPEC, { "--bogus", "--help" })))
  end)

  it("passes a script's own words on untouched after the script", function()
    for _, c in ipairs {
      { { "s.lua" }, {}, { "s.lua" } },
      { { "--now", "5", "s.lua", "--now", "x", "--bogus", "--help" }, { now = "5" }, { "s.lua", "--now", "x", "--bogus", "--help" } },
      { { "--verbose", "--", "--s.lua", "a" }, { verbose = true }, { "--s.lua", "a" } },
    } do
      local opts, arguments = options.parse(SCRIPT, c[1])
      assert.same(c[2], opts)
      assert.same(c[3], arguments)
    end
    assert.equal("expected script.lua [args...]", select(2, options.parse(SCRIPT, { "--verbose" })))
  end)

  it("writes the usage from the spec: usage line, summary, aligned options, help, footer", function()
    assert.equal(table.concat({
      "usage: quan demo [options] STOCK_ID USERS.csv [JOURNAL]",
      "a command for the specs",
      "options:",
      "  --state DIR         where it keeps things",
      "  --ready-file FILE   written once ready",
      "  --temporary         remove it at the end",
      "  --log-format F      the log (one of bar, json, text)",
      "  --mode M            how (one of fast, slow)",
      "  --rate N            calls per second",
      "  --listen HOST:PORT  where to listen (default 127.0.0.1:0)",
      "  -h, --help          show this help",
      "more in docs/cli.md",
    }, "\n") .. "\n", options.usage(SPEC))
    assert.matches("^usage: quan try %[options%] script.lua %[args...%]\n", options.usage(SCRIPT))
    assert.matches("^usage: x y\n", options.usage { usage = "x y" })
  end)

  describe("read", function()
    -- with_output(fn) -> stdout text, stderr text, fn's results
    local function with_output(fn)
      local saved_out, saved_err = io.stdout, io.stderr
      local out, err = {}, {}
      local function sink(t)
        return { write = function(self, ...) for _, s in ipairs { ... } do t[#t + 1] = tostring(s) end return self end,
          flush = function() end }
      end
      io.stdout, io.stderr = sink(out), sink(err)
      local results = table.pack(pcall(fn))
      io.stdout, io.stderr = saved_out, saved_err
      assert(results[1], results[2])
      return table.concat(out), table.concat(err), table.unpack(results, 2, results.n)
    end

    it("prints the usage on stdout for --help, status 0", function()
      local out, err, opts, status = with_output(function() return options.read(SPEC, { "--help" }) end)
      assert.equal(options.usage(SPEC), out)
      assert.equal("", err)
      assert.is_nil(opts)
      assert.equal(0, status)
    end)

    it("prints a usage error and the usage on stderr, a bad value alone; status 2", function()
      local out, err, opts, status = with_output(function() return options.read(SPEC, { "--bogus" }) end)
      assert.equal("", out)
      assert.equal("quan demo: unknown option '--bogus'\n" .. options.usage(SPEC), err)
      assert.is_nil(opts)
      assert.equal(2, status)
      out, err, opts, status = with_output(function() return options.read(SPEC, { "--mode", "x", "S", "u" }) end)
      assert.equal("quan demo: --mode must be one of fast, slow, got 'x'\n", err)
      assert.equal(2, status)
    end)

    it("returns the options and arguments otherwise, printing nothing", function()
      local out, err, opts, arguments = with_output(function() return options.read(SPEC, { "S", "u" }) end)
      assert.equal("", out .. err)
      assert.equal("127.0.0.1:0", opts.listen)
      assert.same({ "S", "u" }, arguments)
    end)
  end)

  it("checks positive integers and numbers", function()
    for _, c in ipairs {
      { options.positive_integer, "3", 3 }, { options.positive_integer, "3.0", 3 }, { options.positive_integer, "0x10", 16 },
      { options.positive_integer, "2.5", nil }, { options.positive_integer, "0", nil }, { options.positive_integer, "-1", nil },
      { options.positive_integer, "x", nil }, { options.positive_integer, "", nil },
      { options.positive_number, "2.5", 2.5 }, { options.positive_number, "400", 400 }, { options.positive_number, "0", nil },
      { options.positive_number, "1e999", nil }, { options.positive_number, "nan", nil }, { options.positive_number, "-3", nil },
    } do
      local v, why = c[1](c[2])
      assert.equal(c[3], v, c[2])
      if c[3] == nil then assert.matches("^wants a positive ", why) end
    end
    assert.equal("integer", math.type(options.positive_number("400")))
  end)

  it("raises on a spec that is not one", function()
    assert.has_error(function() options.parse({ options = { { "-x" } } }, {}) end, "quan.options: bad option name '-x'")
    assert.has_error(function() options.parse({ arguments = { "a...", "b" } }, {}) end,
      "quan.options: only the last argument may repeat")
    assert.has_error(function() options.parse("spec", {}) end, "quan.options: spec must be a table")
    assert.has_error(function() options.parse({}, "argv") end, "quan.options.parse: argv must be a table")
  end)

  it("adds no globals", function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    package.loaded["quan.options"], package.loaded["quan.suggest"], package.loaded["quan.cli"] = nil, nil, nil
    require "quan.options"
    require "quan.cli"
    for k in pairs(_G) do assert.truthy(before[k], k) end
  end)
end)

describe("quan.suggest", function()
  it("finds the closest known name within two edits", function()
    for _, c in ipairs {
      { "chek", { "run", "check", "sandbox" }, "check" },
      { "CHECK", { "run", "check" }, "check" },
      { "sandbx", { "run", "check", "sandbox" }, "sandbox" },
      { "--stat", { "--state", "--listen" }, "--state" },
      { "xyzzy", { "run", "check", "sandbox" }, nil },
      { "rn", { "run", "repl" }, "run" },
      { 42, { "run" }, nil },
    } do
      assert.equal(c[3], suggest.closest(c[1], c[2]), tostring(c[1]))
    end
  end)

  it("measures edit distance, capped at 3", function()
    for _, c in ipairs {
      { "", "", 0 }, { "a", "", 1 }, { "kitten", "sitten", 1 }, { "kitten", "sittin", 2 }, { "kitten", "sitting", 3 },
      { "abc", "abcdefgh", 3 }, { "flaw", "lawn", 2 },
    } do
      assert.equal(c[3], suggest.distance(c[1], c[2]), c[1] .. "/" .. c[2])
    end
  end)
end)
