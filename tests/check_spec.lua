-- `quan check` and `quan run --dry-run`: every invalid table is rejected with
-- its field path and nothing leaves the machine; the dry run prints exactly the
-- bytes the run sends.
local sh = require "tests.support.sh"
local cases = require "tests.support.cases"
local md = require "tests.support.mdexamples"

local q = sh.quan

-- check(script_text [, env]) -> stdout, stderr, exit code of `quan check`
local function check(text, env, opts)
  local dir = sh.tmpdir()
  local path = sh.write(dir .. "/script.lua", text)
  return sh.run((env or "") .. " " .. q .. " check " .. (opts or "") .. " " .. path)
end

-- requests(stdout) -> array of { head = "1. POST ...", lines = { "- finding", ... } }
local function requests(out)
  local list = {}
  for line in out:gmatch("[^\n]+") do
    if line:match("^%d+%. ") then list[#list + 1] = { head = line, lines = {} }
    elseif list[#list] then table.insert(list[#list].lines, line) end
  end
  return list
end

describe("quan check", function()
  for _, name in ipairs { "seed-stock", "spring", "lifecycle" } do
    it("passes the example " .. name .. ".lua, listing its requests", function()
      local out, err, code = sh.run(q .. " check scripts/examples/" .. name .. ".lua")
      assert.equal(0, code, out .. err)
      assert.matches("quan check: %d+ requests?, 0 invalid\n$", out)
      assert.matches("1%. POST /v3/marketing/favor/coupon%-stocks  %(创建代金券批次%): valid", out)
      assert.matches("   body: {", out, 1, true)
      assert.not_matches("sandbox", err)
    end)
  end

  it("keeps create -> start -> query chains working on placeholder answers", function()
    local out, _, code = sh.run(q .. " check scripts/examples/lifecycle.lua")
    assert.equal(0, code)
    assert.matches("2%. GET /v3/marketing/favor/stocks/CHECK%-0001%?stock_creator_mchid=1900000001", out)
    assert.matches("3%. POST /v3/marketing/favor/stocks/CHECK%-0001/start", out)
    assert.matches("周末满50减5\tCHECK%-0001\t%d+%-%d+%-%d+T[^\t]*\tunactivated", out)
  end)

  it("rejects every invalid table with its field path, all in one run, without network I/O", function()
    local text = [[
      local seed = require "tests.support.seed"
      local cases = require "tests.support.cases"
      local wx = require("wechatpay").client()
      local now = os.time()
      for _, c in ipairs(cases) do
        local b, day0 = seed.filled(now)
        c.mutate(b, now, day0)
        local res = assert(wx:chain("v3/marketing/favor/coupon-stocks"):post { json = b })
        assert(res.json.stock_id:match("^CHECK%-%d+$"))
      end
      assert(wx.v3.marketing.favor.couponStocks:post { json = (seed.filled(now)) })
    ]]
    -- QUAN_SANDBOX=1 would start a sandbox if check let it: check answers instead
    local out, err, code = check("package.path = './?.lua;' .. package.path\n" .. text, "QUAN_SANDBOX=1")
    assert.equal(1, code, err)
    local list = requests(out)
    assert.equal(#cases + 1, #list, out)
    for i, c in ipairs(cases) do
      local e = list[i]
      assert.matches("finding", e.head, 1, true)
      local found = false
      for _, line in ipairs(e.lines) do
        local path, rule = line:match("^%s*%- (%S+) %(.-%): (.*)$")
        if not path then path, rule = line:match("^%s*%- (%S+): (.*)$") end
        if path == c.path then found = found or rule:find(c.rule) ~= nil end
      end
      assert.is_true(found, c.name .. ": " .. c.path .. "\n" .. table.concat(e.lines, "\n"))
    end
    assert.matches(": valid$", list[#list].head)
    assert.matches(("quan check: %d requests, %d invalid\n$"):format(#cases + 1, #cases), out)
    assert.not_matches("sandbox", err)
  end)

  it("opens no socket at all (traced with strace when it is installed)", function()
    local _, _, has = sh.run("strace -qq -e trace=socket true")
    if has ~= 0 then return pending("strace is not usable here") end
    local dir = sh.tmpdir()
    local _, err, code = sh.run("strace -f -qq -e trace=socket,connect -o " .. dir .. "/trace " .. q
      .. " check scripts/examples/lifecycle.lua")
    assert.equal(0, code, err)
    assert.equal("", sh.read(dir .. "/trace"))
  end)

  it("checks an image upload by its meta part", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/logo.png", "\137PNG\r\n\26\n" .. string.rep("\0", 64))
    local out, err, code = check(([[
      local wx = require("wechatpay").client()
      local res = assert(wx.v3.marketing.favor.media["image-upload"]:post { file = %q })
      print(res.json.media_url)
    ]]):format(dir .. "/logo.png"))
    assert.equal(0, code, out .. err)
    assert.matches("1%. POST /v3/marketing/favor/media/image%-upload  %(图片上传%(营销专用%)%): valid", out)
    assert.matches("https://check.invalid/image.png", out, 1, true)
  end)

  it("checks query parameters too", function()
    local out, _, code = check([[
      local wx = require("wechatpay").client()
      wx.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 11, stock_creator_mchid = wx.mchid } }
      wx.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 10, stock_creator_mchid = wx.mchid } }
    ]])
    assert.equal(1, code)
    assert.matches("1%. GET /v3/marketing/favor/stocks%?[^\n]*: 1 finding\n   %- limit %(分页大小%): must be at most 10 rows, got 11", out)
    assert.matches("2%. GET /v3/marketing/favor/stocks%?[^\n]*: valid", out)
  end)

  it("lists a request to an endpoint it does not know, unchecked", function()
    local out, _, code = check([[
      local wx = require("wechatpay").client()
      wx:chain("v3/pay/transactions/out-trade-no/t1"):get { query = { mchid = wx.mchid } }
    ]])
    assert.equal(0, code)
    assert.matches("GET /v3/pay/transactions/out%-trade%-no/t1%?mchid=1900000001: not a favor endpoint", out)
  end)

  it("fails when the script fails, with the script's error", function()
    local out, err, code = check("error('boom in the script')")
    assert.equal(1, code)
    assert.matches("boom in the script", err)
    assert.matches("script failed", out)
    local _, err2, code2 = sh.run(q .. " check /nonexistent/x.lua")
    assert.equal(1, code2)
    assert.matches("x.lua", err2)
  end)

  it("keeps its verdict when the script calls os.exit", function()
    local invalid = [[
      local wx = require("wechatpay").client()
      wx.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 99, stock_creator_mchid = wx.mchid } }
      os.exit(%s)
    ]]
    local out, err, code = check(invalid:format("0"))
    assert.equal(1, code, out .. err)
    assert.matches("quan check: 1 request, 1 invalid\n$", out)
    out, err, code = check(invalid:format("3"))
    assert.equal(1, code)
    assert.matches("script called os.exit(3)", err, 1, true)
    out, err, code = check("print('fine') os.exit(true)")
    assert.equal(0, code, err)
    assert.equal("fine\nquan check: 0 requests, 0 invalid\n", out)
  end)

  it("checks as of another time with --now", function()
    local text = [[
      local favor = require "wechatpay.favor"
      local wx = require("wechatpay").client()
      local s = require("tests.support.seed").filled(1795824000)
      wx.v3.marketing.favor.couponStocks:post { json = s }
    ]]
    text = "package.path = './?.lua;' .. package.path\n" .. text
    local out, _, code = check(text, nil, "--now 1795824000")
    assert.equal(0, code, out)
    out, _, code = check(text, nil, "--now '2028-01-01 00:00'")
    assert.equal(1, code)
    assert.matches("available_begin_time %(开始时间%): must not be in the past", out)
    local _, err
    _, err, code = check(text, nil, "--now tomorrow")
    assert.equal(2, code)
    assert.matches("%-%-now expects", err)
  end)

  it("explains its usage", function()
    local _, err, code = sh.run(q .. " check")
    assert.equal(2, code)
    assert.matches("usage: quan check", err)
    _, err, code = sh.run(q .. " check --bogus x.lua")
    assert.equal(2, code)
    assert.matches("unknown option '%-%-bogus'", err)
  end)

  it("runs every example of docs/campaigns.md that talks to the API", function()
    for i, b in ipairs(md.blocks("docs/campaigns.md")) do
      if b.code:find("wechatpay.client", 1, true) then
        -- the page's dates are literal: check them as of the day it was written
        local out, err, code = check(b.code, nil, "--now '2026-11-28 10:00'")
        assert.equal(0, code, "docs/campaigns.md block " .. i .. " (line " .. b.line .. "):\n" .. out .. err)
      end
    end
  end)
end)

describe("quan run --dry-run", function()
  local dir
  setup(function()
    dir = sh.tmpdir()
    local script = table.concat({
      "set -e", "cd " .. sh.quote(dir),
      "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out m.pem 2>/dev/null",
      "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out p.pem 2>/dev/null",
      "openssl pkey -in p.pem -pubout -out p.pub",
      "printf '%s' 0123456789abcdef0123456789abcdef > v3.key", "chmod 600 m.pem v3.key",
    }, "\n")
    local _, err, code = sh.run("sh -c " .. sh.quote(script))
    assert.equal(0, code, err)
    sh.write(dir .. "/config.lua", ([[
return { default = "t", profiles = { t = { mchid = "1900000001", serial = "ABCDEF01",
  private_key = "file://%s/m.pem", apiv3_key = "file://%s/v3.key",
  certs = { PUB_KEY_ID_0114 = "file://%s/p.pub" }, base_url = "https://127.0.0.1:9" } } }
]]):format(dir, dir, dir))
  end)

  it("prints the string to sign, redacted headers, the pretty body, the exact body bytes and a curl command", function()
    local out, err, code = sh.run("QUAN_CONFIG=" .. dir .. "/config.lua " .. q
      .. " run --dry-run scripts/examples/lifecycle.lua")
    assert.equal(0, code, err)
    assert.matches("%-%-%- dry run: POST https://127.0.0.1:9/v3/marketing/favor/coupon%-stocks", out)
    assert.matches("string to sign", out, 1, true)
    assert.matches('signature="[redacted]"', out, 1, true)
    -- the signature itself is only in the curl command (which needs it)
    for block in (out .. "--- dry run:"):gmatch("(.-)%-%-%- dry run:") do
      local before, command = block:match("^(.-)\nas curl:\n(.*)$")
      if before then
        assert.not_matches('signature="[A-Za-z0-9+/=]+"', before)
        assert.matches("\ncurl %-sS %-i %-X %u+ '?https://127%.0%.0%.1:9/v3/", command)
        assert.matches('signature="[A-Za-z0-9+/=]+"', command)
      end
    end
    assert.matches('body %(pretty%):\n  {\n    "', out)
    -- the last line of the string to sign is the body, byte for byte
    for block in out:gmatch("%-%-%- dry run: POST.-\nbody: [^\n]*") do
      local signed = block:match("string to sign[^\n]*\n(.-)\nheaders:")
      local lines = {}
      for l in signed:gmatch("  | ([^\n]*)") do lines[#lines + 1] = l end
      assert.equal(block:match("\nbody: ([^\n]*)$"), lines[5])
    end
    assert.matches("GET https://127.0.0.1:9/v3/marketing/favor/stocks/CHECK%-%d+%?stock_creator_mchid=1900000001", out)
  end)

  it("follows a flow file's link on the same API, returning the failure instead of raising", function()
    -- the placeholder link was on https://check.invalid, which wx:download refuses with a raise
    sh.write(dir .. "/flow.lua", 'local wx = require("wechatpay").client()\n'
      .. 'local f, err = wx:flow("use-flow", "9856000")\nprint(f, err and err.code)\n')
    local out, err, code = sh.run("QUAN_CONFIG=" .. dir .. "/config.lua " .. q .. " run --dry-run " .. sh.quote(dir .. "/flow.lua"))
    assert.equal(0, code, err)
    assert.matches("%-%-%- dry run: GET https://127%.0%.0%.1:9/v3/billdownload/file%?token=CHECK", out)
    assert.matches("\nnil\thash_mismatch\n$", out)
  end)

  it("prints the same body bytes in every run, as a later real run sends them", function()
    local function bodies()
      local out, err, code = sh.run("QUAN_CONFIG=" .. dir .. "/config.lua " .. q
        .. " run --dry-run scripts/examples/spring.lua")
      assert.equal(0, code, err)
      local list = {}
      for b in out:gmatch("\nbody: ([^\n]*)") do list[#list + 1] = b end
      assert.equal(3, #list)
      return list
    end
    -- each process seeds its string hashes anew; the bytes must not depend on it
    local first = bodies()
    for _ = 1, 2 do assert.same(first, bodies()) end
  end)
end)

local wxfake = require "tests.support.wxfake"

describe("the dry run against a real send", function()
  it("prints exactly the bytes the run sends", function()
    local wechatpay = require "wechatpay"
    local dryrun = require "quan.dryrun"
    local seed = require "tests.support.seed"
    local fake = wxfake.start()
    local ok, err = pcall(function()
      local wx = wechatpay.new(fake.options())
      local body = seed.filled()
      local function send()
        return wx:chain("v3/quan/echo"):post { json = body }
      end
      local path = sh.tmpdir() .. "/dry.txt"
      local f = assert(io.open(path, "w"))
      dryrun.output = f
      wechatpay.hooks.before_send = dryrun.before_send
      assert(send())
      wechatpay.hooks.before_send = nil
      dryrun.output = io.stdout
      f:close()
      local printed = sh.read(path):match("\nbody: ([^\n]*)\n")
      local res = assert(send())
      assert.equal(res.json.body, printed)
      assert.matches('"stock_name":"微信支付代金券批次"', printed, 1, true)
    end)
    wechatpay.hooks.before_send = nil
    fake.stop()
    assert(ok, err)
  end)
end)

describe("the dry-run printer and check's answers", function()
  local dryrun = require "quan.dryrun"
  local checkmod = require "quan.check"
  local cjson = require "cjson"

  it("pretty-prints JSON keeping its bytes, order and strings", function()
    local text = '{"b":1,"a":[1,2],"s":"x,{y}:\\"z\\"","o":{},"e":[],"n":[{"k":null}]}'
    local p = dryrun.pretty(text)
    assert.equal('{\n  "b": 1,\n  "a": [1, 2],\n  "s": "x,{y}:\\"z\\"",\n  "o": {},\n  "e": [],\n'
      .. '  "n": [\n    {\n      "k": null\n    }\n  ]\n}', p)
    assert.equal(text, (p:gsub('\n%s*', ''):gsub('": ', '":'):gsub(', ', ',')))
    assert.has_error(function() dryrun.pretty(nil) end, "dryrun.pretty: expected a string")
  end)

  it("redacts the signature and nothing else", function()
    local line = 'Authorization: WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",signature="abc+/=",timestamp="1"'
    assert.equal('Authorization: WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",signature="[redacted]",timestamp="1"',
      dryrun.redact(line))
  end)

  it("prints a prepared request and answers without sending", function()
    local path = require("tests.support.sh").tmpdir() .. "/out.txt"
    local f = assert(io.open(path, "w"))
    dryrun.output = f
    local res = dryrun.before_send {
      method = "POST", url = "https://x/v3/marketing/favor/stocks/S1/start", path = "/v3/marketing/favor/stocks/S1/start",
      headers = { "Content-Type: application/json", 'Authorization: X signature="sig"' },
      body = '{"stock_creator_mchid":"1900000001"}',
      string_to_sign = 'POST\n/v3/marketing/favor/stocks/S1/start\n1\nN\n{"stock_creator_mchid":"1900000001"}\n',
      json = { stock_creator_mchid = "1900000001" },
    }
    dryrun.output = io.stdout
    f:close()
    local out = require("tests.support.sh").read(path)
    assert.matches('  | {"stock_creator_mchid":"1900000001"}\n', out, 1, true)
    assert.matches('signature="[redacted]"', out, 1, true)
    assert.matches('\nbody: {"stock_creator_mchid":"1900000001"}\n', out, 1, true)
    assert.equal(200, res.status)
    local j = cjson.decode(res.body)
    assert.equal("S1", j.stock_id)
    assert.matches("^%d+%-%d+%-%d+T%d+:%d+:%d+%+08:00$", j.start_time)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() checkmod.run(nil) end, "check.run: path must be a string")
    assert.has_error(function() checkmod.response(nil) end, "check.response: expected the prepared request table")
    assert.has_error(function() dryrun.before_send("x") end, "dryrun.before_send: expected the prepared request table")
    assert.has_error(function() dryrun.install({}) end, "dryrun.install: expected the wechatpay module")
  end)

  it("answers from the response schema, echoing the request's values", function()
    local r = cjson.decode(checkmod.response { method = "POST", path = "/v3/marketing/favor/coupon-stocks", json = {} }.body)
    assert.matches("^CHECK%-%d%d%d%d$", r.stock_id)
    r = cjson.decode(checkmod.response { method = "GET",
      path = "/v3/marketing/favor/stocks?offset=0&limit=10&stock_creator_mchid=1" }.body)
    assert.equal(0, r.total_count); assert.equal(10, r.limit); assert.same({}, r.data)
    r = cjson.decode(checkmod.response { method = "POST", path = "/v3/marketing/favor/callbacks",
      json = { mchid = "1", notify_url = "https://n.example/x" } }.body)
    assert.equal("https://n.example/x", r.notify_url)
    assert.equal("{}", checkmod.response { method = "GET", path = "/v3/other" }.body)
  end)
end)


describe("the examples against the sandbox", function()
  local sb
  setup(function() sb = assert(require("quan.sandbox").start {}) end)
  teardown(function() if sb then sb:stop() end end)

  local function run(name)
    return sh.run("QUAN_CONFIG=" .. sh.quote(sb.config_path) .. " QUAN_PROFILE=" .. (sb.profile or "sandbox")
      .. " " .. q .. " run scripts/examples/" .. name .. ".lua")
  end

  it("runs each example for real", function()
    for _, name in ipairs { "seed-stock", "lifecycle" } do
      local out, err, code = run(name)
      assert.equal(0, code, name .. ": " .. out .. err)
    end
    local out, err, code = run("lifecycle")     -- a second time: nothing new, still running
    assert.equal(0, code, out .. err)
    assert.matches("周末满50减5\t%S+\t%d+%-%d+%-%d+T[^\t]*\trunning\n", out)
  end)

  it("creates nothing twice when the same campaign runs twice", function()
    local first, err, code = run("spring")
    assert.equal(0, code, first .. err)
    local second = run("spring")
    assert.equal(first, second)
    local ids = {}
    for id in first:gmatch("\t(%S+)\n") do ids[#ids + 1] = id end
    assert.equal(3, #ids)
  end)
end)
