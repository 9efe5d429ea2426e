-- quan.sqlite: bound values, cached statements, transactions, lifetimes.
local sqlite = require "quan.sqlite"
local sh = require "tests.support.sh"
local md = require "tests.support.mdexamples"

describe("quan.sqlite", function()
  local db
  before_each(function()
    db = assert(sqlite.open(":memory:"))
    db:exec "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, v REAL, b)"
  end)
  after_each(function() db:close() end)

  it("opens a file in WAL mode and reports a failure of the world", function()
    local path = sh.tmpdir() .. "/x.db"
    local f = assert(sqlite.open(path))
    assert.equal("wal", f:first("PRAGMA journal_mode").journal_mode)
    assert.equal(1, f:first("PRAGMA synchronous").synchronous) -- NORMAL
    f:close()
    local none, msg, code = sqlite.open("/nonexistent/dir/x.db")
    assert.is_nil(none)
    assert.matches("^sqlite open /nonexistent/dir/x.db: ", msg)
    assert.equal("cantopen", code)
    assert.has_error(function() sqlite.open(path, {synchronous = "sometimes"}) end)
    -- a database is a file: a fifo (whose open would wait for a writer) and
    -- a device (which would swallow every write) are refused, untouched
    local fifo = sh.tmpdir() .. "/fifo"
    assert(os.execute("mkfifo " .. sh.quote(fifo)))
    for where, kind in pairs { [fifo] = "fifo", ["/dev/null"] = "character device" } do
      for _, readonly in ipairs { false, true } do
        none, msg, code = sqlite.open(where, { readonly = readonly })
        assert.same({ "sqlite open " .. where .. ": a " .. kind .. ", not a database file", "cantopen" }, { msg, code })
      end
    end
    assert.equal("fifo", require("quan.os").stat(fifo).kind)
  end)

  it("opens a file read-only beside its writer: no file made, nothing written, the writer's commits seen", function()
    local path = sh.tmpdir() .. "/ro.db"
    local none, msg, code = sqlite.open(path, { readonly = true })
    assert.is_nil(none)
    assert.equal("cantopen", code, msg)
    assert.is_nil(io.open(path)) -- not made
    local w = assert(sqlite.open(path))
    w:exec "CREATE TABLE t (x INTEGER)"
    w:run("INSERT INTO t VALUES (1)")
    local r = assert(sqlite.open(path, { readonly = true }))
    assert.equal(1, r:first("SELECT count(*) AS n FROM t").n)
    local changes, why, rcode = r:run("INSERT INTO t VALUES (2)")
    assert.is_nil(changes)
    assert.equal("readonly", rcode, why)
    assert(w:transaction(function() return w:run("INSERT INTO t VALUES (3)") end)) -- the reader holds no lock
    assert.equal(2, r:first("SELECT count(*) AS n FROM t").n)
    assert.equal("wal", r:first("PRAGMA journal_mode").journal_mode)
    r:close()
    w:close()
  end)

  it("round-trips values by type, never interpolating them", function()
    local evil = "x'); DROP TABLE t; --"
    db:run("INSERT INTO t (name, v, b) VALUES (?, ?, ?)", evil, 1.5, true)
    db:run("INSERT INTO t (name, v, b) VALUES (?, ?, ?)", "bytes\0inside", 2, nil)
    local r = db:first("SELECT * FROM t WHERE name = ?", evil)
    assert.equal(evil, r.name)
    assert.equal(1.5, r.v)
    assert.equal(1, r.b)
    assert.equal("integer", math.type(r.id))
    r = db:first("SELECT * FROM t WHERE id = 2")
    assert.equal("bytes\0inside", r.name)
    assert.is_nil(r.b)
    assert.equal(2, db:first("SELECT count(*) AS n FROM t").n)
    assert.has_error(function() db:run("INSERT INTO t (name) VALUES (?)", print) end, "sqlite: cannot bind a function (parameter 1)")
    assert.has_error(function() db:run("INSERT INTO t (name) VALUES (?)", 1, 2) end, "sqlite: 2 values for 1 parameters")
  end)

  it("binds named parameters from a table", function()
    db:run("INSERT INTO t (name, v) VALUES (:name, @v)", {name = "a", v = 3})
    assert.equal(3.0, db:first("SELECT v FROM t WHERE name = $n", {n = "a"}).v)
  end)

  it("returns changes and the last rowid, and a constraint failure with its code", function()
    local changes, rowid = db:run("INSERT INTO t (name) VALUES (?)", "a")
    assert.equal(1, changes)
    assert.equal(1, rowid)
    local none, err, code = db:run("INSERT INTO t (name) VALUES (?)", "a")
    assert.is_nil(none)
    assert.matches("^sqlite: UNIQUE constraint failed: t.name", err)
    assert.equal("constraint", code)
    assert.equal("constraint", db:errcode())
    -- every statement reports it the same way
    none, err, code = db:exec("INSERT INTO t (name) VALUES ('b'); INSERT INTO t (name) VALUES ('a')")
    assert.is_nil(none)
    assert.equal("constraint", code)
    assert.truthy(db:first("SELECT * FROM t WHERE name = 'b'")) -- the statements before it ran
    local ins = db:prepare("INSERT INTO t (name) VALUES (?)")
    none, err, code = ins:run("a")
    assert.is_nil(none)
    assert.matches("^sqlite: UNIQUE constraint failed", err)
    assert.equal("constraint", code)
    none, err, code = ins:bind("a"):step()
    assert.is_nil(none)
    assert.equal("constraint", code)
    assert.equal(1, ins:run("c")) -- usable again
    ins:finalize()
    -- a failure in a row loop raises: the for statement cannot take it
    db:exec "CREATE TABLE u (x INTEGER CHECK (x < 3))"
    local ok, rerr = pcall(function()
      for _ in db:rows("INSERT INTO u VALUES (5) RETURNING x") do end
    end)
    assert.is_false(ok)
    assert.matches("^tests/sqlite_spec.lua:%d+: sqlite: CHECK constraint failed", rerr)
    assert.equal("constraint", db:errcode())
  end)

  it("check raises a returned failure at the caller's line and passes anything else", function()
    local check = sqlite.check
    assert.same({ 1, 2 }, { check(1, 2) })
    assert.is_nil(check(nil))
    assert.same({ n = 2, nil, "no code" }, table.pack(check(nil, "no code"))) -- not a failure: passed on
    local err = { code = "MINE" }
    assert.equal(err, select(2, check(nil, err)))
    local ok, msg = pcall(function() check(db:run("INSERT INTO t (id) VALUES ('x')")) end)
    assert.is_false(ok)
    assert.equal("tests/sqlite_spec.lua:" .. debug.getinfo(1, "l").currentline - 2 .. ": sqlite: datatype mismatch", msg)
  end)

  it("raises for SQL that does not compile, anywhere", function()
    for _, call in ipairs {
      function() db:exec("SELEKT 1") end,
      function() db:exec("SELECT 1; SELEKT 2") end,
      function() db:run("SELEKT 1") end,
      function() db:first("SELECT nope FROM t") end,
      function() db:rows("SELECT * FROM missing") end,
      function() db:prepare("INSERT INTO missing VALUES (1)") end,
    } do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.matches("^tests/sqlite_spec.lua:%d+: sqlite: ", err)
      assert.equal("error", db:errcode())
    end
  end)

  it("iterates rows, and a cached statement survives nested use and break", function()
    for i = 1, 5 do db:run("INSERT INTO t (name) VALUES (?)", "n" .. i) end
    local seen = {}
    for row in db:rows("SELECT name FROM t ORDER BY id") do
      -- the same SQL inside the loop gets its own statement
      local inner = 0
      for _ in db:rows("SELECT name FROM t ORDER BY id") do inner = inner + 1 end
      assert.equal(5, inner)
      seen[#seen + 1] = row.name
      if #seen == 2 then break end
    end
    assert.same({"n1", "n2"}, seen)
    local n = 0
    for _ in db:rows("SELECT name FROM t ORDER BY id") do n = n + 1 end
    assert.equal(5, n)
  end)

  it("commits a transaction, rolls back on error and re-raises the value", function()
    local a, b = db:transaction(function(x)
      db:run("INSERT INTO t (name) VALUES ('in')")
      return x, 2
    end, "ok")
    assert.equal("ok", a)
    assert.equal(2, b)
    assert.is_false(db:in_transaction())
    local marker = {}
    local ok, err = pcall(db.transaction, db, function()
      db:run("INSERT INTO t (name) VALUES ('gone')")
      assert.is_true(db:in_transaction())
      error(marker)
    end)
    assert.is_false(ok)
    assert.equal(marker, err)
    assert.is_nil(db:first("SELECT * FROM t WHERE name = 'gone'"))
    assert.is_false(db:in_transaction())
    -- nested: an inner failure undoes only the inner part
    db:transaction(function()
      db:run("INSERT INTO t (name) VALUES ('outer')")
      pcall(db.transaction, db, function()
        db:run("INSERT INTO t (name) VALUES ('inner')")
        error("no")
      end)
    end)
    assert.truthy(db:first("SELECT * FROM t WHERE name = 'outer'"))
    assert.is_nil(db:first("SELECT * FROM t WHERE name = 'inner'"))
  end)

  it("lets two connections share a file, one writer at a time", function()
    local path = sh.tmpdir() .. "/shared.db"
    local a = assert(sqlite.open(path, {busy_timeout = 100}))
    local b = assert(sqlite.open(path, {busy_timeout = 100}))
    a:exec "CREATE TABLE j (k TEXT PRIMARY KEY)"
    a:exec "BEGIN IMMEDIATE"
    a:run("INSERT INTO j VALUES ('a')")
    local none, err, code = b:run("INSERT INTO j VALUES ('b')")
    assert.is_nil(none)
    assert.matches("locked", err)
    assert.equal("busy", code)
    assert.equal("busy", b:errcode())
    -- a transaction that cannot begin says so, and runs nothing
    local ran = false
    none, err, code = b:transaction(function() ran = true end)
    assert.is_nil(none)
    assert.matches("^sqlite: database is locked", err)
    assert.equal("busy", code)
    assert.is_false(ran)
    assert.equal(0, b:first("SELECT count(*) AS n FROM j").n) -- WAL: readers go on
    a:exec "COMMIT"
    b:run("INSERT INTO j VALUES ('b')")
    assert.equal(2, a:first("SELECT count(*) AS n FROM j").n)
    a:close()
    b:close()
  end)

  it("takes the process-wide writer lock without deadlocking nested databases", function()
    local dir = sh.tmpdir()
    local a = assert(sqlite.open(dir .. "/a.db", {process_lock = true}))
    local b = assert(sqlite.open(dir .. "/b.db", {process_lock = true}))
    a:exec "CREATE TABLE t (k)"
    b:exec "CREATE TABLE t (k)"
    a:transaction(function()
      a:run("INSERT INTO t VALUES (1)")
      b:transaction(function() b:run("INSERT INTO t VALUES (2)") end)
    end)
    assert.is_false(pcall(a.transaction, a, function() error("x") end))
    a:transaction(function() a:run("INSERT INTO t VALUES (3)") end) -- the lock was released
    assert.equal(2, a:first("SELECT count(*) AS n FROM t").n)
    assert.equal(1, b:first("SELECT count(*) AS n FROM t").n)
    a:close()
    b:close()
  end)

  it("prepares statements with bind, step, reset, run and finalize", function()
    local ins = db:prepare("INSERT INTO t (name) VALUES (?)")
    assert.equal(1, ins:run("x"))
    assert.equal(1, ins:run("y"))
    local q = db:prepare("SELECT name FROM t WHERE name > ? ORDER BY name")
    assert.equal("x", q:bind("a"):step().name)
    q:reset()
    assert.equal("x", q:step().name)
    assert.equal("y", q:step().name)
    assert.is_nil(q:step())
    assert.has_error(function() db:prepare("SELECT 1; SELECT 2") end)
    q:finalize()
    q:finalize()
    assert.has_error(function() q:step() end, "sqlite: statement is finalized")
    assert.matches("finalized", tostring(q))
  end)

  it("closes idempotently and finalizes statements with the db", function()
    local d = assert(sqlite.open(":memory:"))
    local st = d:prepare("SELECT 1 AS one")
    assert.equal(1, st:step().one)
    d:close()
    d:close()
    assert.has_error(function() st:step() end, "sqlite: statement is finalized")
    assert.has_error(function() d:exec("SELECT 1") end, "sqlite: database is closed")
    assert.equal("quan.sqlite.db (closed)", tostring(d))
    do
      local e <close> = assert(sqlite.open(":memory:"))
      e:exec("SELECT 1")
    end
    collectgarbage()
  end)

  it("flushes the journal with sync: committed transactions on disk, nothing to flush is success", function()
    local path = sh.tmpdir() .. "/sync.db"
    local file = assert(sqlite.open(path, { synchronous = "normal" }))
    assert.is_true(file:sync()) -- nothing written yet
    file:exec "CREATE TABLE t (k TEXT)"
    assert(file:transaction(function() return file:run("INSERT INTO t VALUES ('a')") end))
    assert.is_true(file:sync())
    file:close()
    assert.error_matches(function() file:sync() end, "database is closed")
    local mem = assert(sqlite.open(":memory:"))
    assert.is_true(mem:sync())
    mem:close()
    for _, suffix in ipairs { "", "-wal", "-shm" } do os.remove(path .. suffix) end
  end)

  it("runs the examples of docs/sqlite.md", function()
    local blocks = md.blocks("docs/sqlite.md")
    assert.is_true(#blocks >= 3)
    for i = 1, #blocks do md.run("docs/sqlite.md", i) end
  end)

  it("adds no globals", function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    package.loaded["quan.sqlite"] = nil
    require "quan.sqlite"
    for k in pairs(_G) do assert.truthy(before[k], k) end
  end)
end)
