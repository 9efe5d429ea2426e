-- Specs of quan.batch: the pure parts (CSV, token bucket, retry policy,
-- request numbers, formatting), the journal, the engine over a fake
-- scheduler, and end to end through the sandbox with faults and kill -9.
local sh = require "tests.support.sh"
local fakeasync = require "tests.support.fakeasync"
local cjson = require "cjson"

local csv = require "quan.batch.csv"
local ratelimit = require "quan.batch.ratelimit"
local retry = require "quan.batch.retry"
local progress = require "quan.batch.progress"
local journal = require "quan.batch.journal"
local batch = require "quan.batch"

local function lines(t) return table.concat(t, "\n") .. "\n" end

local function read_all(r)
  local out = {}
  while true do
    local rec, n = r:read()
    if not rec then
      if n then error(n) end
      return out
    end
    out[#out + 1] = rec
  end
end

describe("quan.batch.csv", function()
  local dir = sh.tmpdir()

  it("reads records by header name, streaming", function()
    local p = sh.write(dir .. "/a.csv", lines { "openid,name", "o1,Ann", "o2,Bob" })
    local r = assert(csv.open(p))
    assert.same({ "openid", "name" }, r.header)
    local rec, n = r:read()
    assert.equal("o1", rec.openid)
    assert.equal("Ann", rec.name)
    assert.equal("o1", rec[1])
    assert.equal(1, n)
    rec, n = r:read()
    assert.equal("Bob", rec.name)
    assert.equal(2, n)
    assert.is_nil(r:read())
    r:close()
  end)

  it("handles quotes, separators, line breaks, CRLF, a BOM and blank lines", function()
    local text = '\239\187\191openid,note\r\n' ..
      'o1,"a, b"\r\n' ..
      '\r\n' ..
      'o2,"say ""hi"""\n' ..
      'o3,"two\nlines"\n' ..
      '"o4",\n' ..
      'o5,""'
    local r = assert(csv.open(sh.write(dir .. "/b.csv", text)))
    local recs = read_all(r)
    assert.equal("openid", r.header[1])
    assert.equal(5, #recs)
    assert.equal("a, b", recs[1].note)
    assert.equal('say "hi"', recs[2].note)
    assert.equal("two\nlines", recs[3].note)
    assert.equal("o4", recs[4].openid)
    assert.equal("", recs[4].note)
    assert.equal("", recs[5].note)
  end)

  it("accepts another separator and no header", function()
    local r = assert(csv.open(sh.write(dir .. "/c.csv", "a;b\nc;d\n"), { sep = ";", header = false }))
    local recs = read_all(r)
    assert.same({ { "a", "b" }, { "c", "d" } }, recs)
  end)

  it("reports malformed input with the line number", function()
    local cases = {
      { 'id\n"open\n', "csv: line 2: unterminated quoted field" },
      { 'id\n"a"b\n', "csv: line 2: unexpected text after a quoted field" },
      { 'id\na"b\n', "csv: line 2: quote inside an unquoted field" },
      { 'id\nx,y\n', "csv: line 2: 2 fields, the header has 1" },
    }
    for i, c in ipairs(cases) do
      local r = assert(csv.open(sh.write(dir .. "/bad" .. i .. ".csv", c[1])))
      local rec, err = r:read()
      assert.is_nil(rec)
      assert.equal(c[2], err)
      r:close()
    end
    local ok, err = csv.open(sh.write(dir .. "/dup.csv", "a,a\n"))
    assert.is_nil(ok)
    assert.equal("csv: header: column 'a' appears twice", err)
    ok, err = csv.open(dir .. "/missing.csv")
    assert.is_nil(ok)
    assert.matches("^csv: .*missing.csv", err)
    ok, err = csv.open(sh.write(dir .. "/empty.csv", ""))
    assert.is_nil(ok)
    assert.equal("csv: no header line", err)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() csv.open(42) end, "csv.open: source must be a path or an open file")
    assert.has_error(function() csv.open(dir .. "/a.csv", { nope = 1 }) end, "csv.open: unknown option 'nope'")
    assert.has_error(function() csv.open(dir .. "/a.csv", { sep = '"' }) end,
      "csv.open: sep must be one character other than a quote or line end")
  end)

  it("counts lines in blocks", function()
    assert.equal(3, csv.count_lines(dir .. "/a.csv"))
    local big = {}
    for i = 1, 20000 do big[i] = "o" .. i end
    sh.write(dir .. "/big.csv", "openid\n" .. table.concat(big, "\n"))
    assert.equal(20001, csv.count_lines(dir .. "/big.csv"))
  end)
end)

describe("quan.batch.ratelimit", function()
  it("allows the burst at once, then spaces tokens 1/rate apart", function()
    local t = 0
    local b = ratelimit.new { rate = 100, burst = 3, clock = function() return t end }
    assert.equal(0, b:take())
    assert.equal(0, b:take())
    assert.equal(0, b:take())
    assert.near(0.01, b:take(), 1e-9)
    assert.near(0.02, b:take(), 1e-9)
    t = 0.02 -- the two reserved tokens are now due; the bucket is at 0
    assert.near(0.01, b:take(), 1e-9)
    t = 10 -- refills to the burst, no more
    for _ = 1, 3 do assert.equal(0, b:take()) end
    assert.is_true(b:take() > 0)
  end)

  it("never exceeds the rate over a long run", function()
    local t = 0
    local b = ratelimit.new { rate = 400, burst = 8, clock = function() return t end }
    local last = 0
    for _ = 1, 4000 do -- callers that always wait what they are told
      local w = b:take()
      last = t + w
    end
    -- 4000 tokens at 400/s with a burst of 8: the last is due at (4000-8)/400 s
    assert.near((4000 - 8) / 400, last, 1e-6)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() ratelimit.new { rate = 0 } end, "ratelimit.new: rate must be a positive number")
    assert.has_error(function() ratelimit.new { rate = 1, burst = 0.5 } end, "ratelimit.new: burst must be a number >= 1")
    assert.has_error(function() ratelimit.new { rate = 1, x = 1 } end, "ratelimit.new: unknown option 'x'")
  end)
end)

describe("quan.batch.retry", function()
  local function E(t) return t end

  it("classifies answers: retry transport, 429, 5xx; never a business 4xx", function()
    local cases = {
      { { status = 200, json = { coupon_id = "1" } }, nil, "ok" },
      { nil, E { kind = "network", code = "timeout", message = "timed out" }, "retry", "timeout" },
      { nil, "connection reset", "retry", "NETWORK" },
      { nil, E { kind = "http", status = 429, code = "FREQUENCY_LIMITED" }, "retry", "FREQUENCY_LIMITED" },
      { nil, E { kind = "http", status = 500, code = "SYSTEM_ERROR" }, "retry", "SYSTEM_ERROR" },
      { nil, E { kind = "http", status = 503 }, "retry", "HTTP_503" },
      { nil, E { kind = "verify", code = "bad_signature", message = "x" }, "retry", "VERIFY" },
      { nil, E { kind = "http", status = 403, code = "REQUEST_BLOCKED" }, "refuse", "REQUEST_BLOCKED" },
      { nil, E { kind = "http", status = 403, code = "USER_AL_GET_COUPON" }, "refuse", "USER_AL_GET_COUPON" },
      { nil, E { kind = "http", status = 403, code = "RULE_LIMIT" }, "refuse", "RULE_LIMIT" },
      { nil, E { kind = "http", status = 400, code = "PARAM_ERROR" }, "refuse", "PARAM_ERROR" },
      { nil, E { kind = "http", status = 400, code = "INVALID_REQUEST", message = "openid与appid不匹配" }, "refuse", "INVALID_REQUEST" },
      { nil, E { kind = "http", status = 400, code = "INVALID_REQUEST",
                 body = '{"code":"INVALID_REQUEST","message":"活动已结束或未激活"}' }, "stop", "INVALID_REQUEST" },
      { nil, E { kind = "http", status = 403, code = "NOT_ENOUGH" }, "stop", "NOT_ENOUGH" },
      { nil, E { kind = "http", status = 404, code = "RESOURCE_NOT_EXISTS" }, "stop", "RESOURCE_NOT_EXISTS" },
      { nil, E { kind = "http", status = 401, code = "SIGN_ERROR" }, "stop", "SIGN_ERROR" },
      -- a 401 stops, whatever its message: quan.http never resends a body,
      -- so a send is never replayed with its nonce (docs/http.md)
      { nil, E { kind = "http", status = 401, code = "SIGN_ERROR",
                 body = '{"code":"SIGN_ERROR","message":"重复的请求 (nonce_str was already used)"}' }, "stop", "SIGN_ERROR" },
      { nil, E { kind = "http", status = 400, code = "INVALID_REQUEST",
                 message = "POST /v3/x: INVALID_REQUEST: the activity has ended or is not activated (stock status paused)" },
        "stop", "INVALID_REQUEST" },
      { nil, E { kind = "config", message = "no key" }, "stop", "CONFIG" },
      { nil, E { kind = "http", status = 403, code = "HTTP_403", message = "<html>denied by proxy</html>" },
        "stop", "HTTP_403" },
      { { status = 404, body = "not found" }, nil, "stop", "HTTP_404" },
      { nil, E { kind = "validation", message = "bad" }, "refuse", "VALIDATION" },
      { { status = 403, json = { code = "NOT_ENOUGH", message = "no budget" } }, nil, "stop", "NOT_ENOUGH" },
    }
    for i, c in ipairs(cases) do
      local action, code = retry.classify(c[1], c[2])
      assert.equal(c[3], action, "case " .. i)
      if c[4] then assert.equal(c[4], code, "case " .. i) end
    end
  end)

  it("backs off exponentially with equal jitter, capped", function()
    local lo = retry.policy { base = 1, factor = 3, max = 30, attempts = 6, random = function() return 0 end }
    local hi = retry.policy { base = 1, factor = 3, max = 30, attempts = 6, random = function() return 1 end }
    local expect = { 1, 3, 9, 27, 30 }
    for failed = 1, 5 do
      assert.near(expect[failed] / 2, lo:delay(failed), 1e-9)
      assert.near(expect[failed], hi:delay(failed), 1e-9)
    end
    assert.is_nil(lo:delay(6)) -- six tries made: no more
    local p = retry.policy { base = 0.01, attempts = 3 }
    for _ = 1, 100 do
      local d = p:delay(1)
      assert.is_true(d >= 0.005 and d <= 0.01)
    end
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() retry.policy { attempts = 0 } end, "retry.policy: attempts must be an integer >= 1")
    assert.has_error(function() retry.policy { base = -1 } end, "retry.policy: base must be a number >= 0")
    assert.has_error(function() retry.policy { wat = 1 } end, "retry.policy: unknown option 'wat'")
  end)
end)

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

describe("quan.batch.progress", function()
  it("formats durations, bars and JSON lines", function()
    assert.equal("0:05", progress.duration(4.6))
    assert.equal("2:03", progress.duration(123))
    assert.equal("1:02:03", progress.duration(3723))
    assert.equal("?", progress.duration(nil))
    assert.equal("?", progress.duration(math.huge))
    local line = progress.bar_line({ done = 250, total = 1000, rate = 400, eta = 1.9, failed = 2 }, 80)
    assert.is_true(#line <= 80)
    assert.matches("25% 250/1000  400/s ETA 0:02 failed 2", line, nil, true)
    assert.matches("^%[#+%.+%]", line)
    assert.matches("%?", progress.bar_line({ done = 5, rate = 1 }, 60))
    assert.equal('{"ts":1,"event":"x","batch":"b","row":2,"key":"k","a":1,"z":"s"}',
      progress.json_line { z = "s", a = 1, key = "k", row = 2, batch = "b", event = "x", ts = 1.0 })
    assert.equal('refused row=3 code=NOT_ENOUGH message="no budget"',
      progress.text_line { event = "refused", row = 3, code = "NOT_ENOUGH", message = "no budget" })
  end)

  it("picks the bar on a terminal and JSON lines elsewhere", function()
    assert.equal("bar", progress.format_for(nil, true))
    assert.equal("json", progress.format_for(nil, false))
    assert.equal("json", progress.format_for("json", true))
    assert.equal("text", progress.format_for("text", false))
  end)

  it("writes a summary that names refusals by code", function()
    local s = progress.summary_text { batch = "b1", rows = 10, sent = 6, skipped = 1, refused = 3,
      refused_by_code = { REQUEST_BLOCKED = 2, USER_AL_GET_COUPON = 1 }, failed = 0,
      not_attempted = 0, elapsed = 2, attempted = 9, exit_code = 3, exit_reason = "some refused" }
    assert.matches("refused %s+3  %(REQUEST_BLOCKED 2, USER_AL_GET_COUPON 1%)", s)
    assert.matches("exit 3 %(some refused%)", s)
  end)
end)

describe("quan.batch.journal", function()
  it("names new batches apart even when math.random repeats itself", function()
    -- two runs started in the same second can share math.random's seed
    local dir = sh.tmpdir()
    local ids = {}
    for i = 1, 2 do
      math.randomseed(42)
      local j = assert(journal.open(dir .. "/n" .. i .. ".db", { batch_prefix = "S1" }))
      ids[i] = j.batch_id
      j:close()
    end
    assert.matches("^S1%-%d+T%d+Z%-%w+$", ids[1])
    assert.not_equal(ids[1], ids[2])
  end)

  it("refuses another program's database and a damaged journal, naming the file", function()
    local dir = sh.tmpdir()
    local sqlite = require "quan.sqlite"
    for name, sql in pairs { foreign = "CREATE TABLE x (a)", items_only = "CREATE TABLE items (key)" } do
      local path = dir .. "/" .. name .. ".db"
      local db = assert(sqlite.open(path))
      db:exec(sql)
      db:close()
      local j, err, code = journal.open(path, { batch_id = "b" })
      assert.is_nil(j)
      assert.equal("open", code)
      assert.matches("journal .*" .. name .. "%.db: not a quan batch journal", err)
      -- and the database is left as it was
      db = assert(sqlite.open(path))
      assert.is_nil(db:first("SELECT name FROM sqlite_master WHERE name = 'runs'"))
      db:close()
    end
    -- a journal with damaged pages
    local path = dir .. "/damaged.db"
    local j = assert(journal.open(path, { batch_id = "b" }))
    j:transaction(function()
      for i = 1, 3000 do j:claim(("o%05d"):format(i), i, "n" .. i) end
    end)
    j:close()
    local f = assert(io.open(path, "r+b"))
    f:seek("set", 8192)
    f:write(("\222\173"):rep(2000))
    f:close()
    local j2, err, code = journal.open(path, { batch_id = "b" })
    assert.is_nil(j2)
    assert.equal("open", code)
    assert.matches("journal .*damaged%.db: ", err)
    assert.not_matches("%.lua:%d+", err)
  end)

  it("claims rows once, skips final ones, spots duplicates, and locks", function()
    local dir = sh.tmpdir()
    local path = dir .. "/j.db"
    local j = assert(journal.open(path, { batch_id = "b1", meta = { stock_id = "S1" } }))
    assert.equal("b1", j.batch_id)
    assert.is_true(j.created)
    -- a second open while this one holds the lock is refused
    local j2, err, code = journal.open(path)
    assert.is_nil(j2)
    assert.equal("busy", code)
    assert.matches("is in use by another run %(pid %d+%)", err)
    j:transaction(function()
      assert.equal("new", j:claim("o1", 1, "r1"))
      assert.equal("new", j:claim("o2", 2, "r2"))
      assert.equal("duplicate", j:claim("o1", 3, "r1"))
      j:record("o1", "sent", 1, "C1")
      j:record("o2", "failed", 3, nil, "SYSTEM_ERROR", "boom")
    end)
    j:close()
    -- another run: o1 is done, o2 comes back with its attempts
    j = assert(journal.open(path, { meta = { stock_id = "S1" } }))
    assert.is_false(j.created)
    assert.equal(2, j.run)
    j:transaction(function()
      assert.equal("done", j:claim("o1", 1, "r1"))
      local what, prior = j:claim("o2", 2, "r2")
      assert.equal("resume", what)
      assert.equal(3, prior.attempts)
      assert.equal("new", j:not_attempted("o3", 3, "r3"))
    end)
    local c = j:counts()
    assert.equal(1, c.sent)
    assert.equal(1, c.in_flight)
    assert.equal(1, c.not_attempted)
    local out = dir .. "/out.csv"
    assert.equal(3, j:export(out))
    local r = assert(csv.open(out))
    local recs = read_all(r)
    assert.equal("C1", recs[1].result)
    assert.equal("r2", recs[2].out_request_no)
    assert.equal("SYSTEM_ERROR", recs[2].code)
    j:close()
    -- the journal belongs to one batch and one stock
    local bad
    bad, err, code = journal.open(path, { batch_id = "other" })
    assert.is_nil(bad)
    assert.equal("mismatch", code)
    assert.matches("belongs to batch b1, not other", err)
    bad, err = journal.open(path, { meta = { stock_id = "S2" } })
    assert.is_nil(bad)
    assert.matches("was made with stock_id=S1, not S2", err)
    -- a name the journal never recorded cannot be checked: refused
    bad, err, code = journal.open(path, { meta = { stock_id = "S1", appid = "wx1" } })
    assert.is_nil(bad)
    assert.equal("mismatch", code)
    assert.matches("was made without appid, refusing appid=wx1", err)
  end)
end)

-- ---- the engine over a fake scheduler ---------------------------------------

local function users_csv(dir, n, extra)
  local t = { "openid,name" }
  for i = 1, n do t[#t + 1] = ("o%05d,user %d"):format(i, i) end
  for _, l in ipairs(extra or {}) do t[#t + 1] = l end
  return sh.write(dir .. "/users.csv", lines(t))
end

local function counts_of(path)
  local j = journal.open_read(path)
  if not j then return nil end
  local ok, c = pcall(j.counts, j)
  j:close()
  return ok and c or nil
end

local function api_error(status, code, message)
  return nil, { kind = "http", status = status, code = code, message = message or code }
end

-- run_fake(opts) -> summary, events, calls: batch.run with a virtual clock
local function run_fake(opts)
  local A = fakeasync.new { virtual = true }
  local events = {}
  local out = {
    write = function(self, ...)
      local s = table.concat({ ... })
      for l in s:gmatch("[^\n]+") do events[#events + 1] = cjson.decode(l) end
      return self
    end,
    flush = function() end,
  }
  local calls = {}
  local send = opts.send
  opts.send = function(item)
    calls[#calls + 1] = { key = item.key, orn = item.out_request_no, attempt = item.attempt }
    A.sleep(0.01)
    return send(item)
  end
  opts.async = A
  opts.out = out
  opts.log_format = "json"
  opts.rate = opts.rate or 1e6
  opts.retry = opts.retry or { base = 0.01, attempts = 4 }
  local sum, err, code = batch.run(opts)
  return sum, events, calls, err, code
end

describe("quan.batch engine", function()
  it("retries an answer it cannot read, then counts the row failed: never sent, never a stop", function()
    local dir = sh.tmpdir()
    local input = users_csv(dir, 6)
    local coupons = require "quan.batch.coupons"
    local tries = {}
    local sum, events = run_fake {
      input = input, journal = dir .. "/j.db", batch_id = "B", concurrency = 2, result = coupons.coupon_id,
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
      input = users_csv(sh.tmpdir(), 2), journal = dir .. "/j2.db", batch_id = "B2", retry = { attempts = 1 },
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
      input = input, journal = dir .. "/j.db", batch_id = "B", simulated = true,
      send = function(item) return { status = 200, json = { coupon_id = "C" .. item.key } } end,
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
      input = input, journal = dir .. "/other.db", batch_id = "B", simulated = true,
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
      input = dir .. "/users.csv", journal = dir .. "/j.db", batch_id = "B",
      send = function(item) return { status = 200, json = { coupon_id = "C" .. item.key } } end,
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
      local s, err, code = batch.run { input = arg[1], journal = arg[2], batch_id = "full", log_format = "json",
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
      input = input, journal = dir .. "/j.db", batch_id = "B", concurrency = 8,
      send = function(item)
        if item.key == "o00007" then return api_error(403, "REQUEST_BLOCKED", "blocked") end
        if item.key == "o00009" then return api_error(403, "USER_AL_GET_COUPON") end
        return { status = 200, json = { coupon_id = "C" .. item.key } }
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
    local refused = 0
    for _, e in ipairs(events) do if e.event == "refused" then refused = refused + 1 end end
    assert.equal(2, refused)
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
      input = users_csv(dir, 20), journal = dir .. "/j.db", batch_id = "B",
      send = function(item)
        n[item.key] = (n[item.key] or 0) + 1
        if item.key == "o00003" and n[item.key] < 3 then return api_error(500, "SYSTEM_ERROR") end
        if item.key == "o00004" and n[item.key] < 2 then return api_error(429, "FREQUENCY_LIMITED") end
        if item.key == "o00005" and n[item.key] < 2 then
          return nil, { kind = "network", code = "recv", message = "connection dropped" }
        end
        if item.key == "o00006" then return api_error(500, "SYSTEM_ERROR") end
        if item.key == "o00008" then return api_error(400, "PARAM_ERROR") end
        return { status = 200, json = { coupon_id = "C" .. item.key } }
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
      assert.equal(batch.request_no("B", c.key), c.orn)
    end
    assert.equal(18, sum.sent)
    assert.equal(1, sum.failed)
    assert.equal(1, sum.refused)
    assert.equal(batch.exit.failed, sum.exit_code)
    local retries = 0
    for _, e in ipairs(events) do if e.event == "retry" then retries = retries + 1 end end
    assert.equal(2 + 1 + 1 + 3, retries)
    -- the failed row is tried again by the next run, with the same number
    local sum2, _, calls2 = run_fake {
      input = dir .. "/users.csv", journal = dir .. "/j.db",
      send = function(item) return { status = 200, json = { coupon_id = "C" .. item.key } } end,
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
        return { status = 200, json = { coupon_id = "C" .. item.key } }
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
      send = function(item) return { status = 200, json = { coupon_id = "C" .. item.key } } end,
    }
    assert.equal(900, #calls)
    assert.equal(100, sum2.skipped)
    assert.equal(batch.exit.ok, sum2.exit_code)
  end)

  it("keeps the last error of rows a stopped run hands back unsent", function()
    local dir = sh.tmpdir()
    local input = users_csv(dir, 50)
    local sum = run_fake {
      input = input, journal = dir .. "/j.db", batch_id = "B", concurrency = 2,
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
      input = input, journal = dir .. "/j.db", batch_id = "B", concurrency = 4,
      send = function(item)
        -- what the host's SIGINT hook raises wherever Lua runs
        if item.key == "o00050" then error(require("quan.os").interrupt, 0) end
        sent = sent + 1
        return { status = 200, json = { coupon_id = "C" .. item.key } }
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
      send = function(item) return { status = 200, json = { coupon_id = "C" .. item.key } } end,
    }
    assert.equal(batch.exit.ok, sum2.exit_code)
    assert.equal(200 - sent, #calls)
    local seen = {}
    for _, c in ipairs(calls) do seen[c.key] = c.orn end
    assert.equal(batch.request_no("B", "o00050"), seen.o00050)
    assert.equal(200, sum2.journal_counts.sent)
  end)

  it("takes an error that only reads like a Ctrl-C for a bug in send: a stop, never exit 130", function()
    local dir = sh.tmpdir()
    for _, raised in ipairs { "interrupted!", "x.lua:1: interrupted!" } do
      local sum = run_fake {
        input = users_csv(dir, 20), journal = dir .. "/j" .. #raised .. ".db", batch_id = "B", concurrency = 2,
        send = function(item)
          if item.key == "o00005" then error(raised, 0) end
          return { status = 200, json = { coupon_id = "C" .. item.key } }
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
    local calls, fired = 0, false
    debug.sethook(function()
      if not fired and calls >= 10 and not coroutine.isyieldable() then
        fired = true
        error(require("quan.os").interrupt, 0)
      end
    end, "", 50)
    local sum = batch.run {
      input = users_csv(dir, 200), journal = dir .. "/j.db", batch_id = "B", concurrency = 4,
      async = A, out = { write = function(self) return self end, flush = function() end },
      log_format = "json", rate = 1e6,
      send = function(item)
        calls = calls + 1
        A.sleep(0.01)
        return { status = 200, json = { coupon_id = "C" .. item.key } }
      end,
    }
    debug.sethook()
    assert.is_true(fired)
    assert.equal(batch.exit.interrupted, sum.exit_code)
    local before = calls
    A.run() -- the loop runs again: the ended run's tasks wake up
    assert.equal(before, calls)
    -- the next run sends the rest, each row once
    local sum2, _, calls2 = run_fake {
      input = dir .. "/users.csv", journal = dir .. "/j.db",
      send = function(item) return { status = 200, json = { coupon_id = "C" .. item.key } } end,
    }
    assert.equal(batch.exit.ok, sum2.exit_code)
    assert.equal(200, sum2.journal_counts.sent)
    assert.is_true(#calls2 >= 200 - before)
  end)

  it("skips duplicate keys and records rows without a key", function()
    local dir = sh.tmpdir()
    local sum, _, calls = run_fake {
      input = users_csv(dir, 10, { "o00003,again", ",nobody" }), journal = dir .. "/j.db",
      send = function(item) return { status = 200, json = { coupon_id = "C" .. item.key } } end,
    }
    assert.equal(12, sum.rows)
    assert.equal(10, #calls)
    assert.equal(1, sum.duplicates)
    assert.equal(1, sum.refused_by_code.INVALID_ROW)
  end)

  it("takes any iterator and a key function", function()
    local dir = sh.tmpdir()
    local i = 0
    local sum, _, calls = run_fake {
      input = function() i = i + 1; if i <= 5 then return { uid = "u" .. i } end end,
      key = function(rec) return rec.uid end,
      journal = dir .. "/j.db",
      send = function(item) return { status = 200, json = { coupon_id = "C" .. item.key } } end,
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
    for _, m in ipairs { "quan.batch", "quan.batch.csv", "quan.batch.journal", "quan.batch.progress",
                         "quan.batch.ratelimit", "quan.batch.retry" } do
      package.loaded[m] = nil
      require(m)
    end
    for k in pairs(_G) do assert.is_true(before[k], "new global " .. tostring(k)) end
  end)
end)

-- ---- end to end: the example script against the sandbox ---------------------

local example = "scripts/examples/send-coupons.lua"

-- spawn_example(h, dir, args, tag) -> pid; stdout and stderr to dir/tag.out|err
local function spawn_example(h, dir, args, tag)
  local qos = require "quan.os"
  local words = {}
  for i, a in ipairs(args) do words[i] = sh.quote(a) end
  local cmd = ("exec env QUAN_CONFIG=%s QUAN_LOG_FORMAT=json %s run %s %s"):format(
    sh.quote(h.config_path), sh.quote(sh.quan), example, table.concat(words, " "))
  return assert(qos.spawn({ "sh", "-c", cmd }, { stdout = dir .. "/" .. tag .. ".out",
                                                 stderr = dir .. "/" .. tag .. ".err" }))
end

local function events_of(path)
  local out = {}
  for line in io.lines(path) do
    local ok, e = pcall(cjson.decode, line)
    if ok and type(e) == "table" then out[#out + 1] = e end
  end
  return out
end

local describe_e2e = describe

describe_e2e("quan.batch through the sandbox", function()
  local qos = require "quan.os"
  local S = require "tests.support.batchsbx"
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
      assert.equal(batch.request_no(j.batch_id, r.key), r.out_request_no)
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
    local stop
    for _, e in ipairs(ev) do if e.event == "stop" then stop = e end end
    assert.equal("NOT_ENOUGH", stop.code)
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
    local how, code = qos.wait(spawn_example(h, dir, { stock, users, dir .. "/night1.db" }, "n1"))
    assert.equal(batch.exit.ok, code)
    -- another night, another batch (a new journal) to the same users
    local more = S.users(dir .. "/more.csv", 30, "oTwice") -- 20 old users, 10 new
    how, code = qos.wait(spawn_example(h, dir, { "--export", dir .. "/n2.csv", stock, more, dir .. "/night2.db" }, "n2"))
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

  it("refuses a stock that is not running, before sending anything", function()
    local dir = sh.tmpdir()
    local stock = S.stock(h, 10)
    assert(h.wx:chain("v3/marketing/favor/stocks/{stock_id}/pause"):post {
      stock_id = stock, json = { stock_creator_mchid = h.wx.mchid } })
    local users = S.users(dir .. "/users.csv", 5, "oPaused")
    local how, code = qos.wait(spawn_example(h, dir, { stock, users, dir .. "/j.db" }, "pre"))
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("not running", sh.read(dir .. "/pre.err"))
    -- without the preflight the first answer stops the batch
    how, code = qos.wait(spawn_example(h, dir, { "--no-preflight", stock, users, dir .. "/j2.db" }, "nopre"))
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
    local function quan(mode, tag, args)
      local words = {}
      for i, a in ipairs(args) do words[i] = sh.quote(a) end
      local how, code = qos.wait(assert(qos.spawn({ "sh", "-c", ("exec env QUAN_CONFIG=%s QUAN_LOG_FORMAT=json %s %s %s %s"):format(
        sh.quote(h.config_path), sh.quote(sh.quan), mode, example, table.concat(words, " ")) },
        { stdout = dir .. "/" .. tag .. ".out", stderr = dir .. "/" .. tag .. ".err" })))
      assert.equal("exit", how)
      return code
    end
    -- before any real run: nothing sent, no journal written
    assert.equal(0, quan("run --dry-run", "dry1", { stock, users, jpath }))
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
    assert.equal(0, quan("run", "real1", { "--batch-id", "dry-test", stock, three, jpath }))
    local before = counts_of(jpath)
    assert.equal(3, before.sent)
    assert.equal(0, quan("run --dry-run", "dry2", { stock, users, jpath }))
    ev = events_of(dir .. "/dry2.err")
    assert.equal(3, ev[#ev].skipped)
    assert.equal(3, ev[#ev].sent)
    assert.same(before, counts_of(jpath))
    assert.equal(3, S.coupons(h, stock).total)
    -- the real run sends to the other 3
    assert.equal(0, quan("run", "real2", { stock, users, jpath }))
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
    local how, code = qos.wait(spawn_example(h, dir, { stock, users, jpath }, "second"))
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

describe("scripts/examples/send-coupons.lua", function()
  it("explains its usage and refuses bad arguments with exit 2", function()
    local out, _, code = sh.run(sh.quote(sh.quan) .. " run scripts/examples/send-coupons.lua --help")
    assert.equal(0, code)
    assert.matches("usage: quan run send%-coupons.lua", out)
    local _, err
    _, err, code = sh.run(sh.quote(sh.quan) .. " run scripts/examples/send-coupons.lua onlyone")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("expected STOCK_ID USERS.csv %[JOURNAL%]", err)
    _, err, code = sh.run(sh.quote(sh.quan) .. " run scripts/examples/send-coupons.lua --rate x S u.csv")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("%-%-rate wants a positive number", err)
    _, err, code = sh.run(sh.quote(sh.quan) .. " run scripts/examples/send-coupons.lua --bogus S u.csv")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("^send%-coupons: unknown option '%-%-bogus'\nusage: quan run send%-coupons.lua", err)
    _, err, code = sh.run(sh.quote(sh.quan) .. " run scripts/examples/send-coupons.lua --log-format yaml S u.csv")
    assert.equal(batch.exit.cannot_start, code)
    assert.matches("%-%-log%-format must be one of bar, json, text, got 'yaml'", err)
  end)
end)

describe("docs/batches.md", function()
  local md = require "tests.support.mdexamples"
  local run = it
  run("runs its example", function()
    md.run("docs/batches.md", 1)
  end)
end)
