-- quan.serve.store: the notification receiver's store, a SQLite file of the
-- events `quan serve` accepted (docs/notifications.md, "The store").
--
-- Storing is exactly once, handling at least once:
-- - an event is a row keyed by its event `id`, inserted (or, for a repeat,
--   counted) and committed, and its WAL flushed to disk (db:sync), before
--   the receiver answers 200: nothing answered 200 is lost, not even to a
--   power loss;
-- - each handler call is counted (attempts) and committed before it starts;
--   an event is marked handled only once its handler returned, so a handler
--   killed midway runs again for that event.
--
--   store.open(path, {mchid =}) -> store | nil, message, code
--       the receiver's own connection: creates the file (mode 0600) and its
--       schema, holds the lock PATH.lock until close; codes "busy" (another
--       receiver holds it), "mismatch" (another merchant's store, or not a
--       store), "open"
--   store.connect(path) -> store | nil, message, code
--       another connection to an existing store (a worker of the receiver;
--       the list and replay commands): no lock, no schema
--   store.read(path) -> store | nil, message, code: connect, for a store
--       that must exist ("noent" when there is no file)
local M = {}

local sqlite = require "quan.sqlite"
local qos = require "quan.os"
local check = sqlite.check

M.FORMAT = "quan notification store"
M.VERSION = 1

-- how long a write waits for a lock held by another process (a replay, a
-- test holding the file) before the receiver answers 500 and WeChat Pay
-- retries; writers of the receiver itself queue on the process lock
M.BUSY_TIMEOUT = 1000

-- the handler's backoff: the wait after the n-th failed call is
-- FIRST_RETRY * 2^(n-1) seconds, at most the receiver's retry_max
M.FIRST_RETRY = 1
M.RETRY_MAX = 300

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS meta (
  name  TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  seq           INTEGER PRIMARY KEY,   -- arrival order
  id            TEXT NOT NULL UNIQUE,  -- the event id
  event_type    TEXT,                  -- COUPON.USE
  create_time   TEXT,                  -- the event's, as sent (RFC 3339)
  summary       TEXT,
  resource_type TEXT,
  data          TEXT NOT NULL,         -- the decrypted resource, JSON as decrypted
  body          TEXT NOT NULL,         -- the request body as received (resource encrypted)
  headers       TEXT NOT NULL,         -- its Wechatpay-* headers and Request-ID, JSON
  received      REAL NOT NULL,         -- epoch seconds of the first delivery accepted
  deliveries    INTEGER NOT NULL,      -- deliveries accepted (WeChat Pay's retries counted)
  last_delivery REAL NOT NULL,
  attempts      INTEGER NOT NULL DEFAULT 0,  -- handler calls begun
  handled       REAL,                  -- when a handler call returned; NULL: pending
  next_at       REAL,                  -- a pending event's next call, not before
  last_error    TEXT                   -- the last failed call's error
);
CREATE INDEX IF NOT EXISTS events_pending ON events (next_at) WHERE handled IS NULL;
]]

local Store = {}
Store.__index = Store
Store.__name = "quan.serve.store"

-- retry_delay(attempts, max) -> seconds before the next handler call after
-- `attempts` calls failed
function M.retry_delay(attempts, max)
  return math.min(max or M.RETRY_MAX, M.FIRST_RETRY * 2 ^ (attempts - 1))
end

-- reason(err, path) -> err without the path it starts with (the message
-- around it names the path once)
local function reason(err, path)
  err = tostring(err)
  for _, prefix in ipairs { "sqlite open " .. path .. ": ", path .. ": " } do
    if err:sub(1, #prefix) == prefix then return err:sub(#prefix + 1) end
  end
  return err
end

-- file_exists(path) -> boolean
local function file_exists(path)
  return qos.stat(path) ~= nil -- not opened: opening a fifo would wait for a writer
end

-- directory(path) -> the message for a store path that names a folder
-- (SQLite says only "unable to open database file"), else nil
local function directory(path)
  local st = qos.stat(path)
  if st and st.kind == "directory" then return ("store %s is a directory (--store names the store file)"):format(path) end
end

-- make_private(path) -> true | nil, message: creates path empty with mode
-- 0600 when it does not exist (SQLite gives its -wal and -shm files the
-- database's mode)
local function make_private(path)
  if file_exists(path) then return true end
  local f, err = io.open(path, "ab")
  if not f then return nil, err end
  f:close()
  return qos.chmod(path, 384)
end

-- inspect(db, path) -> true | nil, message: an empty file, or a store
local function inspect(db, path)
  local tables = {}
  local ok, err = pcall(function()
    for r in db:rows("SELECT name FROM sqlite_master WHERE type = 'table'") do tables[r.name] = true end
  end)
  if not ok then return nil, ("store %s: %s"):format(path, tostring(err):gsub("^.-sqlite: ", "")) end
  if next(tables) == nil then return true end
  if not (tables.meta and tables.events) then
    return nil, ("store %s is not a quan notification store (it has other tables)"):format(path)
  end
  return true
end

local function load_meta(self)
  local m = {}
  for r in self.db:rows("SELECT name, value FROM meta") do m[r.name] = r.value end
  self.meta = m
end

-- belongs(self, mchid) -> true | nil, message
local function belongs(self, mchid)
  local m = self.meta
  if m.format ~= M.FORMAT then return nil, ("store %s is not a quan notification store"):format(self.path) end
  if tonumber(m.version) ~= M.VERSION then
    return nil, ("store %s has format version %s, this quan reads %d"):format(self.path, tostring(m.version), M.VERSION)
  end
  if mchid and m.mchid ~= mchid then
    return nil, ("store %s holds the events of merchant %s, not %s (the profile's): give another --store"):format(
      self.path, tostring(m.mchid), mchid)
  end
  return true
end

-- open(path, {mchid =}) -> store | nil, message, code
function M.open(path, o)
  if type(path) ~= "string" then error("store.open: path must be a string", 2) end
  if type(o) ~= "table" or type(o.mchid) ~= "string" then error("store.open: expected {mchid =}", 2) end
  local folder = directory(path)
  if folder then return nil, folder, "open" end
  local lockpath = path .. ".lock"
  local lock, lerr, lcode = qos.lock(lockpath)
  if not lock then
    if lcode == "busy" then
      local f = io.open(lockpath, "r")
      local pid = f and f:read("l")
      if f then f:close() end
      return nil, ("store %s is in use by another receiver%s (lock %s)"):format(path,
        pid and pid ~= "" and " (pid " .. pid .. ")" or "", lockpath), "busy"
    end
    return nil, ("store %s cannot be used: its lock %s: %s"):format(path, lockpath, reason(lerr, lockpath)), "open"
  end
  do -- the holder's pid, for the message of a refused second receiver
    local f = io.open(lockpath, "w")
    if f then f:write(qos.getpid(), "\n"); f:close() end
  end
  local made, merr = make_private(path)
  if not made then
    lock:close()
    return nil, ("store %s cannot be made: %s"):format(path, reason(merr, path)), "open"
  end
  local db, err = sqlite.open(path, { synchronous = "full", busy_timeout = M.BUSY_TIMEOUT, process_lock = true })
  if not db then
    lock:close()
    return nil, ("store %s cannot be opened: %s"):format(path, reason(err, path)), "open"
  end
  local ok, why = inspect(db, path)
  local code = ok and "open" or "mismatch"
  if ok then
    ok, why = pcall(function()
      check(db:exec(SCHEMA))
      check(db:transaction(function()
        if not check(db:first("SELECT value FROM meta WHERE name = 'format'")) then
          for _, kv in ipairs { { "format", M.FORMAT }, { "version", tostring(M.VERSION) }, { "mchid", o.mchid },
            { "created", ("%.3f"):format(qos.time()) } } do
            check(db:run("INSERT INTO meta (name, value) VALUES (?, ?)", kv[1], kv[2]))
          end
        end
      end))
    end)
    if not ok then why = ("store %s: %s"):format(path, tostring(why):gsub("^.-sqlite: ", "sqlite: ")) end
  end
  if not ok then
    db:close(); lock:close()
    return nil, why, code
  end
  -- the handler's bookkeeping on this connection is not flushed per commit:
  -- a power loss may make a handled event pending again (at least once)
  check(db:exec("PRAGMA synchronous = NORMAL"))
  local self = setmetatable({ path = path, db = db, lock = lock }, Store)
  load_meta(self)
  local fine, mismatch = belongs(self, o.mchid)
  if not fine then
    self:close()
    return nil, mismatch, "mismatch"
  end
  return self
end

-- connect(path) -> store | nil, message, code: a connection of its own to
-- the store at path; writes commit with synchronous = normal, and put()
-- flushes the WAL itself before it returns
function M.connect(path)
  if type(path) ~= "string" then error("store.connect: path must be a string", 2) end
  local db, err, code = sqlite.open(path, { synchronous = "normal", busy_timeout = M.BUSY_TIMEOUT, process_lock = true })
  if not db then return nil, ("store %s cannot be opened: %s"):format(path, reason(err, path)), code end
  -- checkpoints are the main thread's (store:checkpoint), off the answer path
  check(db:exec("PRAGMA wal_autocheckpoint = 0"))
  return setmetatable({ path = path, db = db }, Store)
end

-- read(path) -> store | nil, message, code: a connection to the existing
-- store at path, checked to be one
function M.read(path)
  if type(path) ~= "string" then error("store.read: path must be a string", 2) end
  local folder = directory(path)
  if folder then return nil, folder, "open" end
  if not file_exists(path) then return nil, ("store %s: no such file"):format(path), "noent" end
  local st = qos.stat(path)
  if st and st.kind == "file" and st.size == 0 then -- made by a receiver that stopped before its first table
    return nil, ("store %s: an empty file"):format(path), "noent"
  end
  local self, err, code = M.connect(path)
  if not self then return nil, err, code end
  local ok, why = inspect(self.db, path)
  if ok then
    ok, why = pcall(load_meta, self)
    if not ok then why = ("store %s is not a quan notification store"):format(path) end
  end
  if ok then ok, why = belongs(self) end
  if not ok then
    self:close()
    return nil, why, "mismatch"
  end
  return self
end

-- ---- the answer path (a worker of the receiver) ----

-- store:put(event, headers, body[, now]) -> "stored" | "repeat", differs |
-- nil, message, code. event: what wx:notification returned (id, the
-- envelope's fields, data); headers: the request's (lower-case names), of
-- which the Wechatpay-* ones and Request-ID are kept; body: the raw body;
-- differs: a repeat whose body is not the stored one's. Returns only once
-- the event is on disk (committed, and the WAL flushed).
local KEPT_HEADERS = { "wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial",
  "wechatpay-signature-type", "request-id" }

function Store:put(event, headers, body, now)
  local db = self.db
  now = now or qos.time()
  local kept = {}
  for _, name in ipairs(KEPT_HEADERS) do kept[name] = headers[name] end
  local json = require "cjson"
  local plain = event.plaintext or json.encode(event.data) -- the decrypted text, when the caller kept it
  local outcome, differs = db:transaction(function()
    local changes = check(db:run([[INSERT INTO events (id, event_type, create_time, summary, resource_type, data, body,
        headers, received, deliveries, last_delivery, next_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (id) DO NOTHING]],
      event.id, event.event_type, event.create_time, event.summary, event.resource_type, plain, body,
      json.encode(kept), now, now, now))
    if changes == 1 then return "stored" end
    local row = check(db:first("SELECT body FROM events WHERE id = ?", event.id))
    check(db:run("UPDATE events SET deliveries = deliveries + 1, last_delivery = ? WHERE id = ?", now, event.id))
    return "repeat", row.body ~= body
  end)
  if not outcome then return nil, differs, db:errcode() end
  -- a repeat waits for the flush too: the first delivery's worker may not
  -- have flushed yet
  local synced, err, code = db:sync()
  if not synced then return nil, err, code end
  return outcome, differs
end

-- store:counts() -> {events, pending, failing, oldest_pending (epoch
-- seconds | nil)}: for the health answer
function Store:counts()
  local db = self.db
  local all = check(db:first("SELECT coalesce(max(seq), 0) AS n FROM events"))
  local p = check(db:first([[SELECT count(*) AS n, sum(attempts > 0) AS failing, min(received) AS oldest
    FROM events WHERE handled IS NULL]]))
  return { events = all.n, pending = p.n, failing = p.failing or 0, oldest_pending = p.oldest }
end

-- ---- the handler's side (the receiver's main thread) ----

-- store:due(now, limit) -> rows of pending events whose next call is due,
-- in arrival order
function Store:due(now, limit)
  local list = {}
  for r in self.db:rows("SELECT * FROM events WHERE handled IS NULL AND next_at <= ? ORDER BY seq LIMIT ?", now, limit) do
    list[#list + 1] = r
  end
  return list
end

-- store:next_due() -> epoch seconds of the earliest pending call | nil
function Store:next_due()
  local r = check(self.db:first("SELECT min(next_at) AS t FROM events WHERE handled IS NULL"))
  return r and r.t
end

-- store:begin_attempt(id, now, lease) -> attempt number: counted and
-- committed before the call; the event is due again `lease` seconds later
-- unless the call ends first (a receiver killed midway calls it again after
-- its restart, which makes every pending event due)
function Store:begin_attempt(id, now, lease)
  local db = self.db
  return check(db:transaction(function()
    check(db:run("UPDATE events SET attempts = attempts + 1, next_at = ? WHERE id = ?", now + lease, id))
    return check(db:first("SELECT attempts FROM events WHERE id = ?", id)).attempts
  end))
end

-- store:handled(id, now): the call returned
function Store:handled(id, now)
  check(self.db:run("UPDATE events SET handled = ?, next_at = NULL, last_error = NULL WHERE id = ?", now, id))
end

-- store:failed(id, at, message): the call failed; the next one at `at`
function Store:failed(id, at, message)
  check(self.db:run("UPDATE events SET next_at = ?, last_error = ? WHERE id = ?", at, message, id))
end

-- store:resume(now) -> events made due now: every pending event, at the
-- receiver's start (a call a killed receiver left under way included)
function Store:resume(now)
  return check(self.db:run("UPDATE events SET next_at = ? WHERE handled IS NULL AND next_at > ?", now, now))
end

-- store:checkpoint(): copies the WAL into the database when no reader is
-- in the way (PASSIVE), so that it does not grow without bound
function Store:checkpoint()
  check(self.db:exec("PRAGMA wal_checkpoint(PASSIVE)"))
end

-- ---- list and replay ----

-- store:list{all = boolean, ids = {id...} | nil} -> rows in arrival order:
-- the pending events, or all of them, or those named
function Store:list(o)
  o = o or {}
  local list = {}
  if o.ids then
    for _, id in ipairs(o.ids) do
      local r = check(self.db:first("SELECT * FROM events WHERE id = ?", id))
      if r then list[#list + 1] = r end
    end
    table.sort(list, function(a, b) return a.seq < b.seq end)
    return list
  end
  local sql = o.all and "SELECT * FROM events ORDER BY seq" or "SELECT * FROM events WHERE handled IS NULL ORDER BY seq"
  for r in self.db:rows(sql) do list[#list + 1] = r end
  return list
end

-- store:replay(ids | nil, now) -> events made due, unknown ids: with ids,
-- those events, handled or not, are pending again and due now; without,
-- every pending event is due now (its backoff skipped)
function Store:replay(ids, now)
  local db = self.db
  return check(db:transaction(function()
    if not ids then
      return check(db:run("UPDATE events SET next_at = ? WHERE handled IS NULL", now)), {}
    end
    local n, unknown = 0, {}
    for _, id in ipairs(ids) do
      local changes = check(db:run("UPDATE events SET handled = NULL, next_at = ? WHERE id = ?", now, id))
      if changes == 0 then unknown[#unknown + 1] = id end
      n = n + changes
    end
    return n, unknown
  end))
end

-- store:close(): closes the database and releases the lock (idempotent)
function Store:close()
  if self.db then self.db:close(); self.db = nil end
  if self.lock then self.lock:close(); self.lock = nil end
end
Store.__close = Store.close
Store.__gc = Store.close

return M
