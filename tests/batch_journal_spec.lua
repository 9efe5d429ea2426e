-- Specs of quan.batch.journal: batch ids (a given one only when the batch
-- continues), claims, the lock on the file itself, export, and files that
-- are not a journal.
local sh = require "tests.support.sh"
local B = require "tests.support.batch"

local csv = require "quan.batch.csv"
local journal = require "quan.batch.journal"

local read_all = B.read_all

describe("quan.batch.journal", function()
  it("records the API's time of an outcome, and gives a journal made before it the column", function()
    local path = sh.tmpdir() .. "/old.journal"
    -- a journal as quan wrote them before items had `answered`
    local db = assert(require("quan.sqlite").open(path))
    assert(db:exec [[
      CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
      CREATE TABLE items (key TEXT PRIMARY KEY, row INTEGER NOT NULL, out_request_no TEXT NOT NULL,
        state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, result TEXT, code TEXT, message TEXT,
        run INTEGER NOT NULL, updated REAL NOT NULL);
      CREATE TABLE runs (id INTEGER PRIMARY KEY, pid INTEGER, started REAL NOT NULL, ended REAL, exit INTEGER,
        summary TEXT);
      INSERT INTO meta VALUES ('version', '1'), ('batch_id', 'b-old');
      INSERT INTO items (key, row, out_request_no, state, attempts, result, run, updated)
        VALUES ('u1', 1, 'n1', 'sent', 1, 'c1', 1, 0);
    ]])
    db:close()
    local j = assert(journal.open(path))
    assert(j:transaction(function()
      j:claim("u2", 2, "n2")
      j:record("u2", "sent", 1, "c2", nil, nil, 1795824000)
      return true
    end))
    j:close()
    local r = assert(journal.open_read(path))
    assert.is_nil(r.db:first("SELECT answered FROM items WHERE key = 'u1'").answered)
    assert.equal(1795824000, r.db:first("SELECT answered FROM items WHERE key = 'u2'").answered)
    -- open_read is read-only: it writes nothing
    local none, _, code = r.db:run("DELETE FROM items")
    assert.is_nil(none)
    assert.equal("readonly", code)
    r:close()
  end)

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
    local j = assert(journal.open(path, { batch_prefix = "b" }))
    local id = j.batch_id
    j:transaction(function()
      for i = 1, 3000 do j:claim(("o%05d"):format(i), i, "n" .. i) end
    end)
    j:close()
    local f = assert(io.open(path, "r+b"))
    f:seek("set", 8192)
    f:write(("\222\173"):rep(2000))
    f:close()
    local j2, err, code = journal.open(path, { batch_id = id })
    assert.is_nil(j2)
    assert.equal("open", code)
    assert.matches("journal .*damaged%.db: ", err)
    assert.not_matches("%.lua:%d+", err)
    -- one line, whatever SQLite found: its first finding and how many more
    local many = dir .. "/many.db"
    j = assert(journal.open(many, { batch_prefix = "b" }))
    id = j.batch_id
    j:transaction(function()
      for i = 1, 3000 do j:claim(("o%05d"):format(i), i, "n" .. i) end
    end)
    j:close()
    local bytes = sh.read(many)
    local spoilt = {}
    for i = 1, #bytes do
      local b = bytes:byte(i)
      spoilt[i] = string.char((i > 4096 and i % 97 == 0) and (b ~ 0x5a) or b)
    end
    sh.write(many, table.concat(spoilt))
    j2, err = journal.open(many, { batch_id = id })
    assert.is_nil(j2)
    assert.matches("^journal .*many%.db: damaged: [^\n]+ %(and %d+ more findings of PRAGMA quick_check%)$", err)
  end)

  it("claims rows once, skips final ones, spots duplicates, and locks", function()
    local dir = sh.tmpdir()
    local path = dir .. "/j.db"
    local j = assert(journal.open(path, { batch_id = "b1", continues = true, meta = { stock_id = "S1" } }))
    assert.equal("b1", j.batch_id)
    assert.is_true(j.created)
    assert.is_true(j.continued)
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

  it("refuses a batch id it does not know, unless the batch continues one begun elsewhere", function()
    local dir = sh.tmpdir()
    local path = dir .. "/new.db"
    local j, err, code = journal.open(path, { batch_id = "night-1", meta = { stock_id = "S1" } })
    assert.is_nil(j)
    assert.equal("unknown_batch", code)
    assert.matches("journal .*new%.db does not know batch night%-1", err)
    assert.matches("%-%-continue", err)
    assert.is_nil(io.open(path), "a refused journal is not left behind")
    -- continued: marked so for good, and its successes are sent_or_held
    j = assert(journal.open(path, { batch_id = "night-1", continues = true, meta = { stock_id = "S1" } }))
    assert.is_true(j.continued)
    j:transaction(function()
      assert.equal("new", j:claim("o1", 1, "n1"))
      j:record("o1", "sent_or_held", 1, "C1")
    end)
    j:close()
    j = assert(journal.open(path, { meta = { stock_id = "S1" } }))
    assert.is_true(j.continued)
    assert.equal("night-1", j.batch_id)
    assert.equal(1, j:counts().sent_or_held)
    j:transaction(function() assert.equal("done", j:claim("o1", 1, "n1")) end)
    j:close()
    -- a journal made without a batch id is not continued
    j = assert(journal.open(dir .. "/own.db", { batch_prefix = "S1" }))
    assert.is_false(j.continued)
    j:close()
  end)

  it("locks the file itself: another path or a symbolic link to it is refused while a run holds it", function()
    local dir = sh.tmpdir()
    local path = dir .. "/j.db"
    local j = assert(journal.open(path, { batch_prefix = "S1" }))
    assert.is_nil(io.open(path .. ".lock"), "no lock file beside the journal")
    assert.is_true(os.execute(("ln -s %s %s"):format(sh.quote(path), sh.quote(dir .. "/link.db"))))
    for _, other in ipairs { dir .. "/link.db", dir .. "/./j.db" } do
      local j2, err, code = journal.open(other)
      assert.is_nil(j2, other)
      assert.equal("busy", code)
      assert.matches("is in use by another run %(pid " .. require("quan.os").getpid() .. "%)", err)
    end
    -- from another process too
    local out = sh.run(sh.quote(sh.quan) .. " -e " .. sh.quote(
      "local j, m, c = require('quan.batch.journal').open('" .. dir .. "/link.db') print(c, m)"))
    assert.matches("^busy\tjournal .*link%.db is in use by another run %(pid %d+%)", out)
    j:close()
    -- free again: the link reaches the same journal
    local again = assert(journal.open(dir .. "/link.db"))
    assert.equal(j.batch_id, again.batch_id)
    assert.is_false(again.created)
    again:close()
    -- a second name (a hard link) would split SQLite's log: refused
    assert.is_true(os.execute(("ln %s %s"):format(sh.quote(path), sh.quote(dir .. "/hard.db"))))
    local bad, err, code = journal.open(path)
    assert.is_nil(bad)
    assert.equal("open", code)
    assert.matches("has 2 names %(hard links%)", err)
  end)
end)
