-- Specs of quan.batch.coupons as cron runs it (`quan send`), end to end
-- through the sandbox: faults and kill -9, budget exhaustion, refusals, a
-- stock not running, dry runs, the lock.
local sh = require "tests.support.sh"
local B = require "tests.support.batch"
local S = require "tests.support.batchsbx"
local qos = require "quan.os"

local csv = require "quan.batch.csv"
local journal = require "quan.batch.journal"
local batch = require "quan.batch"

local read_all, counts_of, events_of = B.read_all, B.counts_of, B.events_of
-- spawn_example(h, dir, args, tag[, global]) / run_example: `quan [GLOBAL] send ARGS`
local function spawn_example(h, dir, args, tag, global)
  local words = S.send(args)
  if global then table.insert(words, 1, global) end
  return S.spawn(h, dir, words, tag)
end
local function run_example(h, dir, args, tag, global)
  return qos.wait(spawn_example(h, dir, args, tag, global))
end

describe("quan.batch through the sandbox", function()
  local h

  setup(function() h = S.start() end)
  teardown(function() if h then h:stop() end end)

  -- 10,000 rows; the sanitizer build of `make check` is several times
  -- slower, so it runs 2,000 (QUAN_BATCH_SPEC_ROWS overrides both)
  local e2e_rows = math.tointeger(tonumber(os.getenv("QUAN_BATCH_SPEC_ROWS") or ""))
    or (sh.quan:find("/asan/", 1, true) and 2000 or 10000)

  it("sends 10,000 openids exactly once through faults and three kill -9", function()
    local dir = sh.tmpdir()
    local n = e2e_rows
    local stock = S.stock(h, n + 100)
    local users = S.users(dir .. "/users.csv", n)
    local jpath = dir .. "/users.journal"
    S.faults(h, "error500=0.05,error429=0.02,drop=0.01")
    local args = { "--concurrency", "48", stock, users, jpath }
    local sent_before, killed_in_flight = 0, 0
    for k = 1, 3 do
      local pid = spawn_example(h, dir, args, "run" .. k)
      -- let it send a good share of its part, then kill it mid-flight
      local deadline = qos.now() + 60
      while qos.now() < deadline do
        qos.sleep(0.1)
        local c = counts_of(jpath)
        if c and c.sent - sent_before >= (n // 10) * (1 + k // 2) then break end
        assert.is_false(qos.wait(pid, true), "the run ended before it was killed")
      end
      assert.is_true(qos.kill(pid, "KILL"))
      local how, sig = qos.wait(pid)
      assert.equal("signal", how)
      assert.equal(9, sig)
      local c = counts_of(jpath)
      assert.is_true(c.sent > sent_before, "run " .. k .. " made progress")
      sent_before = c.sent
      killed_in_flight = killed_in_flight + c.in_flight
    end
    assert.is_true(killed_in_flight > 0, "some rows were in flight when killed")
    local pid = spawn_example(h, dir, args, "final")
    local how, code = qos.wait(pid)
    assert.equal("exit", how)
    assert.equal(batch.exit.ok, code, sh.read(dir .. "/final.err"):sub(-2000))
    -- the sandbox holds exactly one coupon per openid
    local held = S.coupons(h, stock, true)
    assert.equal(n, held.total)
    assert.equal(n, held.distinct)
    assert.equal(0, held.doubled)
    -- the journal accounts for every row, with the coupon the sandbox holds
    local j = assert(journal.open_read(jpath))
    local c = j:counts()
    assert.equal(n, c.total)
    assert.equal(n, c.sent)
    local rows, mismatched = 0, 0
    for r in j.db:rows("SELECT row, key, result, out_request_no FROM items") do
      rows = rows + 1
      if held.by_openid[r.key] ~= r.result then mismatched = mismatched + 1 end
      assert.equal(batch.request_no(j.batch_id, r.key, stock), r.out_request_no) -- the stock is part of it
    end
    j:close()
    assert.equal(n, rows)
    assert.equal(0, mismatched)
    -- the resumed runs said so, and skipped what was done
    local ev = events_of(dir .. "/final.err")
    assert.equal("start", ev[1].event)
    assert.is_true(ev[1].resumed)
    local sum = ev[#ev]
    assert.equal("summary", sum.event)
    assert.equal(n, sum.rows)
    assert.is_true(sum.skipped >= sent_before)
    assert.equal(n, sum.journal_counts.sent)
    S.faults(h, "")
  end)

  it("stops on budget exhaustion and marks the rest not attempted", function()
    S.faults(h, "")
    local dir = sh.tmpdir()
    local stock = S.stock(h, 40)
    local users = S.users(dir .. "/users.csv", 300, "oBudget")
    local jpath = dir .. "/j.db"
    local pid = spawn_example(h, dir, { "--concurrency", "8", "--export", dir .. "/out.csv", stock, users, jpath }, "run")
    local how, code = qos.wait(pid)
    assert.equal("exit", how)
    assert.equal(batch.exit.stopped, code)
    assert.equal(40, S.coupons(h, stock).total)
    local c = counts_of(jpath)
    assert.equal(40, c.sent)
    assert.equal(260, c.not_attempted)
    assert.equal(300, c.total)
    local ev = events_of(dir .. "/run.err")
    assert.equal("NOT_ENOUGH", B.last(ev, "stop").code)
    assert.equal(5, ev[#ev].exit_code)
    -- the export has every row in input order
    local r = assert(csv.open(dir .. "/out.csv"))
    local recs = read_all(r)
    assert.equal(300, #recs)
    assert.equal("1", recs[1].row)
    assert.equal("300", recs[300].row)
  end)

  it("records per-user refusals and goes on (exit 3)", function()
    S.faults(h, "")
    local dir = sh.tmpdir()
    local stock = S.stock(h, 100) -- one coupon per user
    local users = S.users(dir .. "/users.csv", 20, "oTwice")
    local how, code = run_example(h, dir, { stock, users, dir .. "/night1.db" }, "n1")
    assert.equal(batch.exit.ok, code)
    -- another night, another batch (a new journal) to the same users
    local more = S.users(dir .. "/more.csv", 30, "oTwice") -- 20 old users, 10 new
    how, code = run_example(h, dir, { "--export", dir .. "/n2.csv", stock, more, dir .. "/night2.db" }, "n2")
    assert.equal("exit", how)
    assert.equal(batch.exit.refused, code)
    local sum = events_of(dir .. "/n2.err")
    sum = sum[#sum]
    assert.equal(10, sum.sent)
    assert.equal(20, sum.refused)
    assert.same({ REQUEST_BLOCKED = 20 }, sum.refused_by_code)
    assert.equal(30, S.coupons(h, stock).total)
    local recs = read_all(assert(csv.open(dir .. "/n2.csv")))
    assert.equal("refused", recs[1].state)
    assert.equal("REQUEST_BLOCKED", recs[1].code)
    assert.equal("sent", recs[30].state)
  end)

  it("refuses a line that is no openid, per row, without sending it", function()
    S.faults(h, "")
    local dir = sh.tmpdir()
    local stock = S.stock(h, 100)
    -- a 300 KB line (a file broken at export) and one with a NUL byte, between two users
    local users = sh.write(dir .. "/users.csv", "openid\noGood1\n" .. ("x"):rep(300000) .. "\nab\0cd\noGood2\n")
    local how, code = run_example(h, dir, { "--log-format", "text", stock, users, dir .. "/j.db" }, "n")
    assert.equal("exit", how)
    assert.equal(batch.exit.refused, code) -- refused and recorded: not failed, not retried as a network error
    local err = sh.read(dir .. "/n.err")
    assert.matches('refused [^\n]*row=2 key="x+%.%.%. %(300000 bytes%)" code=VALIDATION message="openid: not an openid '
      .. '%(300000 bytes, more than an openid\'s 128%): x+%.%.%."\n', err)
    assert.matches('refused [^\n]*row=3 key="ab\\u0000cd" code=VALIDATION message="openid: not an openid '
      .. '%(control characters%): ab%?cd"\n', err)
    assert.matches("sent %s+2\n", err)
    assert.is_true(#err < 10000) -- the long line is not echoed whole
    assert.equal(2, S.coupons(h, stock).total)
  end)

  it("refuses a stock that is not running, before sending anything", function()
    local dir = sh.tmpdir()
    local stock = S.stock(h, 10)
    assert(h.wx:chain("v3/marketing/favor/stocks/{stock_id}/pause"):post {
      stock_id = stock, json = { stock_creator_mchid = h.wx.mchid } })
    local users = S.users(dir .. "/users.csv", 5, "oPaused")
    local how, code = run_example(h, dir, { stock, users, dir .. "/j.db" }, "pre")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("not running", sh.read(dir .. "/pre.err"))
    -- without the preflight the first answer stops the batch
    how, code = run_example(h, dir, { "--no-preflight", stock, users, dir .. "/j2.db" }, "nopre")
    assert.equal(batch.exit.stopped, code)
    assert.equal(5, counts_of(dir .. "/j2.db").not_attempted)
    assert.equal(0, S.coupons(h, stock).total)
  end)

  it("leaves the journal alone in a dry run and in quan check: the real run sends to everyone", function()
    S.faults(h, "")
    local dir = sh.tmpdir()
    local stock = S.stock(h, 100)
    local users = S.users(dir .. "/users.csv", 6, "oDry")
    local jpath = dir .. "/j.db"
    local function quan(command, tag, args)
      local how, code
      if command == "check" or command == "check --log-format text" then
        -- quan check runs scripts: the example, over the same module
        local words = { "check" }
        if command ~= "check" then words[2], words[3] = "--log-format", "text" end
        words[#words + 1] = "scripts/examples/send-coupons.lua"
        for _, a in ipairs(args) do words[#words + 1] = a end
        how, code = S.run(h, dir, words, tag)
      else
        how, code = run_example(h, dir, args, tag, command)
      end
      assert.equal("exit", how)
      return code
    end
    -- before any real run: nothing sent, no journal written
    assert.equal(0, quan("--dry-run", "dry1", { stock, users, jpath }))
    assert.is_nil(io.open(jpath))
    local ev = events_of(dir .. "/dry1.err")
    assert.is_true(ev[1].simulated)
    assert.is_true(ev[#ev].simulated)
    assert.equal(6, ev[#ev].sent) -- what a real run would send
    assert.matches("dry run: POST https://%S+/v3/marketing/favor/users/oDry%d+/coupons", sh.read(dir .. "/dry1.out"))
    assert.equal(0, quan("check", "check1", { stock, users, jpath }))
    assert.is_nil(io.open(jpath))
    assert.matches("7 requests, 0 invalid", sh.read(dir .. "/check1.out")) -- the stock query + 6 sends
    -- quan check's own --log-format (over QUAN_LOG_FORMAT=json): the summary for humans
    assert.equal(0, quan("check --log-format text", "check2", { stock, users, jpath }))
    assert.matches("simulated: nothing was sent, the journal was not changed", sh.read(dir .. "/check2.err"))
    assert.equal(0, S.coupons(h, stock).total)
    -- a real run to 3 users, then a dry run over all 6: it skips the 3 and leaves the journal as it was
    local three = S.users(dir .. "/three.csv", 3, "oDry")
    assert.equal(0, quan(nil, "real1", { stock, three, jpath }))
    local before = counts_of(jpath)
    assert.equal(3, before.sent)
    assert.equal(0, quan("--dry-run", "dry2", { stock, users, jpath }))
    ev = events_of(dir .. "/dry2.err")
    assert.equal(3, ev[#ev].skipped)
    assert.equal(3, ev[#ev].sent)
    assert.same(before, counts_of(jpath))
    assert.equal(3, S.coupons(h, stock).total)
    -- the real run sends to the other 3
    assert.equal(0, quan(nil, "real2", { stock, users, jpath }))
    assert.equal(6, counts_of(jpath).sent)
    assert.equal(6, S.coupons(h, stock).total)
  end)

  it("refuses a second concurrent run of the same batch", function()
    S.faults(h, "latency=30ms")
    local dir = sh.tmpdir()
    local stock = S.stock(h, 2000)
    local users = S.users(dir .. "/users.csv", 1500, "oLock")
    local jpath = dir .. "/j.db"
    local first = spawn_example(h, dir, { "--concurrency", "4", stock, users, jpath }, "first")
    local deadline = qos.now() + 30
    repeat qos.sleep(0.05) until (counts_of(jpath) or { total = 0 }).total > 0 or qos.now() > deadline
    local how, code = run_example(h, dir, { stock, users, jpath }, "second")
    assert.equal("exit", how)
    assert.equal(batch.exit.busy, code)
    local err = sh.read(dir .. "/second.err")
    assert.matches("in use by another run %(pid " .. first .. "%)", err)
    assert.is_false(qos.wait(first, true)) -- the first run goes on
    qos.kill(first, "KILL")
    qos.wait(first)
    S.faults(h, "")
  end)
end)

describe("quan send", function()
  it("explains its usage and refuses bad arguments with exit 2", function()
    local quan = sh.quote(sh.quan)
    local out, _, code = sh.run(quan .. " send --help")
    assert.equal(0, code)
    assert.matches("^usage: quan send %[options%] STOCK_ID USERS.csv %[JOURNAL%]\n", out)
    local _, err
    _, err, code = sh.run(quan .. " send onlyone")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("expected STOCK_ID USERS.csv %[JOURNAL%]", err)
    _, err, code = sh.run(quan .. " send --rate x S u.csv")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("%-%-rate wants a positive number", err)
    _, err, code = sh.run(quan .. " send --bogus S u.csv")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("^quan send: unknown option '%-%-bogus'\nusage: quan send", err)
    _, err, code = sh.run(quan .. " send --log-format yaml S u.csv")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("%-%-log%-format must be one of bar, json, text, got 'yaml'", err)
    _, err, code = sh.run(quan .. " send --continue S u.csv")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("%-%-continue needs %-%-batch%-id", err)
    -- an export that cannot be written is said before anything is sent (it failed after the run, exit 0)
    _, err, code = sh.run(quan .. " send --export /nonexistent/out.csv S u.csv")
    assert.equal(batch.exit.cannot_start, code)
    assert.equal("quan send: --export /nonexistent/out.csv: no folder /nonexistent to write it in\n", err)
    _, err, code = sh.run(quan .. " send --export / S u.csv")
    assert.equal(batch.exit.cannot_start, code)
    assert.equal("quan send: --export /: is a directory\n", err)
  end)

  it("is also a script's one call (scripts/examples/send-coupons.lua)", function()
    local _, err, code = sh.run(sh.quote(sh.quan) .. " run scripts/examples/send-coupons.lua onlyone")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("usage: quan run send%-coupons.lua STOCK_ID USERS.csv %[JOURNAL%]", err)
  end)
end)
