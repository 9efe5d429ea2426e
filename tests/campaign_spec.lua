-- Campaigns as declarations: quan plan, quan apply and quan check of a
-- campaign file, the state beside it, kills at every step, faults, the
-- client's retry option and quan sandbox clock.
local sh = require "tests.support.sh"
local sbx = require "tests.support.sandbox"
local cjson = require "cjson"
local qos = require "quan.os"

local q = sh.quote(sh.quan)
local P = "/v3/marketing/favor"

-- a campaign of three tiers; o.tag prefixes the stock names (one sandbox
-- serves many campaigns), o.states the declared state of each tier,
-- o.face and o.count the first tier's face value in 元 and its count
local TEMPLATE = [[
local favor = require "wechatpay.favor"
local c = require("quan.campaign").new "$NAME"
local base = favor.stock {
  stock_type = "NORMAL", no_cash = false,
  available_begin_time = "$BEGIN", available_end_time = "$END",
  stock_use_rule = { max_coupons_per_user = 1, natural_person_limit = false, prevent_api_abuse = false },
  coupon_use_rule = { coupon_available_time = favor.weekdays { 1, 2, 3, 4, 5, from = "10:00", to = "22:00" } },
}
for _, t in ipairs {
  { "tier10", "$S1", $FACE, 100, $COUNT },
  { "tier30", "$S2", 30, 300, 20 },
  { "tier80", "$S3", 80, 800, 5 },
} do
  local key, state, off, min, count = table.unpack(t)
  c:stock(key, base:with {
    stock_name = ("$TAG满%d减%d"):format(min, off),
    stock_use_rule = { max_coupons = count },
    coupon_use_rule = { fixed_normal_coupon = { coupon_amount = favor.yuan(off), transaction_minimum = favor.yuan(min) } },
  }, { state = state })
end
return c
]]

local function campaign(dir, name, o)
  o = o or {}
  local states = o.states or { "running", "running", "running" }
  local text = TEMPLATE:gsub("%$(%u+%d?)", {
    NAME = name, TAG = o.tag or name, BEGIN = o.begin, END = o["end"], FACE = tostring(o.face or 10),
    COUNT = tostring(o.count or 50),
    S1 = states[1], S2 = states[2], S3 = states[3],
  })
  return sh.write(dir .. "/" .. name .. ".lua", text)
end

-- window(h) -> begin, end: the day after tomorrow on the sandbox's clock, for 5 days
local function window(h)
  local day = (sbx.now(h) + 8 * 3600) // 86400 + 2
  local b = day * 86400 - 8 * 3600
  return sbx.iso(b), sbx.iso(b + 5 * 86400 - 1)
end

-- quan(h, dir, args) -> stdout, stderr, exit code of `quan args` in dir with h's profile
local function quan(h, dir, args)
  return sh.run("cd " .. sh.quote(dir) .. " && QUAN_CONFIG=" .. sh.quote(h.config_path) .. " " .. q .. " " .. args)
end

-- requests(h) -> {GET = n, POST = n}: the API requests the sandbox served
local function requests(h)
  local res = assert(sbx.control(h, "/sandbox/requests"))
  assert.equal(200, res.status, res.body)
  return { GET = res.json.by_method.GET or 0, POST = res.json.by_method.POST or 0 }
end

-- stocks(h, tag) -> the merchant's stocks whose name begins with tag
local function stocks(h, tag)
  local out, page = {}, 0
  while true do
    local res, err
    for _ = 1, 30 do -- the sandbox may be injecting faults
      res, err = sbx.request(h, "GET", P .. "/stocks?limit=10&offset=" .. page .. "&stock_creator_mchid=" .. h.mchid)
      if res and res.status == 200 then break end
    end
    assert.truthy(res, err)
    assert.equal(200, res.status, res.body)
    for _, s in ipairs(res.json.data) do
      if s.stock_name:sub(1, #tag) == tag then out[#out + 1] = s end
    end
    if #res.json.data < 10 then break end
    page = page + 1
  end
  return out
end

local function statuses(list)
  local t = {}
  for _, s in ipairs(list) do t[#t + 1] = s.status end
  table.sort(t)
  return table.concat(t, ",")
end

describe("quan apply", function()
  local h, dir, b, e
  setup(function()
    h = sbx.start()
    dir = sh.tmpdir()
    b, e = window(h)
  end)
  teardown(function() if h then h:stop() end end)

  it("creates and starts three stocks; a second apply makes no write call; plan never writes", function()
    local file = campaign(dir, "A", { begin = b, ["end"] = e })
    local before = requests(h)
    local out, err, code = quan(h, dir, "plan A.lua")
    assert.equal(3, code, out .. err)
    assert.matches("plan: 3 to create %(¥1,500%.00%), 3 to start", out)
    assert.matches("面额 ¥10%.00 · 门槛 ¥100%.00 · 总预算 ¥500%.00 = 50 × ¥10%.00", out)
    assert.same(before.POST, requests(h).POST)
    out, err, code = quan(h, dir, "apply --yes A.lua")
    assert.equal(0, code, out .. err)
    assert.matches("apply: done: 3 created, 3 started", out)
    local list = stocks(h, "A满")
    assert.equal(3, #list)
    assert.equal("running,running,running", statuses(list))
    assert.same(before.POST + 6, requests(h).POST)
    -- again: nothing to do, no write call
    out, err, code = quan(h, dir, "apply --yes A.lua")
    assert.equal(0, code, out .. err)
    assert.matches("apply: nothing to do\n$", out)
    assert.same(before.POST + 6, requests(h).POST)
    out, err, code = quan(h, dir, "plan --json A.lua")
    assert.equal(0, code, out .. err)
    local plan = cjson.decode(out)
    assert.equal(0, plan.changes)
    assert.equal(3, #plan.stocks)
    for _, s in ipairs(plan.stocks) do
      assert.equal("running", s.status)
      assert.equal(0, #s.steps)
      assert.matches("^A%.lua:%d+$", s.where)
    end
    assert.same(before.POST + 6, requests(h).POST)
    assert.truthy(io.open(file .. ".state"))
  end)

  it("pauses a stock declared paused and restarts it declared running", function()
    campaign(dir, "P", { begin = b, ["end"] = e })
    local out, err, code = quan(h, dir, "apply --yes P.lua")
    assert.equal(0, code, out .. err)
    campaign(dir, "P", { begin = b, ["end"] = e, states = { "running", "running", "paused" } })
    out, err, code = quan(h, dir, "plan P.lua")
    assert.equal(3, code, out .. err)
    assert.matches("~ tier80  pause · stock %d+ running → paused", out)
    assert.matches("plan: 1 to pause", out)
    out, err, code = quan(h, dir, "apply --yes P.lua")
    assert.equal(0, code, out .. err)
    assert.matches("tier80: paused stock %d+: paused", out)
    assert.equal("paused,running,running", statuses(stocks(h, "P满")))
    campaign(dir, "P", { begin = b, ["end"] = e })
    out, err, code = quan(h, dir, "apply --yes P.lua")
    assert.equal(0, code, out .. err)
    assert.matches("tier80: restarted stock %d+: running", out)
    assert.equal("running,running,running", statuses(stocks(h, "P满")))
  end)

  it("with the state deleted, plans no creation, finds the stocks with reads only and records them", function()
    local file = campaign(dir, "D", { begin = b, ["end"] = e })
    local out, err, code = quan(h, dir, "apply --yes D.lua")
    assert.equal(0, code, out .. err)
    os.remove(file .. ".state")
    os.remove(file .. ".state-wal")
    os.remove(file .. ".state-shm")
    local before = requests(h)
    out, err, code = quan(h, dir, "plan --json D.lua")
    assert.equal(0, code, out .. err)
    local plan = cjson.decode(out)
    assert.equal(0, plan.changes)
    assert.equal(3, plan.records)
    for _, s in ipairs(plan.stocks) do
      assert.same({ "record" }, s.steps)
      assert.equal("found", s.origin)
      assert.equal("exact", s.match)
    end
    local after = requests(h)
    assert.equal(before.POST, after.POST)
    assert.is_true(after.GET > before.GET)
    out, err, code = quan(h, dir, "apply --yes D.lua")
    assert.equal(0, code, out .. err)
    assert.matches("apply: done: 3 recorded", out)
    assert.equal(before.POST, requests(h).POST)
    assert.equal(3, #stocks(h, "D满"))
    out, err, code = quan(h, dir, "apply --yes D.lua")
    assert.matches("apply: nothing to do\n$", out)
  end)

  it("shows an edited declaration as drift and never creates a second stock, state or not", function()
    local file = campaign(dir, "E", { begin = b, ["end"] = e })
    local out, err, code = quan(h, dir, "apply --yes E.lua")
    assert.equal(0, code, out .. err)
    campaign(dir, "E", { begin = b, ["end"] = e, face = 12 })
    local before = requests(h)
    out, err, code = quan(h, dir, "plan E.lua")
    assert.equal(0, code, out .. err)
    assert.matches("! drift: the declaration differs from the stock", out)
    assert.matches('stock_name %(批次名称%): declared "E满100减12", the stock has "E满100减10"', out)
    assert.matches("coupon_amount %(面额%): declared ¥12%.00 %(1,200 分%), the stock has ¥10%.00 %(1,000 分%)", out)
    assert.matches("plan: nothing to do · 3 as declared · 1 drifted stock", out)
    out, err, code = quan(h, dir, "apply --yes E.lua")
    assert.equal(0, code, out .. err)
    assert.equal(before.POST, requests(h).POST)
    -- the record lost too, the name kept: the plan says create and notes
    -- the stock of that name; apply, refused the key's out_request_no,
    -- records that stock
    local function forget() for _, s in ipairs { ".state", ".state-wal", ".state-shm" } do os.remove(file .. s) end end
    forget()
    campaign(dir, "E", { begin = b, ["end"] = e, count = 60 })
    out, err, code = quan(h, dir, "plan E.lua")
    assert.equal(3, code, out .. err)
    assert.matches("stock %d+ has this stock_name, other fields differ", out)
    out, err, code = quan(h, dir, "apply --yes E.lua")
    assert.equal(0, code, out .. err)
    assert.matches("tier10: out_request_no QC%-%x+ was in use: recorded stock %d+, found by reading %(name match%)", out)
    assert.equal(3, #stocks(h, "E满"))
    out, err, code = quan(h, dir, "plan E.lua")
    assert.equal(0, code, out .. err)
    assert.matches("stock_use_rule%.max_coupons %(发放总上限%): declared 60, the stock has 50", out)
    -- the name changed too: nothing to find it by; apply stops and says how
    -- to pin the stock, and creates nothing
    forget()
    campaign(dir, "E", { begin = b, ["end"] = e, face = 12 })
    out, err, code = quan(h, dir, "apply --yes E.lua")
    assert.equal(1, code, out .. err)
    assert.matches("E%.lua:%d+: stock 'tier10': create failed: .*INVALID_REQUEST.*pin it: stock_id = \"%.%.%.\"", out)
    assert.equal(3, #stocks(h, "E满"))
    local ten
    for _, s in ipairs(stocks(h, "E满100减10")) do ten = s.stock_id end
    sh.write(file, (sh.read(file):gsub("}, { state = state }%)", '}, { state = state, stock_id = key == "tier10" and "'
      .. ten .. '" or nil })', 1)))
    out, err, code = quan(h, dir, "apply --yes E.lua")
    assert.equal(0, code, out .. err)
    assert.matches("tier10: recorded stock " .. ten .. " %(stock_id declared%)", out)
    assert.equal(3, #stocks(h, "E满"))
  end)

  it("refuses a second apply while one holds the state, with exit 6", function()
    local file = campaign(dir, "L", { begin = b, ["end"] = e })
    local lock = assert(qos.lock(file .. ".state.lock"))
    local out, err, code = quan(h, dir, "apply --yes L.lua")
    lock:close()
    assert.equal(6, code, out .. err)
    assert.matches("quan apply: state .*L%.lua%.state is in use by another apply", err)
    assert.equal(0, #stocks(h, "L满"))
  end)

  it("refuses a state that belongs to another merchant, API or campaign", function()
    local file = campaign(dir, "M", { begin = b, ["end"] = e })
    local out, err, code = quan(h, dir, "apply --yes M.lua")
    assert.equal(0, code, out .. err)
    local sqlite = require "quan.sqlite"
    local db = assert(sqlite.open(file .. ".state"))
    db:run("UPDATE meta SET value = '1900000009' WHERE name = 'mchid'")
    db:close()
    for _, cmd in ipairs { "plan M.lua", "apply --yes M.lua" } do
      out, err, code = quan(h, dir, cmd)
      assert.equal(1, code, out .. err)
      assert.matches("state .*M%.lua%.state belongs to merchant 1900000009, not merchant " .. h.mchid, err)
    end
    campaign(dir, "N", { begin = b, ["end"] = e })
    out, err, code = quan(h, dir, "plan --state M.lua.state N.lua")
    assert.equal(1, code, out .. err)
    assert.matches("belongs to campaign M, not campaign N", err)
    -- another program's database, or no database at all
    local other = assert(sqlite.open(dir .. "/other.db"))
    assert(other:exec("CREATE TABLE t (x INTEGER)"))
    other:close()
    out, err, code = quan(h, dir, "plan --state other.db M.lua")
    assert.equal(1, code, out .. err)
    assert.matches("state other%.db: not a quan campaign state %(a database with other tables%)", err)
    -- a damaged one: one line, SQLite's first finding (the journal's check)
    local bytes = sh.read(file .. ".state")
    assert(#bytes > 8192, "a state of more than two pages")
    local spoilt = {}
    for i = 1, #bytes do
      local byte = bytes:byte(i)
      spoilt[i] = string.char((i > 4096 and i % 97 == 0) and (byte ~ 0x5a) or byte)
    end
    sh.write(dir .. "/damaged.state", table.concat(spoilt))
    out, err, code = quan(h, dir, "plan --state damaged.state M.lua")
    assert.equal(1, code, out .. err)
    assert.matches("^quan plan: state damaged%.state: damaged: [^\n]+\n$", err)
    sh.write(dir .. "/junk.state", ("not a database\n"):rep(100))
    out, err, code = quan(h, dir, "apply --yes --state junk.state M.lua")
    assert.equal(1, code, out .. err)
    assert.matches("state junk%.state: .*not a database", err)
    -- a folder where the state file should be; an empty file (plan leaves it empty: it reads only);
    -- a state an apply made and stopped before its first record
    assert(qos.mkdir(dir .. "/folder.state"))
    for _, cmd in ipairs { "plan --state folder.state M.lua", "apply --yes --state folder.state M.lua",
                           "report --state folder.state M.lua" } do
      out, err, code = quan(h, dir, cmd)
      assert.equal(1, code, cmd .. out .. err)
      assert.matches("state folder%.state: is a directory %(%-%-state names the state file%)", err)
    end
    sh.write(dir .. "/empty.state", "")
    out, err, code = quan(h, dir, "plan --state empty.state M.lua")
    assert.equal(0, code, out .. err)
    assert.matches("plan: 3 to record\n", out)
    assert.equal("", sh.read(dir .. "/empty.state"))
    local fresh = assert(sqlite.open(dir .. "/fresh.state"))
    assert(fresh:exec(require("quan.campaign.state").SCHEMA))
    fresh:close()
    out, err, code = quan(h, dir, "plan --state fresh.state M.lua")
    assert.equal(0, code, out .. err)
    assert.matches("plan: 3 to record\n", out)
    -- no secret in it
    local bytes = sh.read(file .. ".state")
    assert.not_matches("PRIVATE KEY", bytes)
    assert.falsy(bytes:find(sh.read(h.state .. "/apiv3.key"), 1, true))
  end)

  it("--dry-run reads what exists and prints each write request as it would go out, sending none", function()
    local file = campaign(dir, "R", { begin = b, ["end"] = e })
    local before = requests(h)
    local out, err, code = quan(h, dir, "apply --dry-run R.lua")
    assert.equal(0, code, out .. err)
    local n = 0
    for _ in out:gmatch("%-%-%- dry run: POST https://127%.0%.0%.1:%d+/v3/marketing/favor/coupon%-stocks") do n = n + 1 end
    assert.equal(3, n)
    assert.matches("%-%-%- dry run: POST https://127%.0%.0%.1:%d+/v3/marketing/favor/stocks/CHECK%-%d+/start", out)
    assert.matches('"out_request_no":"QC%-%x+"', out)
    assert.matches("nothing was sent, the state was not written", out)
    assert.equal(before.POST, requests(h).POST)
    assert.falsy(io.open(file .. ".state"))
  end)

  it("reads what exists under quan's own --dry-run too: plan, apply and report judge the real stocks", function()
    campaign(dir, "G", { begin = b, ["end"] = e })
    local out, err, code = quan(h, dir, "apply --yes G.lua")
    assert.equal(0, code, out .. err)
    local before = requests(h)
    -- the placeholders of a dry run made this plan "2 to start", drifted, exit 0 by chance
    out, err, code = quan(h, dir, "--dry-run plan G.lua")
    assert.equal(0, code, out .. err)
    assert.matches("\nplan: nothing to do · 3 as declared\n$", out)
    assert.not_matches("%-%-%- dry run: GET", out)
    out, err, code = quan(h, dir, "--dry-run apply G.lua")
    assert.equal(0, code, out .. err)
    assert.matches("apply: nothing to do", out)
    out, err, code = quan(h, dir, "--dry-run report --json G.lua")
    assert.equal(0, code, out .. err)
    assert.equal("running", cjson.decode(out).stocks[1].status)
    assert.equal(before.POST, requests(h).POST)
  end)

  it("asks for --yes when nobody can confirm", function()
    campaign(dir, "Y", { begin = b, ["end"] = e })
    local out, err, code = quan(h, dir, "apply Y.lua </dev/null")
    assert.equal(2, code, out .. err)
    assert.matches("give %-%-yes", err)
    assert.equal(0, #stocks(h, "Y满"))
  end)

  it("asks on a terminal, and does nothing unless the answer is yes", function()
    local tmux = require "tests.support.tmux"
    campaign(dir, "T", { begin = b, ["end"] = e })
    for _, answer in ipairs { "no", "yes" } do
      local t = tmux.start("sh -c " .. sh.quote("cd " .. sh.quote(dir) .. " && " .. q .. " apply T.lua"),
        { env = { QUAN_CONFIG = h.config_path, NO_COLOR = "1" } })
      t:wait_for("Type yes to go on:")
      t:type(answer)
      t:keys("Enter")
      if answer == "no" then
        t:wait_for("apply: cancelled; nothing done")
        assert.equal(0, #stocks(h, "T满"))
      else
        t:wait_for("apply: done: 3 created, 3 started")
        assert.equal(3, #stocks(h, "T满"))
      end
      t:close()
    end
  end)

  it("converges after a SIGKILL at each point of a three-stock apply", function()
    sh.write(dir .. "/killer.lua", [[
      local apply = require "quan.campaign.apply"
      local qos = require "quan.os"
      local n, phase, file = tonumber(arg[1]), arg[2], arg[3]
      apply.hooks.step = function(i, key, action, p)
        if i == n and p == phase then qos.kill(qos.getpid(), "KILL") end
      end
      os.exit(apply.main { "--yes", file })
    ]])
    -- steps 1-3 create, 4-6 start; killed before a call (recorded as
    -- started), after its answer (not yet recorded) and after recording it
    local points = 0
    for n = 1, 6 do
      for _, phase in ipairs { "before", "after", "done" } do
        local tag = ("K%d%s"):format(n, phase:sub(1, 1))
        campaign(dir, tag, { begin = b, ["end"] = e })
        local out, err, code = quan(h, dir, ("run killer.lua %d %s %s.lua"):format(n, phase, tag))
        assert.not_equal(0, code, tag .. ": not killed\n" .. out .. err)
        assert.not_matches("apply: done", out)
        out, err, code = quan(h, dir, "apply --yes " .. tag .. ".lua")
        assert.equal(0, code, tag .. ":\n" .. out .. err)
        local list = stocks(h, tag .. "满")
        assert.equal(3, #list, tag)
        assert.equal("running,running,running", statuses(list), tag)
        out, err, code = quan(h, dir, "apply --yes " .. tag .. ".lua")
        assert.matches("apply: nothing to do\n$", out, nil, tag)
        points = points + 1
      end
    end
    assert.equal(18, points)
  end)
end)

describe("quan apply under faults", function()
  local h, dir
  teardown(function() if h then h:stop() end end)

  it("converges with 5 % 500s and 2 % 429s, and with answers dropped after the write", function()
    h = sbx.start { faults = "error500=0.05,error429=0.02" }
    dir = sh.tmpdir()
    local b, e = window(h)
    for i = 1, 4 do
      local tag = "F" .. i
      campaign(dir, tag, { begin = b, ["end"] = e })
      local out, err, code = quan(h, dir, "apply --yes " .. tag .. ".lua")
      assert.equal(0, code, out .. err)
      local list = stocks(h, tag .. "满")
      assert.equal(3, #list)
      assert.equal("running,running,running", statuses(list))
    end
    -- killed from outside while its calls are on the wire (each answer
    -- takes 150 ms), at moments spread over the apply, then applied again
    assert.equal(200, sbx.control(h, "/sandbox/faults", { spec = "latency=150ms" }).status)
    for i, delay in ipairs { 0.3, 0.7, 1.1, 1.5 } do
      local tag = "W" .. i
      campaign(dir, tag, { begin = b, ["end"] = e })
      local pid = assert(qos.spawn({ "sh", "-c", "cd " .. sh.quote(dir) .. " && QUAN_CONFIG=" .. sh.quote(h.config_path)
        .. " exec " .. q .. " apply --yes " .. tag .. ".lua" }, { stdout = "/dev/null", stderr = "/dev/null" }))
      qos.sleep(delay)
      qos.kill(pid, "KILL")
      qos.wait(pid)
      local out, err, code = quan(h, dir, "apply --yes " .. tag .. ".lua")
      assert.equal(0, code, out .. err)
      local list = stocks(h, tag .. "满")
      assert.equal(3, #list, tag)
      assert.equal("running,running,running", statuses(list), tag)
    end
    -- every answer of a write lost after it was done: apply retries with
    -- the same out_request_no and settles transitions by reading
    assert.equal(200, sbx.control(h, "/sandbox/faults", { spec = "drop=0.3" }).status)
    for i = 1, 3 do
      local tag = "G" .. i
      campaign(dir, tag, { begin = b, ["end"] = e })
      local out, err, code
      for _ = 1, 4 do -- a try may run out of retries: apply again, as a person would
        out, err, code = quan(h, dir, "apply --yes " .. tag .. ".lua")
        if code == 0 then break end
      end
      assert.equal(0, code, out .. err)
      local list = stocks(h, tag .. "满")
      assert.equal(3, #list)
      assert.equal("running,running,running", statuses(list))
    end
  end)
end)

describe("quan check and quan plan of a campaign file", function()
  local dir
  setup(function() dir = sh.tmpdir() end)

  local PLAIN = [[
-- a campaign in the plain form, as a tool would write it
return {
  name = "plain",
  stocks = {
    good = { state = "running", json = {
      stock_name = "满100减10", belong_merchant = "1900000001", stock_type = "NORMAL", no_cash = false,
      available_begin_time = "2027-12-01T00:00:00+08:00", available_end_time = "2027-12-12T23:59:59+08:00",
      stock_use_rule = { max_coupons = 100, max_amount = 100000, max_coupons_per_user = 1,
        natural_person_limit = false, prevent_api_abuse = false },
      coupon_use_rule = { coupon_available_time = {}, fixed_normal_coupon = { coupon_amount = 1000, transaction_minimum = 10000 } },
    } },
    cheap = { json = {
      stock_name = "满100减12", belong_merchant = "1900000001", stock_type = "NORMAL", no_cash = false,
      available_begin_time = "2027-12-01T00:00:00+08:00", available_end_time = "2027-12-12T23:59:59+08:00",
      stock_use_rule = { max_coupons = 100, max_amount = 1200, max_coupons_per_user = 1,
        natural_person_limit = false, prevent_api_abuse = false },
      coupon_use_rule = { coupon_available_time = {}, fixed_normal_coupon = { coupon_amount = 12, transaction_minimum = 100 } },
    } },
    ["bad-one"] = { state = "running", json = {
      stock_name = "满200减20", belong_merchant = "1900000001", stock_type = "NORMAL", no_cash = false,
      available_begin_time = "2027-12-01T00:00:00+08:00", available_end_time = "2027-12-12T23:59:59+08:00",
      stock_use_rule = { max_coupons = 3, max_amount = 6000, max_coupons_per_user = 1,
        natural_person_limit = false, prevent_api_abuse = false },
      coupon_use_rule = { coupon_available_time = {}, fixed_normal_coupon = { coupon_amount = 2000, transaction_minimum = 20000 } },
    } },
  },
}
]]

  it("warns of 元 typed as 分 and names the file, line and key of an invalid stock", function()
    local file = sh.write(dir .. "/plain.lua", PLAIN)
    assert.truthy(file)
    local function check(args) return sh.run("cd " .. sh.quote(dir) .. " && " .. q .. " check " .. args) end
    local out, err, code = check("--now '2026-12-06 10:00' plain.lua")
    assert.equal(1, code, out .. err)
    assert.matches("warning: plain%.lua:12: stock 'cheap': 面额 coupon_amount is 12 分 = ¥0%.12, under ¥1: 元 typed as 分%?", out)
    assert.matches("warning: plain%.lua:12: stock 'cheap': 门槛 transaction_minimum is 100 分 = ¥1%.00, under ¥2", out)
    assert.matches("error: plain%.lua:19: stock 'bad%-one': stock_use_rule%.max_coupons %(发放总上限%): must be at least 5 coupons, got 3", out)
    assert.matches("面额 ¥0%.12 · 门槛 ¥1%.00 · 总预算 ¥12%.00 = 100 × ¥0%.12", out)
    assert.matches("campaign: 3 stocks · 203 coupons · 总预算 ¥1,072%.00", out)
    out, err, code = check("--json --now '2026-12-06 10:00' plain.lua")
    assert.equal(1, code, out .. err)
    local plan = cjson.decode(out)
    assert.is_true(plan.offline)
    local by = {}
    for _, s in ipairs(plan.stocks) do by[s.key] = s end
    assert.equal("yuan_as_fen", by.cheap.warnings[1].code)
    assert.equal("plain.lua:19", by["bad-one"].where)
    -- errors only: the summary says so, not "nothing to do"
    sh.write(dir .. "/bad.lua", (PLAIN:gsub("\n    good = .-\n    } },\n    cheap = .-\n    } },", "")))
    out, err, code = check("--now '2026-12-06 10:00' bad.lua")
    assert.equal(1, code, out .. err)
    assert.matches("\nplan: 1 stock with errors\n$", out)
    assert.is_true(by["bad-one"].blocked)
    assert.same({ "create", "start" }, by.good.steps)
    assert.equal(1, plan.problems)
  end)

  it("draws the same warning from quan plan, with the sandbox", function()
    local h = sbx.start()
    local file = sh.write(dir .. "/cheap.lua", PLAIN:gsub('"1900000001"', '"' .. h.mchid .. '"'):gsub('%["bad%-one"%].-} },\n  },', "},"))
    local out, err, code = quan(h, dir, "plan --now '2026-12-06 10:00' cheap.lua")
    h:stop()
    assert.equal(3, code, out .. err)
    assert.matches("warning: cheap%.lua:12: stock 'cheap': 面额 coupon_amount is 12 分 = ¥0%.12, under ¥1: 元 typed as 分%?", out)
    assert.matches("plan: 2 to create %(¥1,012%.00%), 2 to start · 2 warnings", out)
    assert.truthy(file)
  end)

  it("names the line of a malformed declaration", function()
    for _, c in ipairs {
      { 'local c = require("quan.campaign").new "x"\nc:stock("k", {}, { state = "run" })\nreturn c',
        "x%.lua:2: stock 'k': state must be \"running\" or \"paused\", got run" },
      { 'return { name = "x", stocks = {\n  k = { json = {}, sate = "paused" },\n} }',
        "x%.lua:2: stock 'k': unknown field 'sate' %(did you mean 'state'%?%)" },
      { 'return { name = "x", stoks = {} }', "unknown field 'stoks' in the campaign %(did you mean 'stocks'%?%)" },
      { 'return { name = "x", stocks = {\n  k = { json = {} }\n}\n', "x%.lua:%d+: .*expected" },
      { 'local c = require("quan.campaign").new "x"\nc:stock("k", {})\nc:stock("k", {})\nreturn c',
        "x%.lua:3: c:stock: stock 'k' is declared twice" },
      { 'return { name = "x", stocks = {}, sends = { s = { stock = "nope", users = "u.csv" } } }',
        "send 's': stock must name a declared stock's key" },
      -- the key at fault is named, its bytes escaped
      { 'return { name = "x", stocks = { ["tier 10"] = { json = {} }, ok = { json = {} } } }',
        "x%.lua: a stock's key must be UTF%-8 text without spaces, got 'tier 10'" },
      { 'return { name = "x", stocks = { ["t\\255\\n"] = { json = {} } } }',
        "a stock's key must be UTF%-8 text without spaces, got 't\\255\\10'" },
      -- compiled Lua (the message named no file)
      { string.dump(function() return {} end), "^quan plan: x%.lua: attempt to load a binary chunk %(mode is 't'%) "
        .. "%(a campaign file is Lua text%)\n$" },
      -- os.exit in the file would have ended plan with its code (0: "nothing to do")
      { 'local c = require("quan.campaign").new "x"\nif c then os.exit(0) end\nreturn c',
        "x%.lua:2: os%.exit%(0%) while the campaign file ran: a campaign file returns its declaration" },
    } do
      local file = sh.write(dir .. "/x.lua", c[1])
      local out, err, code = sh.run("cd " .. sh.quote(dir) .. " && " .. q .. " plan x.lua")
      assert.equal(1, code, out .. err)
      assert.matches(c[2], err)
      assert.truthy(file)
    end
  end)

  it("says each problem of a declaration on a line of its own, and nothing more", function()
    sh.write(dir .. "/y.lua", 'return { name = "y", stoks = {} }')
    local out, err, code = sh.run("cd " .. sh.quote(dir) .. " && " .. q .. " plan y.lua")
    assert.equal(1, code, out .. err)
    assert.equal("", out)
    assert.equal("quan plan: y.lua: unknown field 'stoks' in the campaign (did you mean 'stocks'?) "
      .. "(fields: name, notifications, sends, stocks)\n"
      .. "quan plan: y.lua: 'stocks' must be a table { key = { state = ..., json = {...} } }, got nil\n", err)
    out, err, code = sh.run("cd " .. sh.quote(dir) .. " && " .. q .. " check y.lua")
    assert.equal(1, code, out .. err)
    assert.matches("^quan check: y%.lua: unknown field 'stoks'.-got nil\n$", err)
  end)

  it("explains its usage, with exit 2", function()
    for _, c in ipairs {
      { "plan", "expected CAMPAIGN%.lua" }, { "plan --bogus x.lua", "unknown option '%-%-bogus'" },
      { "apply --state", "%-%-state needs a value" }, { "plan a.lua b.lua", "unexpected argument 'b%.lua'" },
      { "apply --yes=1 x.lua", "%-%-yes takes no value" }, { "plan --now soon x.lua", "%-%-now expects" },
      -- epoch seconds past the year 9999, or before 1970 (1e20 was a traceback of os.date)
      { "plan --now 1e20 x.lua", "%-%-now expects .* got '1e20'" }, { "report --now -5 x.lua", "%-%-now expects" },
      { "check --now 1e300 x.lua", "%-%-now expects" },
      -- a campaign file that is not there, or a folder: the command line's mistake, said first
      { "plan missing.lua", "^quan plan: campaign file missing%.lua cannot be read %(No such file or directory%)\n$" },
      { "apply missing.lua </dev/null", "^quan apply: campaign file missing%.lua cannot be read" },
      { "plan /", "^quan plan: campaign file / cannot be read %(is a directory%)\n$" },
      { "report missing.lua", "^quan report: campaign file missing%.lua cannot be read %(no such file%)\n$" },
    } do
      local out, err, code = sh.run(q .. " " .. c[1])
      assert.equal(2, code, c[1] .. out .. err)
      assert.matches(c[2], err)
    end
    local out, err, code = sh.run(q .. " plan --help")
    assert.equal(0, code, out .. err)
    assert.matches("usage: quan plan %[options%] CAMPAIGN%.lua", out)
    assert.matches("exit status: 0 nothing to do, 3 changes pending", out)
    out, err, code = sh.run(q .. " help apply")
    assert.equal(0, code, out .. err)
    assert.matches("%-%-dry%-run", out)
  end)

  it("derives out_request_no from the campaign's name and the stock's key only", function()
    local campaign = require "quan.campaign"
    local n = campaign.request_no("double12", "tier10")
    assert.matches("^QC%-%x+$", n)
    assert.equal(35, #n)
    assert.equal("QC-" .. require("quan.crypto").sha256("quan campaign stock v1\0double12\0tier10"):sub(1, 32), n)
    assert.not_equal(n, campaign.request_no("double12", "tier30"))
    assert.not_equal(n, campaign.request_no("double11", "tier10"))
    local plan = require "quan.campaign.plan"
    local decl = assert(campaign.declaration({ name = "double12", stocks = { tier10 = { json = { stock_name = "a" } } } }, "x.lua"))
    local decl2 = assert(campaign.declaration({ name = "double12", stocks = { tier10 = { json = { stock_name = "b" } } } }, "x.lua"))
    assert.equal(n, plan.body(decl, decl.by_key.tier10, "1").out_request_no)
    assert.equal(n, plan.body(decl2, decl2.by_key.tier10, "1").out_request_no)
  end)
end)

describe("quan.campaign.plan", function()
  local plan = require "quan.campaign.plan"
  local campaign = require "quan.campaign"
  local at = require("wechatpay.favor").at
  local epoch = require("quan.time").parse
  local NOW = epoch(at "2027-11-20 10:00")

  -- body(over) -> a valid create body (Mon 2027-12-06 .. Wed 2027-12-08), fields of over merged in
  local function body(over)
    local b = {
      stock_name = "满100减10", belong_merchant = "1900000001", stock_type = "NORMAL", no_cash = false,
      available_begin_time = at "2027-12-06 00:00", available_end_time = at "2027-12-08 23:59",
      stock_use_rule = { max_coupons = 100, max_amount = 100000, max_coupons_per_user = 1,
        natural_person_limit = false, prevent_api_abuse = false },
      coupon_use_rule = { coupon_available_time = {}, fixed_normal_coupon = { coupon_amount = 1000, transaction_minimum = 10000 } },
    }
    for k, v in pairs(over or {}) do
      if type(v) == "table" and type(b[k]) == "table" then for k2, v2 in pairs(v) do b[k][k2] = v2 end else b[k] = v end
    end
    return b
  end

  local function codes(w)
    local t = {}
    for _, x in ipairs(w) do t[#t + 1] = x.code end
    return table.concat(t, ",")
  end

  it("warns of what is valid but probably a mistake", function()
    for _, c in ipairs {
      { {}, "" },
      { { coupon_use_rule = { fixed_normal_coupon = { coupon_amount = 12, transaction_minimum = 100 } },
          stock_use_rule = { max_amount = 1200 } }, "yuan_as_fen,yuan_as_fen" },
      { { stock_use_rule = { max_amount_by_day = 500 } }, "daily_budget_below_face" },
      { { stock_use_rule = { max_amount_by_day = 20000 } }, "daily_budget_short" },   -- 20 a day × 3 days < 100
      { { stock_use_rule = { max_amount_by_day = 40000 } }, "" },                     -- 40 a day × 3 days >= 100
      { { coupon_use_rule = { coupon_available_time = { available_end_time = at "2027-12-07 00:00" } } }, "usage_ends_early" },
      { { coupon_use_rule = { coupon_available_time = require("wechatpay.favor").weekdays { 0, 6 } } }, "usage_never" },
      { { coupon_use_rule = { coupon_available_time = require("wechatpay.favor").weekdays { 2 } } }, "" },
    } do
      assert.equal(c[2], codes(plan.warnings(body(c[1]), NOW, false)), require("cjson").encode(c[1]))
    end
    -- a negative or zero amount is the schema's error, no unit typed wrong
    assert.equal("", codes(plan.warnings(body { coupon_use_rule = { fixed_normal_coupon =
      { coupon_amount = -100, transaction_minimum = 0 } } }, NOW, false)))
    assert.equal("window_ended", codes(plan.warnings(body(), epoch(at "2027-12-10 00:00"), true, "running")))
    assert.equal("window_open_not_started", codes(plan.warnings(body(), epoch(at "2027-12-07 00:00"), true, "unactivated")))
    assert.equal("window_begun", codes(plan.warnings(body(), epoch(at "2027-12-06 00:00") + 30, false)))
    -- an end before its begin, of the window and of the coupons' usage window
    assert.equal("window_inverted", codes(plan.warnings(body {
      available_begin_time = at "2027-12-08 00:00", available_end_time = at "2027-12-06 00:00" }, NOW, false)))
    assert.equal("usage_ends_early,usage_window_inverted", codes(plan.warnings(body {
      coupon_use_rule = { coupon_available_time = {
        available_begin_time = at "2027-12-08 00:00", available_end_time = at "2027-12-07 00:00" } } }, NOW, false)))
  end)

  it("steps from each status to each declared state", function()
    for _, c in ipairs {
      { nil, "running", "create,start" }, { nil, "paused", "create" },
      { "unactivated", "running", "start" }, { "unactivated", "paused", "" },
      { "running", "running", "" }, { "running", "paused", "pause" },
      { "paused", "running", "restart" }, { "paused", "paused", "" },
      { "stoped", "running", "" }, { "audit", "running", "" },
    } do
      assert.equal(c[3], table.concat((plan.steps(c[1], c[2])), ","), tostring(c[1]) .. " -> " .. c[2])
    end
  end)

  it("plans offline from the state: drift against the request sent, no start once the window ended", function()
    local decl = assert(campaign.declaration({ name = "o", stocks = {
      a = { json = body { stock_name = "满100减11" } },
      b = { json = body() },
      c = { json = body(), state = "paused" },
    } }, "o.lua"))
    local sent = require("wechatpay.json").encode(plan.body(decl, decl.by_key.a, "1900000001"))
    local records = {
      a = { key = "a", stock_id = "1", status = "running", request = sent:gsub("满100减11", "满100减10") },
      b = { key = "b", stock_id = "2", status = "unactivated" },
      c = { key = "c", stock_id = "3", status = "running" },
    }
    local p = assert(plan.build(decl, { mchid = "1900000001", now = epoch(at "2027-12-10 00:00"), records = records }))
    local by = {}
    for _, it in ipairs(p.stocks) do by[it.key] = it end
    assert.equal(1, #by.a.drift)
    assert.same({ field = "stock_name", desc = "批次名称", declared = "满100减11", actual = "满100减10", source = "state" },
      by.a.drift[1])
    assert.same({}, by.b.steps)
    assert.matches("its window has ended", by.b.notes[1])
    assert.same({ "pause" }, by.c.steps)
    assert.equal(1, p.changes)
  end)
end)

describe("the retry option of a call", function()
  local h, wx
  setup(function()
    h = sbx.start()
    wx = require("tests.support.batchsbx").client(h)
  end)
  teardown(function() if h then h:stop() end end)

  local fast = function(n) return require("wechatpay.retry").policy { attempts = n, base = 0.01, max = 0.05 } end

  it("repeats an idempotent call after 500s and 429s, signed anew each time", function()
    assert.equal(200, sbx.control(h, "/sandbox/faults", { spec = "error500=0.4,error429=0.2" }).status)
    local retried = 0
    for _ = 1, 15 do
      local res, err = wx.v3.marketing.favor.stocks:get {
        query = { offset = 0, limit = 10, stock_creator_mchid = wx.mchid }, retry = fast(40),
      }
      assert.truthy(res, tostring(err))
      assert.equal(200, res.status)
      if res.attempts > 1 then retried = retried + 1 end
    end
    assert.is_true(retried > 0)
    assert.equal(200, sbx.control(h, "/sandbox/faults", { spec = "error500=1" }).status)
    local before = requests(h).GET
    local res, err = wx.v3.marketing.favor.stocks:get {
      query = { offset = 0, limit = 10, stock_creator_mchid = wx.mchid }, retry = 2,
    }
    assert.is_nil(res)
    assert.equal("SYSTEM_ERROR", err.code)
    assert.equal(3, err.attempts)
    assert.equal(before + 3, requests(h).GET)
    assert.equal(200, sbx.control(h, "/sandbox/faults", { spec = "" }).status)
  end)

  it("repeats a create carrying an out_request_no: one stock, whatever answers were lost", function()
    local body = sbx.stock_body(h, { stock_name = "retry spec" })
    assert.equal(200, sbx.control(h, "/sandbox/faults", { spec = "drop=0.6" }).status)
    local res, err = wx.v3.marketing.favor.couponStocks:post { json = body, retry = fast(40) }
    assert.equal(200, sbx.control(h, "/sandbox/faults", { spec = "" }).status)
    assert.truthy(res, tostring(err))
    assert.equal(1, #stocks(h, "retry spec"))
    local start
    start, err = wx.v3.marketing.favor.stocks._stock_id_.start:post {
      stock_id = res.json.stock_id, json = { stock_creator_mchid = wx.mchid }, retry = 1,
    }
    assert.truthy(start, tostring(err))
  end)

  it("is a usage error for a call that cannot be repeated safely", function()
    local ok, msg = pcall(function()
      return wx.v3.marketing.favor.callbacks:post { json = { mchid = wx.mchid, notify_url = "https://x.test/n" }, retry = 3 }
    end)
    assert.is_false(ok)
    assert.matches("POST /v3/marketing/favor/callbacks: option 'retry': this call cannot be repeated safely "
      .. "%(a POST without an out_request_no in its body%)", msg)
    ok, msg = pcall(function()
      return wx.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 1, stock_creator_mchid = wx.mchid }, retry = 1.5 }
    end)
    assert.is_false(ok)
    assert.matches("option 'retry' must be a count of retries", msg)
    local idem = require("wechatpay.retry").idempotent
    assert.is_true(idem("GET", "v3/marketing/favor/stocks", nil))
    assert.is_true(idem("POST", "v3/marketing/favor/stocks/{stock_id}/pause", {}))
    assert.is_true(idem("POST", "v3/marketing/favor/stocks/123/restart", {}))
    assert.is_true(idem("POST", "v3/marketing/favor/users/{openid}/coupons", { out_request_no = "n1" }))
    assert.is_false(idem("POST", "v3/marketing/favor/media/image-upload", nil))
    assert.is_false(idem("DELETE", "v3/x", nil))
  end)
end)

describe("quan apply with sends", function()
  local h, dir
  setup(function()
    h = sbx.start()
    dir = sh.tmpdir()
  end)
  teardown(function() if h then h:stop() end end)

  -- distributed(name) -> distributed_coupons of the stock named so
  local function distributed(name)
    for _, s in ipairs(stocks(h, name)) do
      if s.stock_name == name then return s.distributed_coupons end
    end
  end

  it("runs each declared send once its stock runs and its window opens: one coupon a user, again nothing", function()
    local b, e = window(h)
    local file = campaign(dir, "S", { begin = b, ["end"] = e })
    sh.write(file, sh.read(file):gsub("\nreturn c\n$",
      '\nc:send("first", "tier10", "users.csv")\nc:send("second", "tier30", "users.csv", { key = "openid" })\nreturn c\n'))
    local users = { "openid" }
    for i = 1, 12 do users[#users + 1] = "send-user-" .. i end
    sh.write(dir .. "/users.csv", table.concat(users, "\n") .. "\n")
    local out, err, code = quan(h, dir, "plan S.lua")
    assert.equal(3, code, out .. err)
    assert.matches("2 sends declared %(first → tier10, second → tier30%): apply runs each once its stock runs", out)
    -- the stocks run, their window opens the day after tomorrow: the sends wait
    out, err, code = quan(h, dir, "apply --yes S.lua")
    assert.equal(0, code, out .. err)
    assert.matches("apply: done: 3 created, 3 started", out)
    assert.matches("send 'first' → tier10: waits: the stock's window opens %d%d%d%d%-%d%d%-%d%d 00:00", out)
    assert.equal(0, distributed("S满100减10"))
    -- in the window: both send, one coupon a user
    out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(h.state) .. " +3d")
    assert.equal(0, code, out .. err)
    out, err, code = quan(h, dir, "apply --yes S.lua")
    assert.equal(0, code, out .. err)
    assert.matches("apply: nothing to do\n", out)
    assert.matches("send 'first' → tier10: batch [%w%-]+: sent 12; exit 0", out)
    assert.matches("send 'second' → tier30: batch [%w%-]+: sent 12; exit 0", out)
    assert.equal(12, distributed("S满100减10"))
    assert.equal(12, distributed("S满300减30"))
    -- recorded in the state, where quan report finds them
    local db = assert(require("quan.sqlite").open(file .. ".state"))
    local rows = {}
    for r in db:rows("SELECT send, stock, path, batch_id FROM journals ORDER BY send") do rows[#rows + 1] = r end
    db:close()
    assert.equal(2, #rows)
    assert.same({ "first", "tier10", file .. ".send-first.journal" }, { rows[1].send, rows[1].stock, rows[1].path })
    assert.truthy(rows[1].batch_id)
    assert.truthy(io.open(rows[2].path))
    -- again: nothing left, no write call
    local before = requests(h)
    out, err, code = quan(h, dir, "apply --yes S.lua")
    assert.equal(0, code, out .. err)
    assert.matches("send 'first' → tier10: batch [%w%-]+: already done 12; exit 0", out)
    assert.same(before.POST, requests(h).POST)
    -- a user added to the file: one more coupon, for that user only
    sh.write(dir .. "/users.csv", table.concat(users, "\n") .. "\nsend-user-13\n")
    out, err, code = quan(h, dir, "apply --yes S.lua")
    assert.equal(0, code, out .. err)
    assert.matches("send 'first' → tier10: batch [%w%-]+: sent 1, already done 12; exit 0", out)
    assert.equal(13, distributed("S满100减10"))
    assert.equal(before.POST + 2, requests(h).POST)
  end)
end)

describe("quan sandbox clock", function()
  it("prints and moves a running sandbox's business clock, back only while it holds no stock", function()
    local h = sbx.start()
    local before = sbx.now(h)
    local out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(h.state))
    assert.equal(0, code, out .. err)
    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d[:%d]* %a%a%a %(Beijing time%), 0s ahead of real time\n$", out)
    out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(h.state) .. " +2h")
    assert.equal(0, code, out .. err)
    assert.matches("%-> .- %(Beijing time%), 2h ahead of real time\n$", out)
    assert.is_true(math.abs(sbx.now(h) - before - 7200) < 30)
    local target = require("quan.format").beijing(before + 3 * 86400):sub(1, 16)
    out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(h.state) .. " '" .. target .. "'")
    assert.equal(0, code, out .. err)
    assert.is_true(math.abs(sbx.now(h) - (before + 3 * 86400)) < 90)
    -- back, while the sandbox holds no stock: a rehearsal on a date of its own
    out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(h.state) .. " '2020-01-01 00:00'")
    assert.equal(0, code, out .. err)
    -- (days, then the hours and minutes of real time's own hour: "2532d 1h")
    assert.matches("%-> 2020%-01%-01 00:00 Wed %(Beijing time%), %d+d[%dhm ]* behind real time\n$", out)
    assert.is_true(math.abs(sbx.now(h) - 1577808000) < 30)
    assert.equal(200, sbx.request(h, "POST", "/v3/marketing/favor/coupon-stocks", sbx.stock_body(h)).status)
    out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(h.state) .. " '2019-12-31 00:00'")
    assert.equal(1, code, out .. err)
    assert.matches("the clock moves back only while the sandbox holds no stock", err)
    assert.is_true(math.abs(sbx.now(h) - 1577808000) < 30)
    out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(h.state) .. " +2x")
    assert.equal(2, code, out .. err)
    assert.matches("is neither %+DURATION %(.-%) nor a time", err)
    out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(h.state) .. " +100000000d")
    assert.equal(2, code, out .. err)
    assert.matches("'%+100000000d' is more than the clock can move at once %(40150d%)", err)
    out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(h.state) .. " +1h +2h")
    assert.equal(2, code, out .. err)
    assert.matches("unexpected argument '%+2h'", err)
    out, err, code = sh.run(q .. " sandbox tick --state " .. sh.quote(h.state))
    assert.equal(2, code, out .. err)
    assert.matches("^quan sandbox: unexpected argument 'tick'\nusage: quan sandbox %[options%]\n       quan sandbox clock", err)
    h:stop()
    out, err, code = sh.run(q .. " sandbox clock --state " .. sh.quote(sh.tmpdir()))
    assert.equal(1, code, out .. err)
    assert.matches("no sandbox state in", err)
  end)
end)

describe("quan.campaign", function()
  it("adds no globals", function()
    local out = sh.run(q .. [[ -e 'local b = {} for k in pairs(_G) do b[k] = true end
      for _, m in ipairs { "quan.campaign", "quan.campaign.plan", "quan.campaign.apply", "quan.campaign.state",
        "quan.campaign.render", "quan.campaign.command", "quan.format", "quan.sandbox.clock", "wechatpay.retry" } do
        require(m) end
      for k in pairs(_G) do if not b[k] then print(k) end end']])
    assert.equal("", out)
  end)
end)

describe("docs/campaigns.md", function()
  it("runs the walk-through on a persistent sandbox as written", function()
    local page = sh.read("docs/campaigns.md")
    local section = page:match("\n### A walk%-through on a persistent sandbox\n(.-)\n### ")
    assert.truthy(section, "walk-through not found")
    local dir = sh.tmpdir()
    -- the file it declares, then its commands in order, in one shell
    local name, code = section:match("\n`([%w%-_]+%.lua)`:\n\n```lua\n(.-)```")
    assert.equal("double12.lua", name)
    sh.write(dir .. "/" .. name, code)
    local script = {}
    for block in section:gmatch("\n```sh\n(.-)```") do script[#script + 1] = block end
    assert.is_true(#script >= 4)
    local bin = sh.tmpdir()
    assert(os.execute("ln -s " .. sh.quote(sh.quan) .. " " .. sh.quote(bin .. "/quan")))
    sh.write(dir .. "/walk.sh", table.concat(script, "\n"))
    local out, err, status = sh.run("cd " .. sh.quote(dir) .. " && PATH=" .. sh.quote(bin) .. ":$PATH sh walk.sh")
    assert.equal(0, status, out .. err)
    local function after(mark, pattern)
      local from = assert(out:find(mark, 1, true), "not in the output: " .. mark .. "\n" .. out)
      assert.matches(pattern, out:sub(from), nil, out)
    end
    -- plan: three to create; apply: done
    assert.matches("plan: 3 to create %(¥150,000%.00%), 3 to start\n", out)
    assert.matches("面额 ¥10%.00 · 门槛 ¥100%.00 · 总预算 ¥50,000%.00 = 5,000 × ¥10%.00", out)
    assert.matches("window 2027%-12%-01 00:00 Wed → 2027%-12%-12 23:59 Sun, 12 days", out)
    assert.matches("apply: done: 3 created, 3 started; state double12.lua.state\n", out)
    -- the clock moved: running, windows open, nothing to do (twice)
    after("-> 2027-12-01 10:00 Wed (Beijing time)", "= tier10  nothing to do · stock %d+ running")
    after("-> 2027-12-01 10:00 Wed (Beijing time)", "%(open, 11d 13h left%)")
    after("-> 2027-12-01 10:00 Wed (Beijing time)", "plan: nothing to do · 3 as declared\n.-apply: nothing to do\n")
    -- tier80 declared paused: the plan shows the pause, apply does it
    after("apply: nothing to do\n", "~ tier80  pause · stock %d+ running → paused  %(double12%.lua:21%)")
    after("apply: nothing to do\n", "plan: 1 to pause · 2 as declared\n")
    after("apply: nothing to do\n", "tier80: paused stock %d+: paused\napply: done: 1 paused")
    -- what the page shows of the output is what the commands print
    for shown in section:gmatch("\n```text\n(.-)```") do
      for line in shown:gmatch("[^\n]+") do
        if line ~= "…" and not line:find("opens in") and not line:find("out_request_no") then
          local pattern = line:gsub("%p", "%%%0"):gsub("%d+", "%%d+")
          assert.matches(pattern, out, nil, "shown but not printed: " .. line)
        end
      end
    end
  end)
end)
