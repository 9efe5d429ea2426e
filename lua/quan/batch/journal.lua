-- quan.batch.journal: the durable record of a batch (SQLite, quan.sqlite).
--
-- One row per item key: its out_request_no, its state and the outcome of its
-- last call. The engine writes an item as in_flight (committed) before the
-- first call that may send it and as sent/refused/failed after, so a run
-- killed at any moment resumes from the journal: final items are skipped,
-- the others are sent again with the same out_request_no. Nothing is held in
-- memory: every question is an indexed lookup.
--
-- The journal is what knows a batch: its id is chosen when the journal is
-- made (or given, for a batch that continues one begun elsewhere: then every
-- success is recorded as sent_or_held, since the API answers a repeated
-- out_request_no with the coupon it gave before, saying nothing of it).
--
-- A lock on the journal file itself (flock on the file, not on its name) is
-- held while the journal is open, so two runs of one batch never overlap,
-- whichever path or symbolic link each was given. A file with several names
-- (hard links) is refused: SQLite keeps its write-ahead log beside the name
-- it was opened by, so two names would split the journal.
--
-- Errors: open, open_read, scratch, transaction, counts, finish_run and
-- export return nil, message[, code] when the database fails; the item
-- methods (claim, record, not_attempted), which run inside the caller's
-- transaction, raise the failure, so that the transaction rolls back.
local M = {}

local sqlite = require "quan.sqlite"
local qos = require "quan.os"
local check = sqlite.check

M.VERSION = 1

-- States. Final ones are never sent again by a later run. sent_or_held is
-- the success of a batch that continues a sending begun elsewhere: the
-- coupon may be new or one the user already held.
M.final = { sent = true, sent_or_held = true, refused = true }
M.states = { "in_flight", "sent", "sent_or_held", "refused", "failed", "not_attempted" }

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS meta (
  name  TEXT PRIMARY KEY,
  value TEXT
);
CREATE TABLE IF NOT EXISTS items (
  key            TEXT PRIMARY KEY,      -- the row's key (openid)
  row            INTEGER NOT NULL,      -- data row number in the input (from 1)
  out_request_no TEXT NOT NULL,
  state          TEXT NOT NULL,         -- in_flight|sent|sent_or_held|refused|failed|not_attempted
  attempts       INTEGER NOT NULL DEFAULT 0,  -- calls made, over all runs
  result         TEXT,                  -- what the call returned (coupon_id)
  code           TEXT,                  -- error code of the last failed call
  message        TEXT,
  run            INTEGER NOT NULL,      -- the run that last claimed the item
  updated        REAL NOT NULL,         -- epoch seconds (this machine's clock)
  answered       REAL                   -- the API's time of the answer that decided the
                                        -- item (its Date header), epoch seconds
);
CREATE TABLE IF NOT EXISTS runs (
  id       INTEGER PRIMARY KEY,
  pid      INTEGER,
  started  REAL NOT NULL,
  ended    REAL,
  exit     INTEGER,
  summary  TEXT                         -- JSON
);
]]

local Journal = {}
Journal.__index = Journal

-- The random part comes from the CSPRNG: math.random's seed is the time in
-- seconds and an address, which two runs started in the same second can share
-- (then both batches would send the same out_request_no values).
local function generate_batch_id(prefix)
  local t = os.date("!%Y%m%dT%H%M%SZ")
  return (prefix and prefix .. "-" or "") .. t .. "-" .. require("quan.crypto").nonce(8)
end

local open_opts = { batch_id = true, batch_prefix = true, meta = true, synchronous = true,
                    continues = true }

-- The journals this process holds, by file ("device:inode"): a second open
-- of one of them is refused without opening the file again (closing a
-- second descriptor of a file would drop SQLite's own locks on it).
local held = {}

-- holder(path) -> " (pid N)" of the run holding the journal (the newest run
-- recorded: a run records itself once it holds the lock), or ""
local function holder(path)
  local j = M.open_read(path)
  if not j then return "" end
  local ok, r = pcall(j.db.first, j.db, "SELECT pid FROM runs ORDER BY id DESC LIMIT 1")
  j:close()
  return ok and r and r.pid and (" (pid " .. r.pid .. ")") or ""
end

local function busy(path)
  return nil, ("journal %s is in use by another run%s"):format(path, holder(path)), "busy"
end

-- lock(path) -> lock, identity | nil, message, code: the journal file
-- (made empty when missing, 0600) locked, whatever name it was reached by
local function lock_file(path)
  local st = qos.stat(path)
  if st and held[st.device .. ":" .. st.inode] then return busy(path) end
  local lock, lerr, lcode = qos.lock(path)
  if not lock then
    if lcode == "busy" then return busy(path) end
    return nil, ("journal %s: %s"):format(path, tostring(lerr)), "open"
  end
  st = qos.stat(path)
  if not st or st.kind ~= "file" then
    lock:close()
    return nil, ("journal %s: not a regular file"):format(path), "open"
  end
  if st.links > 1 then
    lock:close()
    return nil, ("journal %s: the file has %d names (hard links): a journal must have one, "
      .. "since SQLite keeps its log beside the name it is opened by"):format(path, st.links), "open"
  end
  return lock, st.device .. ":" .. st.inode
end

-- open(path, opts) -> journal | nil, message, code
-- opts.batch_id: the batch id; a new journal made with it only with
--   opts.continues (refused otherwise, code "unknown_batch": nothing tells
--   whether the id was used before, and the API answers a repeated
--   out_request_no as if it were new); an existing journal must hold it.
--   Without it a new journal gets an id made of batch_prefix, the UTC time
--   and random letters.
-- opts.continues: the batch continues a sending begun elsewhere (a lost
--   journal): a new journal is marked so, and its successes are sent_or_held
--   (journal.continued).
-- opts.meta: {name = string} recorded at creation and checked on reopen
--   (a journal of stock A refuses to run stock B; a journal that lacks a
--   name given here is refused too).
-- opts.synchronous: "normal" (default: survives a killed process) or "full"
--   (also survives a power cut, slower).
-- codes: "busy" (another run holds the journal), "mismatch" (another batch,
--   stock, ...), "unknown_batch", "open".
-- damaged(db) -> nil | "damaged: " and SQLite's first finding, and how many
-- more (a damaged file has dozens, one line each); the campaign state's
-- check too
local function damaged(db)
  local found = {}
  for r in db:rows("PRAGMA quick_check(20)") do
    if r.quick_check ~= "ok" then
      for line in tostring(r.quick_check):gmatch("[^\n]+") do
        if not line:find("^%*%*%* in database") then found[#found + 1] = line end
      end
    end
  end
  if #found == 0 then return nil end
  return "damaged: " .. found[1] .. (#found > 1 and (" (and %d more findings of PRAGMA quick_check)"):format(#found - 1) or "")
end

M.damaged = damaged

function M.open(path, opts)
  opts = opts or {}
  if type(path) ~= "string" then error("journal.open: path must be a string", 2) end
  for k in pairs(opts) do
    if not open_opts[k] then error("journal.open: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local existed = qos.stat(path) ~= nil
  local lock, identity, lcode = lock_file(path)
  if not lock then return nil, identity, lcode end
  local db, err = sqlite.open(path, { synchronous = opts.synchronous or "normal" })
  -- fail(message, code): nothing opened stays open, and a journal file this
  -- call made is removed
  local function fail(message, code)
    if db then db:close() end
    if not existed then
      for _, suffix in ipairs { "-wal", "-shm", "" } do os.remove(path .. suffix) end
    end
    lock:close()
    return nil, message, code
  end
  if not db then return fail("journal " .. path .. ": " .. tostring(err), "open") end
  -- a SQLite file that is not a journal (another program's database) is
  -- refused, never adopted; a damaged one fails here, not in the middle of
  -- a run
  local ok, e = pcall(function()
    local tables = {}
    for r in db:rows("SELECT name FROM sqlite_master WHERE type = 'table'") do tables[r.name] = true end
    if next(tables) ~= nil and not (tables.meta and tables.items and tables.runs) then return "foreign" end
    local damage = damaged(db) -- before anything is written to it
    if damage then error(damage, 0) end
    check(db:exec(SCHEMA))
    -- a journal made before items had `answered` gets the column (NULL in
    -- its rows: quan report counts them under no day)
    local answered = false
    for r in db:rows("PRAGMA table_info(items)") do
      if r.name == "answered" then answered = true end
    end
    if not answered then check(db:exec("ALTER TABLE items ADD COLUMN answered REAL")) end
  end)
  if not ok or e == "foreign" then
    return fail("journal " .. path .. ": " .. (ok and "not a quan batch journal (a database with other tables)"
      or tostring(e)), "open")
  end
  local self = setmetatable({ path = path, db = db, lock = lock, identity = identity }, Journal)
  -- the transaction gives true, or "refused", message, code
  local tok, res, msg, code = pcall(db.transaction, db, function()
    local version = self:get_meta("version")
    if version and tonumber(version) ~= M.VERSION then
      return "refused", ("journal %s has format version %s, this quan writes %d"):format(path, version, M.VERSION),
        "mismatch"
    end
    local stored = self:get_meta("batch_id")
    if stored then
      if opts.batch_id and opts.batch_id ~= stored then
        return "refused", ("journal %s belongs to batch %s, not %s"):format(path, stored, opts.batch_id), "mismatch"
      end
      for k, v in pairs(opts.meta or {}) do
        local was = self:get_meta(k)
        if was == nil then -- unchecked, it could be another stock's journal
          return "refused", ("journal %s was made without %s, refusing %s=%s"):format(path, k, k, tostring(v)),
            "mismatch"
        elseif was ~= tostring(v) then
          return "refused", ("journal %s was made with %s=%s, not %s"):format(path, k, was, tostring(v)), "mismatch"
        end
      end
      self.batch_id = stored
      self.continued = self:get_meta("continues") == "true"
      self.created = false
    else
      if opts.batch_id and not opts.continues then
        return "refused", ("journal %s does not know batch %s: a batch id names one sending, and only its "
          .. "journal knows what was sent (the API answers a repeated out_request_no with the coupon it "
          .. "gave before, as if it were new). "
          .. "For a new sending leave the batch id out; to continue batch %s begun with another "
          .. "journal, say so (--continue): its rows are then reported as sent or already held")
          :format(path, opts.batch_id, opts.batch_id), "unknown_batch"
      end
      self.batch_id = opts.batch_id or generate_batch_id(opts.batch_prefix)
      self.continued = opts.batch_id ~= nil
      check(db:run("INSERT INTO meta(name, value) VALUES ('version', ?), ('batch_id', ?), ('created', ?)",
                   tostring(M.VERSION), self.batch_id, ("%.3f"):format(qos.time())))
      if self.continued then
        check(db:run("INSERT INTO meta(name, value) VALUES ('continues', 'true')"))
      end
      for k, v in pairs(opts.meta or {}) do
        check(db:run("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", k, tostring(v)))
      end
      self.created = true
    end
    local _, id = check(db:run("INSERT INTO runs(pid, started) VALUES (?, ?)", qos.getpid(), qos.time()))
    self.run = id
    return true
  end)
  if not tok or not res then -- raised, or the transaction could not begin or commit
    return fail("journal " .. path .. ": " .. tostring(tok and msg or res), "open")
  end
  if res == "refused" then return fail(msg, code) end
  held[identity] = true
  return self
end

-- open_read(path) -> journal | nil, message
-- Opens an existing journal to read it (export, inspection): read-only, no
-- lock, no new run; safe while a run is writing it (WAL readers do not
-- block).
function M.open_read(path)
  if type(path) ~= "string" then error("journal.open_read: path must be a string", 2) end
  local f = io.open(path, "rb")
  if not f then return nil, "journal " .. path .. ": no such file" end
  f:close()
  local db, err = sqlite.open(path, { readonly = true })
  if not db then return nil, "journal " .. path .. ": " .. tostring(err) end
  local self = setmetatable({ path = path, db = db }, Journal)
  local ok, id = pcall(self.get_meta, self, "batch_id")
  if not ok or not id then
    db:close()
    return nil, "journal " .. path .. ": not a batch journal"
  end
  self.batch_id = id
  return self
end

-- scratch(path) -> {path, remove = fn} | nil, message: a throwaway copy of
-- the journal at path (a fresh one when there is no file yet), for a run
-- that only pretends to send (a dry run, `quan check`); the real journal is
-- read, never written. The copy lives in $TMPDIR (else /tmp); remove() (also
-- its __close) deletes it. Whether the copy is a usable journal, open()
-- decides, as for the real file.
local Scratch = {}
Scratch.__index = Scratch
function Scratch:remove()
  for _, suffix in ipairs { "-wal", "-shm", "" } do os.remove(self.path .. suffix) end
  os.remove(self.dir)
end
Scratch.__close = Scratch.remove

function M.scratch(path)
  if type(path) ~= "string" then error("journal.scratch: path must be a string", 2) end
  local tmp = os.getenv("TMPDIR")
  local dir, derr = qos.mkdtemp((tmp and tmp ~= "" and tmp or "/tmp") .. "/quan-journal.")
  if not dir then return nil, "journal " .. path .. ": no scratch copy: " .. tostring(derr) end
  local self = setmetatable({ dir = dir, path = dir .. "/journal" }, Scratch)
  local f = io.open(path, "rb")
  local size = f and f:seek("end")
  if f then f:close() end
  if size and size > 0 then
    local db, err = sqlite.open(path)
    local ok, e = db ~= nil, err
    if db then
      ok, e = db:run("VACUUM INTO ?", self.path)
      db:close()
    end
    if not ok then
      self:remove()
      return nil, "journal " .. path .. ": no scratch copy: " .. tostring(e)
    end
  end
  return self
end

-- journal:get_meta(name) -> string | nil; raises a failure
function Journal:get_meta(name)
  local r = check(self.db:first("SELECT value FROM meta WHERE name = ?", name))
  return r and r.value
end

-- journal:transaction(fn, ...) -> fn's results, in one transaction | nil,
-- message, code when it cannot begin or commit (a failure fn raises rolls
-- it back and is raised again)
function Journal:transaction(fn, ...)
  return self.db:transaction(fn, ...)
end

-- journal:claim(key, row, out_request_no) -> what, item ({state, run, row,
--   attempts, out_request_no, code, message} of a key seen before: a row
--   seen before keeps the out_request_no recorded for it)
-- Decides what to do with an input row, inside the caller's transaction:
--   "new"        first time seen: recorded in_flight, to send
--   "resume"     seen by an earlier run, not final: in_flight again, to send
--                (item.attempts > 0 or state in_flight: it may have been sent)
--   "done"       final in an earlier run: skip
--   "duplicate"  the key already came up in this run: skip
function Journal:claim(key, row, orn)
  local db, run, now = self.db, self.run, qos.time()
  local changes = check(db:run([[INSERT INTO items(key, row, out_request_no, state, run, updated)
    VALUES (?, ?, ?, 'in_flight', ?, ?) ON CONFLICT(key) DO NOTHING]], key, row, orn, run, now))
  if changes == 1 then return "new" end
  local item = check(db:first("SELECT state, run, row, attempts, out_request_no, code, message FROM items WHERE key = ?", key))
  if item.run == run then return "duplicate", item end
  if M.final[item.state] then return "done", item end
  check(db:run("UPDATE items SET state = 'in_flight', row = ?, run = ?, updated = ? WHERE key = ?",
               row, run, now, key))
  return "resume", item
end

-- journal:record(key, state, attempts, result, code, message[, answered])
-- The outcome of an item (inside the caller's transaction); answered: the
-- API's time of the answer that decided it (epoch seconds), when one did.
function Journal:record(key, state, attempts, result, code, message, answered)
  check(self.db:run([[UPDATE items SET state = ?, attempts = attempts + ?, result = coalesce(?, result),
    code = ?, message = ?, updated = ?, answered = coalesce(?, answered) WHERE key = ?]],
    state, attempts, result, code, message, qos.time(), answered, key))
end

-- journal:not_attempted(key, row, out_request_no) -> what, state
-- Marks a row the stopped batch did not reach: a new key is recorded as
-- not_attempted; a key an earlier run did not finish keeps its state (one
-- left in flight has an outcome unknown until it is sent again). Returns
-- "new", "kept" (with the state kept), "done" or "duplicate".
function Journal:not_attempted(key, row, orn)
  local db, run = self.db, self.run
  local changes = check(db:run([[INSERT INTO items(key, row, out_request_no, state, run, updated)
    VALUES (?, ?, ?, 'not_attempted', ?, ?) ON CONFLICT(key) DO NOTHING]], key, row, orn, run, qos.time()))
  if changes == 1 then return "new" end
  local item = check(db:first("SELECT state, run FROM items WHERE key = ?", key))
  if item.run == run then return "duplicate" end
  if M.final[item.state] then return "done" end
  check(db:run("UPDATE items SET run = ? WHERE key = ?", run, key))
  return "kept", item.state
end

-- journal:counts() -> {state = n, ...; total = n} | nil, message
function Journal:counts()
  local c = { total = 0 }
  for _, s in ipairs(M.states) do c[s] = 0 end
  local ok, err = pcall(function()
    for r in self.db:rows("SELECT state, count(*) AS n FROM items GROUP BY state") do
      c[r.state] = r.n
      c.total = c.total + r.n
    end
  end)
  if not ok then
    if qos.is_interrupt(err) then error(err, 0) end
    return nil, tostring(err)
  end
  return c
end

-- journal:finish_run(exit_code, summary_json) -> true | nil, message, code
function Journal:finish_run(code, summary)
  local changes, err, ecode = self.db:run("UPDATE runs SET ended = ?, exit = ?, summary = ? WHERE id = ?",
                                          qos.time(), code, summary, self.run)
  if not changes then return nil, err, ecode end
  return true
end

local function csv_field(v)
  if v == nil then return "" end
  v = tostring(v)
  if v:find('[",\r\n]') then return '"' .. v:gsub('"', '""') .. '"' end
  return v
end

M.export_columns = { "row", "key", "state", "out_request_no", "result", "code", "message",
                     "attempts", "updated" }

-- journal:export(out) -> rows written; out is a path or an open file.
-- Writes every item as CSV (header first), in input order.
function Journal:export(out)
  local f, owned = out, false
  if type(out) == "string" then
    local err
    f, err = io.open(out, "wb")
    if not f then return nil, "export: " .. err end
    owned = true
  end
  local cols = M.export_columns
  f:write(table.concat(cols, ","), "\n")
  local n = 0
  for r in self.db:rows("SELECT * FROM items ORDER BY row, key") do
    local fields = {}
    for i, c in ipairs(cols) do
      local v = r[c]
      if c == "updated" and v then v = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(v)) end
      fields[i] = csv_field(v)
    end
    f:write(table.concat(fields, ","), "\n")
    n = n + 1
  end
  if owned then f:close() end
  return n
end

-- journal:close(): closes the database, then releases the lock (idempotent)
function Journal:close()
  if self.db then
    self.db:close()
    self.db = nil
  end
  if self.lock then
    self.lock:close()
    self.lock = nil
    held[self.identity] = nil
  end
end

Journal.__close = Journal.close
Journal.__gc = Journal.close

return M
