-- Specs of `quan send` end to end through the sandbox, as cron and systemd
-- run it: stops on SIGTERM and SIGHUP, batch ids and their stock, the lock
-- through a symbolic link, the preflight's retries, CSV mistakes; and
-- send.run, the one call a campaign's apply makes.
local sh = require "tests.support.sh"
local B = require "tests.support.batch"
local S = require "tests.support.batchsbx"
local qos = require "quan.os"

local batch = require "quan.batch"
local journal = require "quan.batch.journal"

local counts_of, events_of = B.counts_of, B.events_of

-- wait_until(fn[, seconds = 60]) -> true once fn() holds (false at the deadline)
local function wait_until(fn, seconds)
  local deadline = qos.now() + (seconds or 60)
  while qos.now() < deadline do
    if fn() then return true end
    qos.sleep(0.05)
  end
  return false
end

-- runs_of(path) -> the journal's runs, oldest first ({id, pid, ended, exit})
local function runs_of(path)
  local j = assert(journal.open_read(path))
  local out = {}
  for r in j.db:rows("SELECT id, pid, ended, exit FROM runs ORDER BY id") do out[#out + 1] = r end
  j:close()
  return out
end

describe("quan send", function()
  local h

  setup(function() h = S.start() end)
  teardown(function() if h then h:stop() end end)
  before_each(function() S.faults(h, "") end)

  -- started(jpath) -> true once the run has sent some rows
  local function started(jpath)
    return wait_until(function() local c = counts_of(jpath); return c and c.sent >= 20 end)
  end

  for _, case in ipairs { { signal = "TERM", code = 143, reason = "terminated %(SIGTERM%)" },
                          { signal = "HUP", code = 129, reason = "hung up %(SIGHUP%)" } } do
    it("stops in order on SIG" .. case.signal .. ": the summary, the run closed, exit " .. case.code
      .. ", and the rerun finishes with one coupon per user", function()
      local dir = sh.tmpdir()
      local n = 1000 -- at 4 in flight and 20 ms a call, 5 s: the signal comes long before the end
      local stock = S.stock(h, n + 10)
      local users = S.users(dir .. "/users.csv", n, "oSig" .. case.signal)
      local jpath = dir .. "/j.db"
      S.faults(h, "latency=20ms")
      local pid = S.spawn(h, dir, S.send { "--concurrency", "4", stock, users, jpath }, "first")
      assert.is_true(started(jpath), "the run began sending")
      assert.is_false(qos.wait(pid, true), "the run was still going")
      assert.is_true(qos.kill(pid, case.signal))
      local how, code = qos.wait(pid)
      assert.same({ "exit", case.code }, { how, code })
      -- the summary, and it matches the journal
      local ev = events_of(dir .. "/first.err")
      local sum = ev[#ev]
      assert.equal("summary", sum.event)
      assert.equal(case.code, sum.exit_code)
      assert.matches(case.reason, sum.exit_reason)
      assert.equal(case.signal, sum.signal)
      local c = counts_of(jpath)
      assert.equal(c.sent, sum.sent)
      assert.equal(c.in_flight, sum.in_flight)
      assert.equal(c.not_attempted, sum.not_attempted)
      assert.is_true(sum.sent > 0 and sum.sent < n)
      assert.is_true(c.in_flight <= 4, "only the calls in flight are unknown") -- claimed, unsent rows went back
      -- the run is closed in the journal, with its exit code
      local runs = runs_of(jpath)
      assert.equal(1, #runs)
      assert.equal(pid, runs[1].pid)
      assert.is_not_nil(runs[1].ended)
      assert.equal(case.code, runs[1].exit)
      -- the same command again finishes: one coupon per user
      S.faults(h, "")
      how, code = S.run(h, dir, S.send { stock, users, jpath }, "rerun")
      assert.same({ "exit", 0 }, { how, code }, sh.read(dir .. "/rerun.err"):sub(-1500))
      local held = S.coupons(h, stock)
      assert.same({ n, n, 0 }, { held.total, held.distinct, held.doubled })
      assert.equal(n, counts_of(jpath).sent)
    end)
  end

  it("refuses a reused batch id on a new journal; with --continue reports sent or already held and issues nothing new", function()
    local dir = sh.tmpdir()
    local n = 30
    local stock = S.stock(h, 100)
    local users = S.users(dir .. "/users.csv", n, "oReuse")
    assert.same({ "exit", 0 }, { S.run(h, dir, S.send { stock, users, dir .. "/night1.db" }, "night1") })
    local batch_id = assert(journal.open_read(dir .. "/night1.db")).batch_id
    assert.equal(n, S.coupons(h, stock).total)
    -- the same id with a new journal (a fixed --batch-id in a crontab): refused, nothing sent
    local how, code = S.run(h, dir, S.send { "--batch-id", batch_id, stock, users, dir .. "/night2.db" }, "night2")
    assert.same({ "exit", batch.exit.cannot_start }, { how, code })
    local err = sh.read(dir .. "/night2.err")
    assert.matches("does not know batch " .. batch_id:gsub("%p", "%%%0"), err)
    assert.matches("%-%-continue", err)
    assert.is_nil(io.open(dir .. "/night2.db"))
    -- said to continue: every row is sent or already held, never plainly sent, and no coupon is new
    how, code = S.run(h, dir, S.send { "--batch-id", batch_id, "--continue", "--export", dir .. "/n3.csv", stock,
                                       users, dir .. "/night3.db" }, "night3")
    assert.same({ "exit", 0 }, { how, code })
    local sum = events_of(dir .. "/night3.err")
    sum = sum[#sum]
    assert.is_true(sum.continued)
    assert.equal(n, sum.sent_or_held)
    assert.equal(0, sum.sent)
    assert.equal(n, sum.journal_counts.sent_or_held)
    assert.equal(n, S.coupons(h, stock).total)
    for _, rec in ipairs(B.read_all(assert(require("quan.batch.csv").open(dir .. "/n3.csv")))) do
      assert.equal("sent_or_held", rec.state)
    end
    -- the text summary says so too
    how, code = S.run(h, dir, { "send", "--log-format", "text", "--batch-id", batch_id, "--continue", stock, users,
                               dir .. "/night4.db" }, "night4")
    assert.same({ "exit", 0 }, { how, code })
    assert.matches("sent or held %s+" .. n, sh.read(dir .. "/night4.err"))
  end)

  it("sends the same batch id on another stock: the stock is part of every out_request_no", function()
    local dir = sh.tmpdir()
    local n = 25
    local first, second = S.stock(h, 100), S.stock(h, 100)
    local users = S.users(dir .. "/users.csv", n, "oTwoStocks")
    assert.same({ "exit", 0 }, { S.run(h, dir, S.send { first, users, dir .. "/a.db" }, "a") })
    local batch_id = assert(journal.open_read(dir .. "/a.db")).batch_id
    local how, code = S.run(h, dir, S.send { "--batch-id", batch_id, "--continue", second, users, dir .. "/b.db" }, "b")
    assert.same({ "exit", 0 }, { how, code }, sh.read(dir .. "/b.err"):sub(-1500))
    assert.equal(n, S.coupons(h, first).total)
    local held = S.coupons(h, second)
    assert.same({ n, n, 0 }, { held.total, held.distinct, held.doubled })
    -- the journals number the same user apart
    local ja, jb = assert(journal.open_read(dir .. "/a.db")), assert(journal.open_read(dir .. "/b.db"))
    local ra = ja.db:first("SELECT out_request_no FROM items WHERE key = 'oTwoStocks0000001'")
    local rb = jb.db:first("SELECT out_request_no FROM items WHERE key = 'oTwoStocks0000001'")
    ja:close(); jb:close()
    assert.not_equal(ra.out_request_no, rb.out_request_no)
    assert.equal(batch.request_no(batch_id, "oTwoStocks0000001", second), rb.out_request_no)
  end)

  it("refuses a journal reached through a symbolic link while a run holds it", function()
    local dir = sh.tmpdir()
    local stock = S.stock(h, 2000)
    local users = S.users(dir .. "/users.csv", 1500, "oLink")
    local jpath = dir .. "/j.db"
    assert.is_true(os.execute(("ln -s j.db %s"):format(sh.quote(dir .. "/link.db"))))
    S.faults(h, "latency=30ms")
    local first = S.spawn(h, dir, S.send { "--concurrency", "4", stock, users, jpath }, "first")
    assert.is_true(wait_until(function() return (counts_of(jpath) or { total = 0 }).total > 0 end))
    for i, other in ipairs { dir .. "/link.db", dir .. "/./j.db" } do
      local how, code = S.run(h, dir, S.send { stock, users, other }, "second" .. i)
      assert.same({ "exit", batch.exit.busy }, { how, code })
      assert.matches("journal .* is in use by another run %(pid " .. first .. "%)", sh.read(dir .. "/second" .. i .. ".err"))
    end
    assert.is_false(qos.wait(first, true)) -- the first run goes on
    qos.kill(first, "KILL")
    qos.wait(first)
    -- the lock dies with its process: the link resumes the same journal
    S.faults(h, "")
    assert.same({ "exit", 0 }, { S.run(h, dir, S.send { stock, users, dir .. "/link.db" }, "resume") })
    assert.equal(1500, counts_of(jpath).sent)
    assert.equal(1500, S.coupons(h, stock).total)
  end)

  it("retries the stock query like any call: exit 7 when the API never answers, 2 for what the user must fix", function()
    local dir = sh.tmpdir()
    local stock = S.stock(h, 10)
    local users = S.users(dir .. "/users.csv", 3, "oPre")
    S.faults(h, "error500=1")
    local t0 = qos.now()
    local how, code = S.run(h, dir, S.send { "--attempts", "2", stock, users, dir .. "/j.db" }, "down")
    assert.same({ "exit", batch.exit.unavailable }, { how, code })
    assert.is_true(qos.now() - t0 >= 0.5, "it waited before the second try")
    assert.matches("no answer after 2 tries, nothing sent", sh.read(dir .. "/down.err"))
    assert.is_nil(io.open(dir .. "/j.db"))
    S.faults(h, "")
    how, code = S.run(h, dir, S.send { "--attempts", "2", "99999999", users, dir .. "/j.db" }, "missing")
    assert.same({ "exit", batch.exit.cannot_start }, { how, code })
    assert.matches("RESOURCE_NOT_EXISTS", sh.read(dir .. "/missing.err"))
    -- transient failures that pass: the run goes on (with 8 tries, all of
    -- one call fail with a chance of 0.3^8, under 1 in 10,000)
    S.faults(h, "error500=0.3")
    how, code = S.run(h, dir, S.send { "--attempts", "8", stock, users, dir .. "/j.db" }, "flaky")
    assert.same({ "exit", 0 }, { how, code }, sh.read(dir .. "/flaky.err"):sub(-1500))
  end)

  it("names the columns a CSV has when the key column is missing, and reads CSV as people write it", function()
    local dir = sh.tmpdir()
    local stock = S.stock(h, 10)
    sh.write(dir .. "/u.csv", "user_id,name\nu1,a\n")
    local how, code = S.run(h, dir, S.send { stock, dir .. "/u.csv" }, "nokey")
    assert.same({ "exit", batch.exit.cannot_start }, { how, code })
    local err = sh.read(dir .. "/nokey.err")
    assert.matches("no column 'openid' in the header; its columns: 'user_id', 'name'", err)
    assert.matches("%-%-key COLUMN", err)
    -- a spreadsheet's export: BOM, CRLF, quotes, a blank line, a repeated openid
    sh.write(dir .. "/people.csv", "\239\187\191Name,OpenID\r\n\"Li, Lei\",oCsv1\r\n\r\n"
      .. "\"Han \"\"Meimei\"\"\",\" oCsv2 \"\r\nagain,oCsv1\r\n")
    how, code = S.run(h, dir, S.send { "--key", "OpenID", stock, dir .. "/people.csv" }, "people")
    assert.same({ "exit", 0 }, { how, code }, sh.read(dir .. "/people.err"))
    local ev = events_of(dir .. "/people.err")
    local sum = ev[#ev]
    assert.same({ 3, 2, 1 }, { sum.rows, sum.sent, sum.duplicates })
    local dup = B.last(ev, "duplicate")
    assert.same({ 3, "oCsv1", 1 }, { dup.row, dup.key, dup.first_row })
    assert.equal(2, S.coupons(h, stock).total)
  end)

  it("is one call for a campaign's send: send.run returns the summary and the exit code", function()
    local dir = sh.tmpdir()
    local stock = S.stock(h, 10)
    local users = S.users(dir .. "/users.csv", 4, "oRun")
    local send = require "quan.send"
    local lines = {}
    local out = { write = function(self, ...) lines[#lines + 1] = table.concat { ... }; return self end,
                  flush = function() end }
    local summary, code = send.run { wx = h.wx, stock_id = stock, users = users, journal = dir .. "/j.db",
                                     appid = h.appid, log_format = "json", out = out }
    assert.equal(0, code)
    assert.equal(4, summary.sent)
    assert.matches("^batch %S+: sent 4; exit 0 %(all done%)$", send.describe(summary))
    local none, ncode, message = send.run { wx = h.wx, stock_id = stock, users = dir .. "/none.csv",
                                            journal = dir .. "/k.db", appid = h.appid, log_format = "json",
                                            out = out }
    assert.is_nil(none)
    assert.equal(batch.exit.cannot_start, ncode)
    assert.matches("none%.csv", message)
    assert.equal(batch.exit.terminated, send.worst(0, 3, batch.exit.terminated, 2))
    assert.equal(batch.exit.cannot_start, send.worst(0, 4, 2, 6))
    assert.equal(batch.exit.failed, send.worst(3, 4, 0, 6))
    assert.equal(0, send.worst())
    assert.has_error(function() send.run { stock_id = stock } end, "send.run: users is required")
    assert.has_error(function() send.run { stock_id = stock, users = users, wat = 1 } end,
      "send.run: unknown option 'wat'")
  end)
end)
