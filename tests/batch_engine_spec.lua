-- Specs of quan.batch (batch.run and its engine, quan.batch.engine) over a
-- fake scheduler with a virtual clock: sending, retries, stops, Ctrl-C,
-- journal failures, simulated runs, request numbers, progress.
local sh = require "tests.support.sh"
local B = require "tests.support.batch"
local fakeasync = require "tests.support.fakeasync"

local csv = require "quan.batch.csv"
local journal = require "quan.batch.journal"
local batch = require "quan.batch"

local lines, read_all = B.lines, B.read_all
local users_csv, counts_of, api_error, run_fake = B.users_csv, B.counts_of, B.api_error, B.run_fake
local ok = B.ok -- a success answer: coupon C<key>

describe("batch.request_no", function()
  it("is deterministic, within the API's charset and length", function()
    local a = batch.request_no("spring-2027", "oUser1")
    assert.equal(a, batch.request_no("spring-2027", "oUser1"))
    assert.are_not.equal(a, batch.request_no("spring-2027", "oUser2"))
    assert.are_not.equal(a, batch.request_no("spring-2028", "oUser1"))
    local odd = batch.request_no(("批次 #1/" .. ("x"):rep(200)), "o\0weird key,é")
    for _, s in ipairs { a, odd } do
      assert.is_true(#s <= 128)
      assert.is_nil(s:find("[^A-Za-z0-9|_*%-]"))
    end
    assert.equal("spring-2027-" .. require("quan.crypto").sha256("spring-2027\noUser1"):sub(1, 40), a)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() batch.request_no("", "k") end, "batch.request_no: batch_id must be a non-empty string")
    assert.has_error(function() batch.request_no("b", 1) end, "batch.request_no: key must be a string")
  end)
end)

describe("quan.batch engine", function()
  it("retries an answer it cannot read, then counts the row failed: never sent, never a stop", function()
    local dir = sh.tmpdir()
    local input = users_csv(dir, 6)
    local coupons = require "quan.batch.coupons"
    local tries = {}
    local sum, events = run_fake {
      input = input, journal = dir .. "/j.db", batch_prefix = "B", concurrency = 2, result = coupons.coupon_id,
      send = function(item)
        tries[item.key] = (tries[item.key] or 0) + 1
        local bad = ({ o00001 = { coupon_id = { a = 1 } }, o00002 = { x = 1 / 0 }, o00003 = { coupon_id = false },
                       o00004 = { coupon_id = "" } })[item.key]
        if item.key == "o00005" and tries[item.key] == 1 then bad = { coupon_id = 5 } end -- then a good answer
        return { status = 200, json = bad or { coupon_id = "C" .. item.key }, body = "{}" }
      end,
    }
    assert.equal(2, sum.sent)
    assert.equal(4, sum.failed)
    assert.is_nil(sum.stop_reason)
    assert.equal(batch.exit.failed, sum.exit_code)
    assert.equal(4, tries.o00001) -- every attempt of the policy
    assert.equal(2, tries.o00005)
    local failed = 0
    for _, e in ipairs(events) do
      if e.event == "failed" then
        failed = failed + 1
        assert.equal("BAD_ANSWER", e.code)
        assert.matches("no coupon_id in the answer", e.message)
      end
    end
    assert.equal(4, failed)
    local c = counts_of(dir .. "/j.db")
    assert.equal(0, c.in_flight)
    assert.equal(4, c.failed)
    -- the generic engine: a result function that raises or gives a table is the same
    local sum2 = run_fake {
      input = users_csv(sh.tmpdir(), 2), journal = dir .. "/j2.db", batch_prefix = "B2", retry = { attempts = 1 },
      result = function(res) return res.json end,
      send = function() return { status = 200, json = { coupon_id = "X" } } end,
    }
    assert.equal(2, sum2.failed)
  end)

  it("simulated: runs on a throwaway copy, also of an empty journal file, and leaves it as it was", function()
    local dir = sh.tmpdir()
    local input = users_csv(dir, 3)
    sh.write(dir .. "/j.db", "") -- a journal file made, nothing in it yet: a real run would start it
    local sum = run_fake {
      input = input, journal = dir .. "/j.db", batch_prefix = "B", simulated = true,
      send = ok,
    }
    assert.equal(0, sum.exit_code)
    assert.equal(3, sum.sent)
    assert.is_true(sum.simulated)
    assert.equal("", sh.read(dir .. "/j.db"))
    assert.is_nil(io.open(dir .. "/j.db.lock"))
    -- another program's database: refused as a real run refuses it
    local db = assert(require("quan.sqlite").open(dir .. "/other.db"))
    db:exec("CREATE TABLE x (a)")
    db:close()
    local nosum, _, _, err, code = run_fake {
      input = input, journal = dir .. "/other.db", batch_prefix = "B", simulated = true,
      send = function() error("never sent") end,
    }
    assert.is_nil(nosum)
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("not a quan batch journal", err)
  end)

  it("drops the spaces around a key: ' o1 ' is o1 (and a duplicate of it)", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/users.csv", lines { "openid,name", '" o1 ",a', "o1,b", '"\to2",c' })
    local sum, _, calls = run_fake {
      input = dir .. "/users.csv", journal = dir .. "/j.db", batch_prefix = "B",
      send = ok,
    }
    local keys = {}
    for _, c in ipairs(calls) do keys[#keys + 1] = c.key end
    table.sort(keys)
    assert.same({ "o1", "o2" }, keys)
    assert.equal(1, sum.duplicates)
    assert.equal(2, sum.sent)
  end)

  it("stops with JOURNAL (exit 5) when the journal cannot be written mid-run, and a rerun finishes", function()
    local dir = sh.tmpdir()
    users_csv(dir, 5000)
    sh.write(dir .. "/run.lua", [[
      local batch = require "quan.batch"
      local s, err, code = batch.run { input = arg[1], journal = arg[2], batch_prefix = "full", log_format = "json",
        out = io.open(arg[3], "w"), send = function(item) return { status = 200, json = { coupon_id = "C" .. item.key } } end }
      if not s then io.stdout:write("nil ", tostring(err), "\n") os.exit(code) end
      io.stdout:write(s.exit_code, " ", tostring(s.stop_code), " ", tostring(s.stop_reason), "\n")
      os.exit(s.exit_code)
    ]])
    local run = ("%s %s %s %s %s"):format(sh.quote(sh.quan), sh.quote(dir .. "/run.lua"), sh.quote(dir .. "/users.csv"),
      sh.quote(dir .. "/j.db"), sh.quote(dir .. "/events"))
    -- a file size limit stands in for a full disk
    local out, err, code = sh.run("trap '' XFSZ; ulimit -f 300; " .. run)
    assert.equal(batch.exit.stopped, code, out .. err)
    assert.matches("^5 JOURNAL journal: ", out)
    assert.equal("", err) -- no traceback, no unobserved rejections
    -- the summary counts what the journal holds, nothing it could not write
    local events = B.events_of(dir .. "/events")
    local sum = events[#events]
    assert.equal("summary", sum.event)
    local c = counts_of(dir .. "/j.db")
    for _, state in ipairs { "sent", "refused", "failed", "not_attempted", "in_flight" } do
      assert.equal(c[state], sum[state], state)
    end
    assert.same(c, sum.journal_counts)
    assert.is_true(c.sent > 0 and c.sent < 5000)
    assert.equal(5000, sum.sent + sum.in_flight + sum.not_attempted + (sum.unrecorded or 0) + (sum.not_read or 0))
    out, err, code = sh.run(run)
    assert.equal(0, code, out .. err)
    local c = counts_of(dir .. "/j.db")
    assert.equal(5000, c.sent)
    assert.equal(5000, c.total)
  end)

  it("sends every row once, records the refused and goes on", function()
    local dir = sh.tmpdir()
    local input = users_csv(dir, 300)
    local sum, events, calls = run_fake {
      input = input, journal = dir .. "/j.db", batch_prefix = "B", concurrency = 8,
      send = function(item)
        if item.key == "o00007" then return api_error(403, "REQUEST_BLOCKED", "blocked") end
        if item.key == "o00009" then return api_error(403, "USER_AL_GET_COUPON") end
        return ok(item)
      end,
    }
    assert.equal(300, sum.rows)
    assert.equal(298, sum.sent)
    assert.equal(2, sum.refused)
    assert.same({ REQUEST_BLOCKED = 1, USER_AL_GET_COUPON = 1 }, sum.refused_by_code)
    assert.equal(batch.exit.refused, sum.exit_code)
    assert.equal(300, #calls)
    assert.equal("start", events[1].event)
    assert.equal("summary", events[#events].event)
    assert.equal(2, B.count(events, "refused"))
    -- run again: everything is already done, nothing is sent
    local sum2, _, calls2 = run_fake {
      input = input, journal = dir .. "/j.db",
      send = function() error("must not be called") end,
    }
    assert.equal(0, #calls2)
    assert.equal(300, sum2.skipped)
    assert.equal(batch.exit.ok, sum2.exit_code)
  end)

  it("retries transient failures with the same out_request_no, never a 4xx", function()
    local dir = sh.tmpdir()
    local n = {}
    local sum, events, calls = run_fake {
      input = users_csv(dir, 20), journal = dir .. "/j.db", batch_prefix = "B",
      send = function(item)
        n[item.key] = (n[item.key] or 0) + 1
        if item.key == "o00003" and n[item.key] < 3 then return api_error(500, "SYSTEM_ERROR") end
        if item.key == "o00004" and n[item.key] < 2 then return api_error(429, "FREQUENCY_LIMITED") end
        if item.key == "o00005" and n[item.key] < 2 then
          return nil, { kind = "network", code = "recv", message = "connection dropped" }
        end
        if item.key == "o00006" then return api_error(500, "SYSTEM_ERROR") end
        if item.key == "o00008" then return api_error(400, "PARAM_ERROR") end
        return ok(item)
      end,
    }
    assert.equal(3, n.o00003)
    assert.equal(2, n.o00004)
    assert.equal(2, n.o00005)
    assert.equal(4, n.o00006) -- attempts = 4, then failed
    assert.equal(1, n.o00008) -- a business 4xx is never retried
    local orn = {}
    for _, c in ipairs(calls) do
      orn[c.key] = orn[c.key] or c.orn
      assert.equal(orn[c.key], c.orn)
      assert.equal(batch.request_no(sum.batch, c.key), c.orn)
    end
    assert.equal(18, sum.sent)
    assert.equal(1, sum.failed)
    assert.equal(1, sum.refused)
    assert.equal(batch.exit.failed, sum.exit_code)
    assert.equal(2 + 1 + 1 + 3, B.count(events, "retry"))
    -- the failed row is tried again by the next run, with the same number
    local sum2, _, calls2 = run_fake {
      input = dir .. "/users.csv", journal = dir .. "/j.db",
      send = ok,
    }
    assert.equal(1, #calls2)
    assert.equal("o00006", calls2[1].key)
    assert.equal(orn.o00006, calls2[1].orn)
    assert.equal(19, sum2.skipped)
    assert.equal(batch.exit.ok, sum2.exit_code)
  end)

  it("stops the batch on budget exhaustion and marks the rest not attempted", function()
    local dir = sh.tmpdir()
    local sent = 0
    local sum = run_fake {
      input = users_csv(dir, 1000), journal = dir .. "/j.db", concurrency = 4,
      send = function(item)
        if sent >= 100 then return api_error(403, "NOT_ENOUGH", "批次预算不足") end
        sent = sent + 1
        return ok(item)
      end,
    }
    assert.equal(batch.exit.stopped, sum.exit_code)
    assert.equal("NOT_ENOUGH", sum.stop_code)
    assert.equal(100, sum.sent)
    assert.equal(900, sum.not_attempted)
    assert.equal(1000, sum.rows)
    assert.equal(100, sum.journal_counts.sent)
    assert.equal(900, sum.journal_counts.not_attempted)
    assert.equal(1000, sum.journal_counts.total)
    -- budget added: the next run sends the rest and nothing twice
    local sum2, _, calls = run_fake {
      input = dir .. "/users.csv", journal = dir .. "/j.db",
      send = ok,
    }
    assert.equal(900, #calls)
    assert.equal(100, sum2.skipped)
    assert.equal(batch.exit.ok, sum2.exit_code)
  end)

  it("keeps the last error of rows a stopped run hands back unsent", function()
    local dir = sh.tmpdir()
    local input = users_csv(dir, 50)
    local sum = run_fake {
      input = input, journal = dir .. "/j.db", batch_prefix = "B", concurrency = 2,
      retry = { base = 0.01, attempts = 1 },
      send = function() return api_error(500, "SYSTEM_ERROR", "try later") end,
    }
    assert.equal(50, sum.failed)
    -- the next run stops at once: the rows it had read ahead go back unsent
    sum = run_fake {
      input = input, journal = dir .. "/j.db", concurrency = 1,
      send = function() return api_error(403, "NOT_ENOUGH", "批次预算不足") end,
    }
    assert.equal(batch.exit.stopped, sum.exit_code)
    local j = assert(journal.open_read(dir .. "/j.db"))
    local out = dir .. "/out.csv"
    assert.equal(50, j:export(out))
    j:close()
    local failed = 0
    for _, r in ipairs(read_all(assert(csv.open(out)))) do
      if r.state == "failed" then
        failed = failed + 1
        assert.equal("SYSTEM_ERROR", r.code)
        assert.equal("try later", r.message)
      end
    end
    assert.equal(49, failed)
  end)

  it("ends on Ctrl-C with exit 130, and the next run resends what was in flight", function()
    local dir = sh.tmpdir()
    local input = users_csv(dir, 200)
    local sent = 0
    local sum, events = run_fake {
      input = input, journal = dir .. "/j.db", batch_prefix = "B", concurrency = 4,
      send = function(item)
        -- what the host's SIGINT hook raises wherever Lua runs
        if item.key == "o00050" then error(require("quan.os").interrupt, 0) end
        sent = sent + 1
        return ok(item)
      end,
    }
    assert.equal(batch.exit.interrupted, sum.exit_code)
    assert.equal("interrupted", sum.exit_reason)
    assert.equal(130, events[#events].exit_code)
    assert.equal(sent, sum.journal_counts.sent) -- every finished row committed
    assert.is_true(sum.journal_counts.in_flight >= 1) -- o00050 at least: unknown outcome
    -- the next run sends every row not yet sent, o00050 with its own number
    local sum2, _, calls = run_fake {
      input = input, journal = dir .. "/j.db",
      send = ok,
    }
    assert.equal(batch.exit.ok, sum2.exit_code)
    assert.equal(200 - sent, #calls)
    local seen = {}
    for _, c in ipairs(calls) do seen[c.key] = c.orn end
    assert.equal(batch.request_no(sum.batch, "o00050"), seen.o00050)
    assert.equal(200, sum2.journal_counts.sent)
  end)

  it("stops on SIGTERM even when the interrupt lands in code that takes it for an ordinary error", function()
    -- a send whose own pcall swallows whatever is raised in it, the
    -- interrupt too: the signal is still noted, and the run stops on it
    local dir = sh.tmpdir()
    users_csv(dir, 5000)
    local ready = dir .. "/ready"
    local script = sh.write(dir .. "/careless.lua", ([[
      local batch, qos = require "quan.batch", require "quan.os"
      local sent = 0
      local s = batch.run { input = %q, journal = %q, log_format = "json", out = io.open(%q, "w"), concurrency = 4,
        send = function(item)
          pcall(function() local t = qos.now() while qos.now() - t < 0.002 do end end) -- swallows anything
          sent = sent + 1
          if sent == 50 then io.open(%q, "w"):close() end
          return { status = 200, json = { coupon_id = "C" .. item.key } }
        end }
      io.stdout:write(s.exit_code, " ", s.sent, "\n")
      os.exit(s.exit_code)
    ]]):format(dir .. "/users.csv", dir .. "/j.db", dir .. "/events", ready))
    local how, code, out = sh.interrupt(script, ready, "TERM")
    assert.same({ "exit", batch.exit.terminated }, { how, code }, out)
    local sent = tonumber(out:match("^143 (%d+)\n$"))
    assert.is_true(sent ~= nil and sent < 5000, out)
    assert.equal(sent, counts_of(dir .. "/j.db").sent)
  end)

  it("takes an error that only reads like a Ctrl-C for a bug in send: a stop, never exit 130", function()
    local dir = sh.tmpdir()
    for _, raised in ipairs { "interrupted!", "x.lua:1: interrupted!" } do
      local sum = run_fake {
        input = users_csv(dir, 20), journal = dir .. "/j" .. #raised .. ".db", batch_prefix = "B", concurrency = 2,
        send = function(item)
          if item.key == "o00005" then error(raised, 0) end
          return ok(item)
        end,
      }
      assert.equal(batch.exit.stopped, sum.exit_code)
      assert.equal("ERROR", sum.stop_code)
      assert.is_nil(sum.interrupted)
    end
  end)

  it("sends nothing more once a run has ended, when its tasks are resumed later", function()
    -- Ctrl-C at the REPL unwinds batch.run in the main thread; the workers
    -- stay suspended in the event loop, which the next command drives again
    local dir = sh.tmpdir()
    local A = fakeasync.new { virtual = true }
    local calls = 0
    local fired = B.ctrl_c_when(function() return calls >= 10 end)
    local sum = batch.run {
      input = users_csv(dir, 200), journal = dir .. "/j.db", batch_prefix = "B", concurrency = 4,
      async = A, out = B.null_out, log_format = "json", rate = 1e6,
      send = function(item)
        calls = calls + 1
        A.sleep(0.01)
        return ok(item)
      end,
    }
    assert.is_true(fired())
    assert.equal(batch.exit.interrupted, sum.exit_code)
    local before = calls
    A.run() -- the loop runs again: the ended run's tasks wake up
    assert.equal(before, calls)
    -- the next run sends the rest, each row once
    local sum2, _, calls2 = run_fake {
      input = dir .. "/users.csv", journal = dir .. "/j.db",
      send = ok,
    }
    assert.equal(batch.exit.ok, sum2.exit_code)
    assert.equal(200, sum2.journal_counts.sent)
    assert.is_true(#calls2 >= 200 - before)
  end)

  it("sends nothing more once a run has ended, not even a row waking from its backoff", function()
    local dir = sh.tmpdir()
    local A = fakeasync.new { virtual = true }
    local calls = 0
    -- Ctrl-C in the main thread while the only worker waits out o1's backoff
    local fired = B.ctrl_c_when(function() return A.now > 1 end)
    local i, rows = 0, { "o1", "o2" }
    local sum = batch.run {
      input = function() i = i + 1; return rows[i] end, journal = dir .. "/j.db", batch_prefix = "B",
      concurrency = 1, async = A, out = B.null_out, log_format = "json", rate = 1e6,
      retry = { base = 10, attempts = 4 },
      send = function(item)
        calls = calls + 1
        A.sleep(0.01)
        if item.key == "o1" then return api_error(500, "SYSTEM_ERROR") end
        return ok(item)
      end,
    }
    assert.is_true(fired())
    assert.equal(batch.exit.interrupted, sum.exit_code)
    assert.equal(2, calls)
    A.run() -- the worker wakes from the backoff: the run has ended, o1 is not sent
    assert.equal(2, calls)
    assert.equal(1, counts_of(dir .. "/j.db").in_flight) -- o1: sent by the next run, same number
  end)

  it("skips duplicate keys, reporting each, and records rows without a key", function()
    local dir = sh.tmpdir()
    local sum, events, calls = run_fake {
      input = users_csv(dir, 10, { "o00003,again", ",nobody" }), journal = dir .. "/j.db",
      send = ok,
    }
    assert.equal(12, sum.rows)
    assert.equal(10, #calls)
    assert.equal(1, sum.duplicates)
    assert.equal(1, sum.refused_by_code.INVALID_ROW)
    local dup = B.last(events, "duplicate")
    assert.same({ 11, "o00003", 3 }, { dup.row, dup.key, dup.first_row })
  end)

  it("counts a row waiting out its backoff as retrying, with the time of its next try", function()
    -- one worker, two rows: o1 fails and waits 10 s, o2 is sent meanwhile,
    -- then the worker sleeps on o1 (taken out of the backoff set): it still
    -- counts as retrying
    local dir = sh.tmpdir()
    local A = fakeasync.new { virtual = true }
    local engine = require "quan.batch.engine"
    local qos = require "quan.os"
    local i, rows, tries, run = 0, { "o1", "o2" }, 0, nil
    local ticks = {}
    local report = {
      event = function() end, finish = function() end,
      tick = function(_, c)
        ticks[#ticks + 1] = { retrying = c.retrying, next_retry = c.next_retry, in_backoff = run.backoff:count() }
      end,
    }
    local t0 = qos.now()
    run = engine.new({
      input = function() i = i + 1; return rows[i] end, journal = dir .. "/j.db", batch_prefix = "B",
      concurrency = 1, async = A, rate = 1e6,
      retry = { base = 10, attempts = 2, random = function() return 1 end },
      send = function(item)
        A.sleep(0.01)
        if item.key == "o1" then
          tries = tries + 1
          if tries == 1 then return api_error(500, "SYSTEM_ERROR") end
        end
        return ok(item)
      end,
    }, report)
    assert.is_true(run:open())
    local sum = run:execute()
    assert.equal(2, sum.sent)
    local slept_on
    for _, t in ipairs(ticks) do
      if t.retrying == 1 and t.in_backoff == 0 then slept_on = t end
      assert.is_true(t.retrying == 0 or t.next_retry ~= nil, "a retry waiting has its time")
    end
    assert.truthy(slept_on, "the row its worker sleeps on counts as retrying")
    assert.is_true(slept_on.next_retry >= t0 + 10 and slept_on.next_retry <= qos.now() + 10)
    assert.equal(0, ticks[#ticks].retrying)
  end)

  it("takes any iterator and a key function", function()
    local dir = sh.tmpdir()
    local i = 0
    local sum, _, calls = run_fake {
      input = function() i = i + 1; if i <= 5 then return { uid = "u" .. i } end end,
      key = function(rec) return rec.uid end,
      journal = dir .. "/j.db",
      send = ok,
    }
    assert.equal(5, sum.sent)
    assert.equal("u1", calls[1].key)
  end)

  it("refuses what cannot start, with its exit code", function()
    local dir = sh.tmpdir()
    local send = function() return { status = 200 } end
    local sum, _, _, err, code = run_fake { input = dir .. "/none.csv", journal = dir .. "/j.db", send = send }
    assert.is_nil(sum)
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("input .*none.csv", err)
    sum, _, _, err, code = run_fake { input = users_csv(dir, 1), key = "uid", journal = dir .. "/j.db", send = send }
    assert.is_nil(sum)
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("no column 'uid' in the header", err)
    local j = assert(journal.open(dir .. "/held.db"))
    sum, _, _, err, code = run_fake { input = users_csv(dir, 1), journal = dir .. "/held.db", send = send }
    j:close()
    assert.is_nil(sum)
    assert.equal(batch.exit.busy, code)
    assert.matches("in use by another run", err)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() batch.run { input = "x", journal = "j" } end, "batch.run: send must be a function")
    assert.has_error(function() batch.run { input = "x", journal = "j", send = print, wat = 1 } end,
      "batch.run: unknown option 'wat'")
    assert.has_error(function() batch.run { input = "x", journal = "j", send = print, concurrency = 0 } end,
      "batch.run: concurrency must be an integer >= 1")
    assert.has_error(function() batch.run { input = "x", journal = "j", send = print, log_format = "yaml" } end,
      "batch.run: log_format must be 'bar', 'json' or 'text'")
  end)

  it("adds no globals", function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    for _, m in ipairs { "quan.batch", "quan.batch.engine", "quan.batch.input", "quan.batch.recorder",
                         "quan.batch.backoff", "quan.batch.csv", "quan.batch.journal", "quan.batch.progress",
                         "quan.batch.ratelimit", "quan.batch.retry", "quan.batch.coupons", "quan.send" } do
      package.loaded[m] = nil
      require(m)
    end
    for k in pairs(_G) do assert.is_true(before[k], "new global " .. tostring(k)) end
  end)
end)

