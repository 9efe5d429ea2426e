-- quan.campaign.state: what quan apply did for a campaign, in a SQLite file
-- beside it (CAMPAIGN.state, or --state PATH): each stock key's stock_id and
-- the steps taken, each recorded before its call and after its answer. It
-- holds no secret: the merchant id, the API's address, request bodies and
-- stock ids. The format is documented in docs/campaigns.md ("The state").
--
--   state.open(path, {campaign =, mchid =, api =}) -> state | nil, message, code
--       for apply: creates the file, holds its lock (PATH.lock) until close;
--       codes "busy" (another apply holds it), "mismatch" (another campaign,
--       merchant or API), "open"
--   state.read(path [, expect]) -> state | false (no file) | nil, message, code
--       for plan and check: no lock, nothing written
--   state.api_of(base_url) -> the API's identity recorded in the state
--   state:record_store(name, path) -> where quan serve keeps a store
local M = {}

local sqlite = require "quan.sqlite"
local qos = require "quan.os"

-- a statement that fails to run (busy past the timeout, a full disk, a
-- damaged file) raises "sqlite: ...": the state cannot be trusted past it,
-- and apply stops there (what was recorded stays recorded)
local check = sqlite.check

M.VERSION = 1
M.FORMAT = "quan campaign state"

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS meta (
  name  TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stocks (
  key            TEXT PRIMARY KEY,   -- the stock's key in the campaign
  out_request_no TEXT NOT NULL,      -- of its create request
  stock_id       TEXT,               -- NULL: a create was started, its answer is not recorded
  request        TEXT,               -- the create-stock body sent (JSON, keys sorted)
  origin         TEXT NOT NULL,      -- created | found (matched by reading) | declared (stock_id in the file)
  status         TEXT,               -- the status last read or set
  updated        REAL NOT NULL       -- epoch seconds
);
CREATE TABLE IF NOT EXISTS runs (
  id       INTEGER PRIMARY KEY,
  pid      INTEGER NOT NULL,
  command  TEXT NOT NULL,            -- apply
  started  REAL NOT NULL,
  ended    REAL,
  exit     INTEGER,
  summary  TEXT                      -- JSON
);
CREATE TABLE IF NOT EXISTS steps (
  id       INTEGER PRIMARY KEY,
  run      INTEGER NOT NULL REFERENCES runs (id),
  key      TEXT NOT NULL,
  action   TEXT NOT NULL,            -- create | start | pause | restart | record
  state    TEXT NOT NULL,            -- started | done | failed | interrupted
  stock_id TEXT,
  request  TEXT,                     -- the body sent
  answer   TEXT,                     -- the answer (JSON) or what went wrong
  started  REAL NOT NULL,
  ended    REAL
);
CREATE TABLE IF NOT EXISTS journals (
  send     TEXT PRIMARY KEY,         -- a send's name in the campaign (quan send)
  stock    TEXT NOT NULL,            -- the stock's key
  path     TEXT NOT NULL,            -- its batch journal
  batch_id TEXT,
  created  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stores (
  name     TEXT PRIMARY KEY,         -- a notification receiver's store (quan serve)
  path     TEXT NOT NULL,
  created  REAL NOT NULL
);
]]

M.SCHEMA = SCHEMA -- the tables of a state (docs/campaigns.md), as an apply makes them before its first record

local TABLES = { "meta", "stocks", "runs", "steps", "journals", "stores" }

-- api_of(base_url) -> the API a state belongs to: the base URL, without the
-- port for a loopback host (a sandbox listens on a new port at every start;
-- its merchant id tells one sandbox from another)
function M.api_of(base)
  local host = base:match("^https?://%[?([^/%]]+)")
  local h = host and host:match("^([^:]+)") or host
  if h and (h == "localhost" or h:find("^127%.") or h == "::1") then
    return (base:gsub("^(https?://[^/]-):%d+", "%1"))
  end
  return base
end

local State = {}
State.__index = State

-- damaged(db) -> nil | "damaged: ..." (as a journal's)
local damaged = require("quan.batch.journal").damaged

-- inspect(db, path) -> true | nil, message: a file with tables of another
-- kind is refused, a damaged one too
local function inspect(db, path)
  local ok, e = pcall(function()
    local tables = {}
    for r in db:rows("SELECT name FROM sqlite_master WHERE type = 'table'") do tables[r.name] = true end
    if next(tables) ~= nil then
      for _, t in ipairs(TABLES) do
        if not tables[t] then return "foreign" end
      end
    end
    local damage = damaged(db)
    if damage then error(damage, 0) end
  end)
  if not ok then return nil, "state " .. path .. ": " .. tostring(e) end
  if e == "foreign" then return nil, "state " .. path .. ": not a quan campaign state (a database with other tables)" end
  return true
end

local function get_meta(db, name)
  local r = check(db:first("SELECT value FROM meta WHERE name = ?", name))
  return r and r.value
end

-- belongs(self, expect) -> true | nil, message: the state is of this
-- campaign, merchant and API
local function belongs(self, expect)
  local m = self.meta
  if m.format ~= M.FORMAT then return nil, ("state %s: not a quan campaign state"):format(self.path) end
  if tonumber(m.version) ~= M.VERSION then
    return nil, ("state %s has format version %s, this quan reads %d"):format(self.path, tostring(m.version), M.VERSION)
  end
  for _, k in ipairs { "campaign", "mchid", "api" } do
    if expect[k] ~= nil and m[k] ~= expect[k] then
      local what = { campaign = "campaign", mchid = "merchant", api = "API" }
      return nil, ("state %s belongs to %s %s, not %s %s: it is another campaign's, or another profile's "
        .. "(use --state for a state of this one; stocks that exist are found again by reading)"):format(
        self.path, what[k], m[k], what[k], expect[k])
    end
  end
  return true
end

local function load_meta(self)
  local m = {}
  for r in self.db:rows("SELECT name, value FROM meta") do m[r.name] = r.value end
  self.meta = m
end

local function exists(path)
  return qos.stat(path) ~= nil -- not opened: opening a fifo would wait for a writer
end

-- not_a_file(path) -> the message for a path that names a directory (SQLite
-- would say only "unable to open database file"), else nil
local function not_a_file(path)
  local st = qos.stat(path)
  if st and st.kind == "directory" then
    return ("state %s: is a directory (--state names the state file)"):format(path)
  end
end

-- open(path, expect) -> state | nil, message, code (see above)
function M.open(path, expect)
  if type(path) ~= "string" then error("state.open: path must be a string", 2) end
  if type(expect) ~= "table" or not (expect.campaign and expect.mchid and expect.api) then
    error("state.open: expect {campaign =, mchid =, api =}", 2)
  end
  local dir = not_a_file(path)
  if dir then return nil, dir, "open" end
  local lockpath = path .. ".lock"
  local lock, lerr, lcode = qos.lock(lockpath)
  if not lock then
    if lcode == "busy" then
      local f = io.open(lockpath, "r")
      local pid = f and f:read("l")
      if f then f:close() end
      return nil, ("state %s is in use by another apply%s (lock %s)"):format(
        path, pid and pid ~= "" and " (pid " .. pid .. ")" or "", lockpath), "busy"
    end
    return nil, ("state %s: lock %s: %s"):format(path, lockpath, tostring(lerr)), "open"
  end
  do -- the holder's pid, for the message of a refused second apply
    local f = io.open(lockpath, "w")
    if f then f:write(qos.getpid(), "\n"); f:close() end
  end
  local db, err = sqlite.open(path, { synchronous = "normal" })
  if not db then
    lock:close()
    return nil, "state " .. path .. ": " .. tostring(err), "open"
  end
  local ok, cerr = inspect(db, path)
  if ok then
    ok, cerr = pcall(function()
      check(db:exec(SCHEMA))
      check(db:transaction(function()
        if get_meta(db, "format") == nil then
          for _, kv in ipairs {
            { "format", M.FORMAT }, { "version", tostring(M.VERSION) }, { "campaign", expect.campaign },
            { "mchid", expect.mchid }, { "api", expect.api }, { "created", ("%.3f"):format(qos.time()) },
          } do
            check(db:run("INSERT INTO meta (name, value) VALUES (?, ?)", kv[1], kv[2]))
          end
        end
      end))
    end)
    if not ok then cerr = "state " .. path .. ": " .. tostring(cerr) end
  end
  if not ok then
    db:close(); lock:close()
    return nil, cerr, "open"
  end
  local self = setmetatable({ path = path, db = db, lock = lock, writable = true }, State)
  load_meta(self)
  local fine, why = belongs(self, expect)
  if not fine then
    self:close()
    return nil, why, "mismatch"
  end
  return self
end

-- absent(path) -> true when no state is there: no file, or an empty one
-- (no state yet: opening it would write a header)
function M.absent(path)
  if not exists(path) then return true end
  local st = qos.stat(path)
  return st ~= nil and st.kind == "file" and st.size == 0
end

-- read(path [, expect]) -> state | false when there is no file | nil, message, code
function M.read(path, expect)
  if type(path) ~= "string" then error("state.read: path must be a string", 2) end
  local dir = not_a_file(path)
  if dir then return nil, dir, "open" end
  if M.absent(path) then return false end
  local db, err = sqlite.open(path)
  if not db then return nil, "state " .. path .. ": " .. tostring(err), "open" end
  local ok, cerr = inspect(db, path)
  if not ok then db:close() return nil, cerr, "open" end
  local self = setmetatable({ path = path, db = db }, State)
  local mok, merr = true, nil
  if db:first("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'") then
    mok, merr = pcall(load_meta, self)
  else
    self.meta = {} -- an empty file, or one an apply made and stopped before its schema
  end
  if not mok then
    db:close()
    return nil, "state " .. path .. ": " .. tostring(merr), "open"
  end
  if next(self.meta) == nil then -- made by an apply that stopped at once: nothing in it yet, nobody's
    self.meta = { format = M.FORMAT, version = tostring(M.VERSION) }
    for _, k in ipairs { "campaign", "mchid", "api" } do self.meta[k] = expect and expect[k] end
  end
  local fine, why = belongs(self, expect or {})
  if not fine then
    db:close()
    return nil, why, "mismatch"
  end
  return self
end

-- state:records() -> { key -> {key, out_request_no, stock_id, request, origin, status, updated} }
function State:records()
  local t = {}
  for r in self.db:rows("SELECT * FROM stocks ORDER BY key") do t[r.key] = r end
  return t
end

-- state:begin_run(command) -> run id; steps an earlier apply left started
-- (killed meanwhile) become interrupted
function State:begin_run(command)
  return check(self.db:transaction(function()
    check(self.db:run("UPDATE steps SET state = 'interrupted', ended = ? WHERE state = 'started'", qos.time()))
    local _, id = check(self.db:run("INSERT INTO runs (pid, command, started) VALUES (?, ?, ?)", qos.getpid(), command,
      qos.time()))
    self.run = id
    return id
  end))
end

-- state:end_run(exit, summary_json)
function State:end_run(code, summary)
  check(self.db:run("UPDATE runs SET ended = ?, exit = ?, summary = ? WHERE id = ?", qos.time(), code, summary, self.run))
end

-- state:begin_step(key, action, fields) -> step id, committed before the
-- call it announces. fields: stock_id, request (JSON text), and for a
-- create out_request_no (the key's record is made or updated with it, its
-- stock_id left as it was)
function State:begin_step(key, action, f)
  return check(self.db:transaction(function()
    local now = qos.time()
    if action == "create" then
      check(self.db:run([[INSERT INTO stocks (key, out_request_no, stock_id, request, origin, status, updated)
        VALUES (?, ?, NULL, ?, 'created', NULL, ?)
        ON CONFLICT (key) DO UPDATE SET out_request_no = excluded.out_request_no, request = excluded.request,
          updated = excluded.updated]], key, f.out_request_no, f.request, now))
    end
    local _, id = check(self.db:run([[INSERT INTO steps (run, key, action, state, stock_id, request, started)
      VALUES (?, ?, ?, 'started', ?, ?, ?)]], self.run, key, action, f.stock_id, f.request, now))
    return id
  end))
end

-- state:end_step(id, outcome, answer, record) — outcome "done" | "failed";
-- record (optional): {key =, stock_id =, status =, origin =, out_request_no =,
-- request =} written to the key's record in the same transaction
function State:end_step(id, outcome, answer, record)
  check(self.db:transaction(function()
    local now = qos.time()
    check(self.db:run("UPDATE steps SET state = ?, answer = ?, ended = ?, stock_id = coalesce(?, stock_id) WHERE id = ?",
      outcome, answer, now, record and record.stock_id, id))
    if record then self:put(record, now) end
  end))
end

-- state:put(record [, now]): writes a key's record (inside or outside a
-- transaction); fields left nil keep their value; a new record needs its
-- out_request_no
function State:put(r, now)
  local args = { key = r.key, out_request_no = r.out_request_no, stock_id = r.stock_id, request = r.request,
    origin = r.origin, status = r.status, now = now or qos.time() }
  local changes = check(self.db:run([[UPDATE stocks SET
      out_request_no = coalesce(:out_request_no, out_request_no), stock_id = coalesce(:stock_id, stock_id),
      request = coalesce(:request, request), origin = coalesce(:origin, origin),
      status = coalesce(:status, status), updated = :now WHERE key = :key]], args))
  if changes == 0 then
    check(self.db:run([[INSERT INTO stocks (key, out_request_no, stock_id, request, origin, status, updated)
      VALUES (:key, :out_request_no, :stock_id, :request, coalesce(:origin, 'created'), :status, :now)]], args))
  end
end

-- state:record_store(name, path): records where a notification receiver's
-- store is (quan serve), for the commands that read it (quan report); the
-- time of the first record of that path is kept
function State:record_store(name, path)
  check(self.db:run([[INSERT INTO stores (name, path, created) VALUES (?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET path = excluded.path,
      created = CASE WHEN path = excluded.path THEN created ELSE excluded.created END]], name, path, qos.time()))
end

-- state:record_journal(send, stock, path, batch_id): records a campaign
-- send's batch journal (quan apply runs the send through quan.send), for
-- the commands that read it (quan report); batch_id nil keeps the one
-- recorded, the time of the first record of that path is kept
function State:record_journal(send, stock, path, batch_id)
  check(self.db:run([[INSERT INTO journals (send, stock, path, batch_id, created) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (send) DO UPDATE SET stock = excluded.stock, path = excluded.path,
      batch_id = coalesce(excluded.batch_id, batch_id),
      created = CASE WHEN path = excluded.path THEN created ELSE excluded.created END]],
    send, stock, path, batch_id, qos.time()))
end

-- state:close(): closes the database and releases the lock (idempotent)
function State:close()
  if self.db then self.db:close(); self.db = nil end
  if self.lock then self.lock:close(); self.lock = nil end
end
State.__close = State.close
State.__gc = State.close

return M
