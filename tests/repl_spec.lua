-- The REPL, driven through a pseudo-terminal (tmux): line editing, Tab
-- completion, pretty printing, help, errors, Ctrl-C, history.
local sh = require "tests.support.sh"
local tmux = require "tests.support.tmux"

local q = sh.quan
local PROMPT = "quan[sandbox]> "

-- repl([env[, home]]) -> a session at its first prompt, HOME home or a fresh
-- directory
local function repl(env, home)
  home = home or sh.tmpdir()
  local e = { HOME = home, NO_COLOR = "1" }
  for k, v in pairs(env or {}) do e[k] = v end
  local unset = {}
  for _, k in ipairs { "XDG_STATE_HOME", "QUAN_PROFILE", "QUAN_CONFIG", "QUAN_SANDBOX" } do
    if e[k] == nil then unset[#unset + 1] = "-u " .. k end
  end
  local s = tmux.start("env " .. table.concat(unset, " ") .. " " .. q, { env = e })
  s.home = home
  s:wait_for(PROMPT)
  return s
end

describe("the REPL on a terminal", function()
  it("prints the values of an expression line, and =expr", function()
    local s = repl()
    s:line("1 + 2, 'x'")
    assert.matches('\n3%s+"x"\n', s:wait_for('"x"\n'))
    s:line("=6 * 7")
    s:wait_for("\n42")
    s:close()
  end)

  it("continues an incomplete chunk with the >> prompt (a multi-line function)", function()
    local s = repl()
    s:line("function twice(a)")
    s:wait_for(">> ")
    s:line("  return a * 2")
    s:line("end")
    s:line("twice(21)")
    local screen = s:wait_for("\n42")
    assert.matches(">>   return a %* 2\n>> end", screen)
    s:close()
  end)

  it("honours _PROMPT and _PROMPT2", function()
    local s = repl()
    s:line("_PROMPT = 'mine> '; _PROMPT2 = 'more> '")
    s:wait_for("mine> ")
    s:line("do")
    s:wait_for("more> ")
    s:line("end")
    s:wait_for("mine> ", nil, nil, 2)
    s:close()
  end)

  it("pretty-prints a table: sorted keys, nested indent, inline short arrays, cycles", function()
    local s = repl()
    s:line("t = {zeta = 1, alpha = {1, 2, 3}, name = '满100减10', nested = {b = true, a = 'x'}}")
    s:line("t.self = t")
    s:line("t")
    local screen = s:wait_for("self   = <table 1>")
    assert.truthy(screen:find([[
<1>{
  alpha  = { 1, 2, 3 },
  name   = "满100减10",
  nested = {
    a = "x",
    b = true
  },
  self   = <table 1>,
  zeta   = 1
}]], 1, true), screen)
    s:close()
  end)

  it("uses colour on a terminal unless NO_COLOR is set", function()
    local s = repl({ NO_COLOR = "" })
    s:line("'green'")
    local screen = s:wait_for("green\"", nil, true)
    assert.truthy(screen:find("\27[32m\"green\"", 1, true), screen)
    s:close()
  end)

  it("prints an error once and goes on", function()
    local s = repl()
    s:line("error('boom')")
    s:wait_for("error: stdin:1: boom")
    s:line("error({kind = 'http', status = 400, code = 'PARAM_ERROR', message = 'bad stock', request_id = 'RID-1'})")
    s:wait_for("request id: RID-1")
    s:line("nil + 1")
    s:wait_for("attempt to perform arithmetic")
    s:line("40 + 2")
    local screen = s:wait_for("\n42")
    assert.equal(1, select(2, screen:gsub("boom", "")) - 1) -- the typed line and one report
    assert.matches("error %(http 400%): PARAM_ERROR: bad stock", screen)
    assert.is_false(s:dead())
    s:close()
  end)

  it("names the typed line, or no place, for an error raised at the caller's level", function()
    local s = repl()
    s:line('favor.yuan "12.345"')
    s:wait_for("error: favor.yuan: \"12.345\" has a fraction of a fen")
    s:line('x = favor.yuan "12.345"')
    s:wait_for("error: stdin:1: favor.yuan: ")
    s:line("error('up', 2)")
    s:wait_for("error: up")
    s:line("'done'")
    local screen = s:wait_for('"done"')
    assert.not_matches("repl%.lua", screen)
    s:close()
  end)

  it("cancels the line being typed on Ctrl-C and stays", function()
    local s = repl()
    s:type("this is not lua")
    s:keys("C-c")
    s:wait_for("^C")
    s:line("1 + 1")
    local screen = s:wait_for("\n2")
    assert.falsy(screen:find("syntax error", 1, true), screen)
    s:close()
  end)

  it("interrupts a running call on Ctrl-C, any number of times", function()
    local s = repl()
    for i = 1, 2 do
      s:line("while true do end")
      s:wait_for("while true do end", nil, nil, i)
      os.execute("sleep 0.3")
      s:keys("C-c")
      s:wait_for("interrupted!", nil, nil, i)
    end
    s:line("'still here'")
    s:wait_for('"still here"')
    s:close()
  end)

  it("leaves on Ctrl-D", function()
    local s = repl()
    s:keys("C-d")
    assert.is_true(s:wait_dead())
    s:close()
  end)

  it("keeps history across sessions in the state dir", function()
    local s = repl()
    s:line("history_marker = 4242")
    s:line("history_marker + 1")
    s:wait_for("4243")
    s:line("function hf()")
    s:line("  return 7 end")
    s:wait_for(PROMPT, nil, nil, 4)
    s:keys("C-d")
    assert.is_true(s:wait_dead())
    s:close()
    local file = s.home .. "/.local/state/quan/history"
    -- libedit's format: a header line, then one entry a line, vis(3)-encoded
    local text = sh.read(file):gsub("\\040", " ")
    assert.truthy(text:find("history_marker = 4242", 1, true), text)
    local s2 = repl(nil, s.home)
    s2:keys("Up")
    s2:wait_for(PROMPT .. "function hf() return 7 end") -- a multi-line chunk, as one line
    s2:keys("Up", "Up")
    s2:wait_for(PROMPT .. "history_marker = 4242")
    s2:keys("Enter")
    s2:line("history_marker")
    s2:wait_for("\n4242")
    s2:close()
  end)

  it("honours XDG_STATE_HOME for the history file", function()
    local home = sh.tmpdir()
    local s = repl({ XDG_STATE_HOME = home .. "/st" }, home)
    s:line("'xdg'")
    s:wait_for('"xdg"')
    s:keys("C-d")
    assert.is_true(s:wait_dead())
    s:close()
    assert.truthy(sh.read(home .. "/st/quan/history"):find("'xdg'", 1, true))
  end)

  it("completes globals and table fields on Tab", function()
    local s = repl()
    s:type("string.for")
    s:keys("Tab")
    s:wait_for(PROMPT .. "string.format")
    s:keys("C-u")
    s:line("mytab = setmetatable({}, {__index = {inherited_field = 1}})")
    s:wait_for(PROMPT, nil, nil, 2)
    s:type("mytab.inh")
    s:keys("Tab")
    s:wait_for(PROMPT .. "mytab.inherited_field")
    s:close()
  end)

  describe("with the endpoint schemas", function()

    it("completes an API path segment of wx", function()
      local s = repl()
      s:type("wx.v3.marketing.favor.cou")
      s:keys("Tab")
      s:wait_for(PROMPT .. "wx.v3.marketing.favor.couponStocks")
      s:type(":po")
      s:keys("Tab")
      s:wait_for("couponStocks:post") -- the common prefix of post, postAsync
      s:keys("Tab")
      s:wait_for("postAsync") -- a second Tab lists both
      s:close()
    end)

    it("completes the field names of a request body", function()
      local s = repl()
      s:type("wx.v3.marketing.favor.couponStocks:post{json={stock_na")
      s:keys("Tab")
      s:wait_for("{json={stock_name")
      s:type("='x', stock_use_rule={max_coupons_p")
      s:keys("Tab")
      s:wait_for("max_coupons_per_user")
      s:close()
    end)

    it("shows help for the create-stock endpoint, with units and limits", function()
      local s = repl()
      s:line("help('/v3/marketing/favor/coupon-stocks')")
      local screen = s:wait_for("POST /v3/marketing/favor/coupon-stocks")
      s:wait_for("transaction_minimum")
      screen = s:screen()
      assert.matches("\n  stock_name%s+string%s+required%s+批次名称%s+≤ 9 Chinese characters or 20 letters", screen)
      assert.matches("\n    max_coupons%s+integer%s+required%s+发放总上限%s+5 … 10000000 coupons", screen)
      assert.matches("\n      coupon_amount%s+integer%s+required%s+面额%s+2 … 100000 分", screen)
      assert.matches("\n        begin_time%s+integer%s+required%s+当天开始时间%s+0 … 86400 seconds since 00:00", screen)
      assert.matches("批次类型%s+NORMAL | DISCOUNT", screen)
      s:close()
    end)

    it("shows a nested field's unit and limits: help(node, \"a.b\") and help \"name\"", function()
      local s = repl()
      s:line("help(wx.v3.marketing.favor.couponStocks, 'stock_use_rule.max_amount')")
      local screen = s:wait_for("rules ")
      assert.matches("max_amount  总预算\n", screen)
      assert.matches("where%s+POST /v3/marketing/favor/coupon%-stocks %(创建代金券批次%): json stock_use_rule%.max_amount, required", screen)
      assert.matches("unit%s+分 %(fen: 100 分 = 1 元%)", screen)
      assert.matches("limits%s+1 … 10000000000 分 %(0%.01 元 … 100000000 元%)", screen)
      assert.matches("rules%s+max_amount = max_coupons × coupon_amount", screen)
      s:line("help 'begin_time'")
      screen = s:wait_for("begin_time < end_time")
      assert.matches("limits%s+0 … 86400 seconds since 00:00", screen)
      s:line("help 'stock_type'")
      screen = s:wait_for("DISCOUNT_CUT")
      assert.matches("values%s+NORMAL%s+固定面额满减券批次", screen)
      s:line("help 'coupon_amout'")
      s:wait_for('help: nothing known about "coupon_amout" (did you mean coupon_amount?)')
      s:close()
    end)

    it("lists the client's methods after wx: on Tab", function()
      local s = repl()
      s:type("wx:")
      s:keys("Tab", "Tab")
      local screen = s:wait_for("notification")
      for _, m in ipairs { "certificates", "chain", "curl", "decrypt", "download", "request" } do
        assert.matches(m, screen, 1, true)
      end
      assert.not_matches("__index", screen)
      s:close()
    end)

    it("offers a GET only the options it takes: no json, body or file", function()
      local s = repl()
      s:type("wx.v3.marketing.favor.stocks:get{")
      s:keys("Tab", "Tab")
      local screen = s:wait_for("validate")
      local listing = screen:match("stocks:get{\n(.-)\n") or screen
      assert.matches("headers%s+query%s+retry%s+timeout%s+validate", listing)
      assert.not_matches("json", listing)
      assert.not_matches("body", listing)
      assert.not_matches("file", listing)
      s:keys("C-u")
      s:type("wx.v3.marketing.favor.couponStocks:post{j")
      s:keys("Tab")
      s:wait_for(PROMPT .. "wx.v3.marketing.favor.couponStocks:post{json")
      s:close()
    end)

    it("hides a module's internals from help and completion", function()
      local s = repl()
      s:line("help(favor)")
      local screen = s:wait_for("yuan ")
      assert.not_matches("_sha256", screen)
      assert.not_matches("tail call", screen)
      assert.matches("seconds%s+seconds%(t%) %-> seconds since 00:00", screen)
      s:type("favor.")
      s:keys("Tab", "Tab")
      screen = s:wait_for("weekdays")
      assert.not_matches("_sha256", screen)
      s:close()
    end)
  end)

  describe("with the client and the sandbox", function()
    local qos = require "quan.os"
    local sandboxes = {}

    -- sandbox([faults][, name]) -> config path of a sandbox run by this
    -- process (not by the REPL, so the terminal's Ctrl-C does not reach
    -- it); one per faults and name
    local function sandbox(faults, name)
      local key = (faults or "none") .. "/" .. (name or "")
      if sandboxes[key] then return sandboxes[key].config end
      local dir = sh.tmpdir()
      local argv = { q, "sandbox", "--state", dir .. "/sb", "--listen", "127.0.0.1:0",
                     "--ready-file", dir .. "/ready" }
      if faults then argv[#argv + 1] = "--faults"; argv[#argv + 1] = faults end
      local pid = assert(qos.spawn(argv, { stdout = "/dev/null", stderr = dir .. "/log" }))
      local deadline = qos.now() + 60
      while not io.open(dir .. "/ready") do
        assert(qos.now() < deadline, "sandbox did not start")
        assert(not qos.wait(pid, true), "sandbox exited")
        qos.sleep(0.05)
      end
      sandboxes[key] = { pid = pid, config = dir .. "/sb/config.lua" }
      return sandboxes[key].config
    end

    teardown(function()
      for _, sb in pairs(sandboxes) do qos.kill(sb.pid, "TERM") qos.wait(sb.pid) end
    end)

    local LIST = "wx.v3.marketing.favor.stocks:get{query={offset=0,limit=5,stock_creator_mchid=wx.mchid}}"

    it("prints a sandbox response: status, request id, JSON body", function()
      local s = repl({ QUAN_CONFIG = sandbox() })
      s:line(LIST)
      local screen = s:wait_for("total_count", 30)
      assert.matches("\nHTTP 200  request id %S+\n{\n  data%s+= {},\n  limit%s+= 5,", screen)
      s:close()
    end)

    it("prints an API error once with its code and request id, and goes on", function()
      local s = repl({ QUAN_CONFIG = sandbox() })
      s:line("wx.v3.marketing.favor.stocks._stock_id_:get{stock_id='404404', query={stock_creator_mchid=wx.mchid}}")
      local screen = s:wait_for("request id: ", 30)
      assert.matches("error %(http 404%): [A-Z_]+", screen)
      s:line("'after'")
      s:wait_for('"after"')
      s:close()
    end)

    it("names no REPL file for a missing path variable", function()
      local s = repl({ QUAN_CONFIG = sandbox() })
      s:line("wx.v3.marketing.favor.stocks._stock_id_:get{}")
      local screen = s:wait_for("missing path variable 'stock_id'", 30)
      assert.matches("\nerror: GET /v3/marketing/favor/stocks/{stock_id}: missing path variable", screen)
      assert.not_matches("repl%.lua", screen)
      s:close()
    end)

    it("prints validation findings once", function()
      local s = repl({ QUAN_CONFIG = sandbox() })
      s:line("wx.v3.marketing.favor.couponStocks:post{json={stock_name='x'}}")
      s:wait_for("out_request_no (商户单据号): required", 30)
      s:line("'after'")
      local screen = s:wait_for('"after"')
      assert.matches("\nerror %(validation%): POST /v3/marketing/favor/coupon%-stocks: invalid request:\n", screen)
      local _, n = screen:gsub("商户单据号", "")
      assert.equal(1, n)
      assert.not_matches("detail:", screen)
      s:close()
    end)

    it("prints a promise as its resolved value, and await(p)", function()
      local s = repl({ QUAN_CONFIG = sandbox() })
      s:line(LIST:gsub(":get{", ":getAsync{"))
      s:wait_for("HTTP 200", 30)
      s:line("p = " .. LIST:gsub(":get{", ":getAsync{"))
      s:line("await(p).json.limit")
      s:wait_for("\n5\n")
      s:close()
    end)

    it("says did you mean for a misspelt segment, query parameter and option", function()
      local s = repl({ QUAN_CONFIG = sandbox() })
      s:line("wx.v3.marketing.favor.stokcs")
      s:wait_for("segment 'stokcs' here (did you mean stocks?)", 30)
      s:line("wx.v3.marketing.favor.stocks:get{query={offset=0, limit=1, stock_creater_mchid=wx.mchid}}")
      s:wait_for("stock_creater_mchid: unknown field (did you mean stock_creator_mchid?)", 30)
      s:line("wx.mchId")
      s:wait_for("a client has no field 'mchId' (did you mean mchid?)")
      s:close()
    end)

    it("prints a pager as its count and first rows, and curl() copies the last request", function()
      local dir = sh.tmpdir()
      local make = sh.write(dir .. "/make.lua", [[
        local function at(t) return os.date("!%Y-%m-%dT%H:%M:%S+08:00", t + 8 * 3600) end
        local t = os.time() + 600
        for i = 1, 12 do
          assert(wx.v3.marketing.favor.couponStocks:post { json = {
            stock_name = "满100减" .. i, belong_merchant = wx.mchid, stock_type = "NORMAL", no_cash = false,
            available_begin_time = at(t), available_end_time = at(t + 86400),
            stock_use_rule = { max_coupons = 5, max_amount = 500, max_coupons_per_user = 1,
                               natural_person_limit = false, prevent_api_abuse = false },
            coupon_use_rule = { fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 200 },
                                coupon_available_time = {} },
            out_request_no = "repl" .. i .. "n" .. os.time() .. math.random(1000000),
          } })
        end
        print("made")
      ]])
      local s = repl({ QUAN_CONFIG = sandbox(nil, "stocks") })
      s:line("dofile('" .. make .. "')")
      s:wait_for("\nmade\n", 60)
      s:line("wx.v3.marketing.favor.stocks:each{query={stock_creator_mchid=wx.mchid, limit=5}}")
      local screen = s:wait_for("reads all", 30)
      assert.matches("GET /v3/marketing/favor/stocks: %d+ rows in %d+ pages of 5; the first 5:\n1  stock_id = \"%d+\", ", screen)
      assert.matches("\n5  stock_id = ", screen)
      assert.not_matches("\n6  stock_id = ", screen)
      s:line("curl()")
      screen = s:wait_for("Authorization: WECHATPAY2", 30)
      assert.matches("\ncurl %-sS %-i %-X GET 'https://127%.0%.0%.1:%d+/v3/marketing/favor/stocks%?limit=5&offset=0&", screen)
      assert.matches("valid for five minutes", screen)
      s:close()
    end)

    it("shows help of wx.v3.marketing.favor.couponStocks", function()
      local s = repl({ QUAN_CONFIG = sandbox() })
      s:line("help(wx.v3.marketing.favor.couponStocks)")
      s:wait_for("POST /v3/marketing/favor/coupon-stocks", 30)
      local screen = s:wait_for("transaction_minimum")
      assert.matches("\n  stock_name%s+string%s+required%s+批次名称", screen)
      s:close()
    end)

    it("completes through a variable holding an API node", function()
      local s = repl({ QUAN_CONFIG = sandbox() })
      s:line("fav = wx.v3.marketing.favor")
      s:wait_for(PROMPT, 30, nil, 2) -- wx is made: typing ahead of the prompt is not editing
      s:type("fav.couponSt")
      s:keys("Tab")
      s:wait_for(PROMPT .. "fav.couponStocks")
      s:keys("C-u")
      s:type("wx:req")
      s:keys("Tab")
      s:wait_for(PROMPT .. "wx:request")
      s:close()
    end)

    it("cancels a slow sandbox request on Ctrl-C and stays usable", function()
      local s = repl({ QUAN_CONFIG = sandbox("latency=3s"), QUAN_DEBUG = "1" })
      s:line(LIST)
      s:wait_for("quan: > GET https://", 30) -- the request is on its way
      s:keys("C-c")
      s:wait_for("interrupted!")
      s:line(LIST)
      s:wait_for("HTTP 200", 30)
      s:close()
    end)

    it("cancels an awaited ...Async request on Ctrl-C: its task stops too", function()
      local s = repl({ QUAN_CONFIG = sandbox("latency=3s"), QUAN_DEBUG = "1" })
      s:line("p = " .. LIST:gsub(":get{", ":getAsync{"))
      s:wait_for("quan: > GET https://", 30) -- the request is on its way
      s:line("print('wait' .. 'ing') await(p)")
      s:wait_for("waiting") -- printed by the line itself: the wait has begun
      s:keys("C-c")
      s:wait_for("interrupted!")
      s:line("p:status() .. ' ' .. select(2, pcall(p.wait, p))")
      s:wait_for('"rejected interrupted"')
      -- a chain typed at the prompt is cancelled back to its ...Async call
      s:line("q = " .. LIST:gsub(":get{", ":getAsync{") .. ":next(function(r) return r end)")
      s:wait_for("quan: > GET https://", 30, nil, 2)
      s:line("print('chain' .. 'ed') await(q)")
      s:wait_for("chained")
      s:keys("C-c")
      s:wait_for("interrupted!", nil, nil, 2)
      s:line("q:status() .. ' ' .. q.source:status()")
      s:wait_for('"rejected rejected"')
      s:close()
    end)

    it("keeps its private sandbox through a Ctrl-C at the terminal", function()
      local s = repl() -- no profile configured: wx starts a private sandbox
      s:line(LIST)
      s:wait_for("HTTP 200", 60)
      s:type("'cancelled line'")
      s:keys("C-c") -- SIGINT to the terminal's foreground process group
      s:wait_for("^C")
      s:line(LIST)
      s:line("'after'")
      local screen = s:wait_for('"after"', 30)
      local _, answers = screen:gsub("HTTP 200", "")
      assert.equal(2, answers)
      assert.not_matches("connect", screen)
      s:close()
    end)
  end)
end)

describe("the REPL off a terminal", function()
  it("names the active profile in the prompt without building a client", function()
    local home = sh.tmpdir()
    os.execute("mkdir -p " .. home .. "/.config/quan")
    sh.write(home .. "/.config/quan/config.lua",
      'return { default = "staging", profiles = { staging = {}, prod = {} } }')
    local base = "env -u QUAN_CONFIG -u QUAN_SANDBOX -u QUAN_PROFILE HOME=" .. home
    local out, err = sh.run("cd /tmp && echo 'type(rawget(_G, \"wx\"))' | " .. base .. " " .. q .. " -i")
    assert.matches("quan%[staging%]> \"nil\"", out)
    assert.equal("", err)
    out = sh.run("cd /tmp && echo | " .. base .. " QUAN_PROFILE=prod " .. q .. " -i")
    assert.matches("quan%[prod%]> ", out)
    out = sh.run("cd /tmp && echo | " .. base .. " QUAN_SANDBOX=1 " .. q .. " -i")
    assert.matches("quan%[sandbox%]> ", out)
    out = sh.run("cd /tmp && echo | env -u QUAN_CONFIG -u QUAN_SANDBOX -u QUAN_PROFILE HOME=" .. sh.tmpdir() .. " " .. q .. " -i")
    assert.matches("quan%[sandbox%]> ", out)
  end)

  it("runs as `quan repl` too", function()
    local out, _, code = sh.run("printf '=1+1\\n' | " .. q .. " repl")
    assert.matches("> 2\n", out)
    assert.equal(0, code)
  end)

  it("refuses an argument or option after `quan repl` with exit 2; options go before the word", function()
    for _, c in ipairs {
      { "foo", "unexpected argument 'foo'" },
      { "--bogus", "unknown option '%-%-bogus'" },
      { "--profile", "unknown option '%-%-profile'" },
    } do
      local out, err, code = sh.run("printf '=1+1\\n' | " .. q .. " repl " .. c[1])
      assert.equal(2, code, c[1])
      assert.equal("", out, c[1])
      assert.matches("^quan repl: " .. c[2] .. "\nusage: quan %[%-%-profile NAME%] .* repl\n", err)
    end
  end)

  it("reads piped lines with io.read", function()
    local out = sh.run("printf '1+1\\nfunction f()\\nreturn 3 end\\nf()\\n' | " .. q .. " -i 2>&1")
    assert.matches("\n?[^\n]*2\n", out)
    assert.matches("3\n", out)
  end)
end)

describe("docs/repl.md", function()
  local md = require "tests.support.mdexamples"
  for i, b in ipairs(md.blocks("docs/repl.md")) do
    it("runs lua example " .. i .. " (line " .. b.line .. ")", function()
      md.run("docs/repl.md", i)
    end)
  end
end)

describe("quan.edit arguments", function()
  local edit = require "quan.edit"
  it("raises on bad arguments", function()
    assert.has_error(function() edit.set_completer(42) end)
    assert.has_error(function() edit.add_history({}) end)
    assert.has_error(function() edit.xpcall(print, 1) end)
  end)
  it("xpcall returns like xpcall", function()
    assert.same({ true, 1, 2 }, { edit.xpcall(function(a) return a, 2 end, debug.traceback, 1) })
    local ok, e = edit.xpcall(function() error({ code = 1 }) end, function(x) return x end)
    assert.is_false(ok)
    assert.same({ code = 1 }, e)
  end)
  it("reports a missing history file as nil, message, code", function()
    local ok, msg, code = edit.load_history("/nonexistent/quan/history")
    assert.is_nil(ok)
    assert.matches("load history /nonexistent/quan/history", msg)
    assert.equal("noent", code)
  end)
end)

describe("quan.repl and quan.pretty", function()
  local pretty = require "quan.pretty"
  it("await: an interrupted wait cancels what it waited for, through :next and async.all", function()
    local async, qos, repl = require "quan.async", require "quan.os", require "quan.repl"
    local function sleeper() return async.spawn(function() async.sleep(30) end) end
    local a, b, c = sleeper(), sleeper(), sleeper()
    local chained = c:next(function() return 1 end)
    local p = async.all { a, chained, b }
    -- what Ctrl-C does: an error raised where the loop would sleep
    local sleep = qos.sleep
    debug.sethook(function()
      if debug.getinfo(2, "f").func == sleep then
        debug.sethook()
        error(qos.interrupt, 0)
      end
    end, "c")
    local ok, err = pcall(repl.await, p)
    debug.sethook()
    assert.is_false(ok)
    assert.is_true(qos.is_interrupt(err))
    for _, t in ipairs { p, a, b, c, chained } do assert.equal("rejected", t:status()) end
    async.run() -- nothing left behind: no live task, no unobserved rejection
  end)
  it("formats mixed tables: the sequence first, then sorted keys", function()
    assert.equal("{\n  1,\n  2,\n  [10] = 5,\n  x    = 3.0\n}", pretty.format({ 1, 2, x = 3.0, [10] = 5 }))
  end)
  it("maps completion names to path segments by the client's own rules", function()
    local complete, chain = require "quan.repl.complete", require "wechatpay.chain"
    for _, c in ipairs {
      { "couponStocks", "coupon-stocks" }, { "_stock_id_", "{stock_id}" }, { "V3", "v3" },
      { "{openid}", "{openid}" }, { "useFlowCsv", "use-flow-csv" },
    } do
      assert.equal(c[2], complete.normalize(c[1]))
      assert.equal(chain.normalize(c[1]), complete.normalize(c[1]))
    end
  end)
  it("measures display width: wide CJK 2, combining 0, colour codes 0", function()
    for _, case in ipairs {
      { "abc", 3 }, { "满减", 4 }, { "ｆｕｌｌ", 8 }, { "e\u{301}", 1 }, { "\27[32mab\27[0m", 2 }, { "한글", 4 },
      { "满\255减", 5 }, { "\255\254", 2 }, { "", 0 },
    } do
      assert.equal(case[2], pretty.width(case[1]), case[1])
    end
  end)
  it("marks a table met twice without a cycle too", function()
    local shared = { 1 }
    assert.equal("{\n  a = <1>{ 1 },\n  b = <table 1>\n}", pretty.format({ a = shared, b = shared }))
  end)
  it("prints json.null as null and limits depth", function()
    local cjson = require "cjson"
    assert.equal("{ null }", pretty.format({ cjson.null }))
    assert.equal("{\n  a = {...}\n}", pretty.format({ a = { b = 1 } }, { depth = 1 }))
  end)

  it("add no globals when required", function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    require "quan.repl"; require "quan.pretty"; require "quan.repl.complete"; require "quan.repl.help"
    for k in pairs(_G) do assert.is_true(before[k], "new global " .. tostring(k)) end
  end)
end)
