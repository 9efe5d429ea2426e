-- quan.send: `quan send`, one coupon of a stock to every user of a CSV, the
-- command cron and systemd run; and send.run, the one call behind it, which
-- `quan apply` uses for the sends a campaign declares.
--
--   quan send [options] STOCK_ID USERS.csv [JOURNAL]   (its options: quan.cli)
--
--   send.run(opts)        -> summary, exit code | nil, exit code, message
--   send.main(opts, args) -> exit code (quan.cli's entry)
--   send.worst(a, b, ...) -> the exit code that says most of several runs
--   send.describe(summary) -> one line for a person
--   send.journal_beside(state_path, name) -> a campaign send's journal path
--
-- The work is quan.batch.coupons over quan.batch (docs/batches.md): this
-- module turns a command line or a campaign's send into its options, keeps
-- SIGTERM and SIGHUP orderly from the first request on, and writes the
-- export.
local M = {}

local batch = require "quan.batch"
local coupons = require "quan.batch.coupons"
local qos = require "quan.os"

local exit = batch.exit

-- Most to least telling, for send.worst: a signal, then what the user must
-- fix, then what stopped or could not run, then what a rerun retries, then
-- what is done.
local RANK = {}
for i, code in ipairs { exit.terminated, exit.hangup, exit.interrupted, exit.cannot_start, exit.stopped,
                        exit.unavailable, exit.failed, exit.busy, exit.refused, exit.ok } do
  RANK[code] = i
end

-- worst(a, b, ...) -> of several runs' exit codes, the one to exit with (an
-- unknown code counts as most telling)
function M.worst(...)
  local worst
  for i = 1, select("#", ...) do
    local code = select(i, ...)
    if worst == nil or (RANK[code] or 0) < (RANK[worst] or 0) then worst = code end
  end
  return worst or exit.ok
end

-- describe(summary) -> "batch B: sent 98, already done 0, refused 2
-- (REQUEST_BLOCKED 2), ...; exit 3 (some refused)"
function M.describe(s)
  local parts = {}
  local function add(n, label) if (n or 0) > 0 then parts[#parts + 1] = ("%s %d"):format(label, n) end end
  if s.continued then add(s.sent_or_held, "sent or held") else add(s.sent, "sent") end
  add(s.skipped, "already done")
  add(s.duplicates, "duplicate rows")
  if (s.refused or 0) > 0 then
    local codes = {}
    for code, n in pairs(s.refused_by_code or {}) do codes[#codes + 1] = code .. " " .. n end
    table.sort(codes)
    parts[#parts + 1] = ("refused %d (%s)"):format(s.refused, table.concat(codes, ", "))
  end
  add(s.failed, "failed")
  add(s.not_attempted, "not attempted")
  add(s.in_flight, "outcome unknown")
  return ("batch %s: %s; exit %d (%s)"):format(tostring(s.batch), #parts > 0 and table.concat(parts, ", ") or "no rows",
    s.exit_code or 0, s.exit_reason or "")
end

-- journal_beside(state_path, name) -> the journal of the campaign send
-- `name`, beside the campaign's state: STATE without ".state", ".send-",
-- the name, ".journal" ("double12.lua.state", "night" ->
-- "double12.lua.send-night.journal"). A name with characters other than
-- letters, digits, "-", "_" and "." has them replaced by "_" and 8 hex
-- digits of its SHA-256 added, so two names never share a journal.
function M.journal_beside(state_path, name)
  if type(state_path) ~= "string" or state_path == "" then
    error("send.journal_beside: state_path must be a path", 2)
  end
  if type(name) ~= "string" or name == "" then error("send.journal_beside: name must be a non-empty string", 2) end
  local safe = name:gsub("[^%w%-_.]", "_")
  if safe ~= name or safe:sub(1, 1) == "." then
    safe = safe .. "-" .. require("quan.crypto").sha256(name):sub(1, 8)
  end
  return state_path:gsub("%.state$", "") .. ".send-" .. safe .. ".journal"
end

local run_opts = {
  wx = "table", stock_id = "string", users = "string", journal = "string", key = "string",
  batch_id = "string", continues = "boolean", concurrency = "number", rate = "number",
  attempts = "number", log_format = "string", out = "userdata", preflight = "boolean",
  export = "string", profile = "string", appid = "string", creator_mchid = "string",
}

local SIGNAL_EXIT = { INT = exit.interrupted, TERM = exit.terminated, HUP = exit.hangup }

-- retry_policy(opts) -> the policy of the stock query: a row's
local function retry_policy(opts)
  return require("quan.batch.retry").policy(opts.attempts and { attempts = opts.attempts } or nil)
end

-- prepare(opts) -> client | nil, exit code, message: what comes before the
-- batch, under a trap of its own (the batch traps signals while it runs):
-- the client (opts.wx, or the profile's) and, unless opts.preflight is
-- false, the stock query. A signal meanwhile ends the send before any row
-- is sent (exit 130, 143 or 129).
local function prepare(opts)
  local trap <close> = qos.trap { "INT", "TERM", "HUP" }
  local ok, wx, code, message = pcall(function()
    local client = opts.wx
    if not client then
      local built, made = pcall(require("wechatpay").client, opts.profile)
      if not built then
        if qos.is_interrupt(made) then error(made, 0) end
        return nil, exit.cannot_start, "profile: " .. tostring(made)
      end
      client = made
    end
    if opts.preflight ~= false then
      local creator = opts.creator_mchid or client.mchid
      local stock, err, ecode = coupons.preflight(client, opts.stock_id, creator, retry_policy(opts))
      if not stock then return nil, ecode, err end
    end
    trap:hold() -- from here a signal is only noted: below, it ends the send all the same
    return client
  end)
  trap:hold()
  if not ok and not qos.is_interrupt(wx) then error(wx, 0) end
  local signal = qos.interrupt_signal()
  if not ok or signal then
    code = SIGNAL_EXIT[signal or "INT"]
    return nil, code, batch.exit_reason[code] .. " before any row was sent"
  end
  return wx, code, message
end

-- run(opts) -> summary, exit code | nil, exit code, message
-- One send of a stock's coupons, start to end; the message of a send that
-- could not start is already in the log.
--   stock_id, users (a CSV path)   required
--   journal       the journal (USERS.csv.journal: the CSV's path and .journal)
--   wx            a client (default: wechatpay.client(opts.profile))
--   key, batch_id, continues, concurrency, rate, attempts, log_format,
--   out, appid, creator_mchid      as quan send's options
--   preflight     query the stock first (true)
--   export        write the journal as CSV there when the run ends
-- SIGINT, SIGTERM and SIGHUP stop it in order from the first request on
-- (exit 130, 143, 129). Raises on a wrong option (a programmer's error).
function M.run(opts)
  if type(opts) ~= "table" then error("send.run: opts must be a table", 2) end
  for k, v in pairs(opts) do
    local want = run_opts[k]
    if not want then error("send.run: unknown option '" .. tostring(k) .. "'", 2) end
    if type(v) ~= want and not (k == "out" and type(v) == "table") then
      error(("send.run: %s must be a %s"):format(k, want), 2)
    end
  end
  for _, k in ipairs { "stock_id", "users" } do
    if opts[k] == nil or opts[k] == "" then error("send.run: " .. k .. " is required", 2) end
  end
  local journal = opts.journal or opts.users .. ".journal"
  local log = { log_format = opts.log_format, out = opts.out }
  local wx, code, message = prepare(opts)
  if not wx then
    batch.fail(log, message, code)
    return nil, code, message
  end
  local summary
  summary, message, code = coupons.send {
    wx = wx, stock_id = opts.stock_id, input = opts.users, journal = journal, key = opts.key,
    batch_id = opts.batch_id, continues = opts.continues, concurrency = opts.concurrency,
    rate = opts.rate, retry = opts.attempts and { attempts = opts.attempts } or nil,
    log_format = opts.log_format, out = opts.out, preflight = false,
    appid = opts.appid, creator_mchid = opts.creator_mchid,
  }
  if not summary then return nil, code, message end
  if opts.export then
    local n, err = batch.export(journal, opts.export)
    if not n then batch.fail(log, err, summary.exit_code) end
  end
  return summary, summary.exit_code
end

-- main(opts, arguments) -> exit code: `quan send`
function M.main(o, arguments)
  if o.continue and not o.batch_id then
    io.stderr:write("quan send: --continue needs --batch-id (the batch it continues)\n")
    return require("quan.options").EXIT_USAGE
  end
  local why = o.export and require("quan.path").unwritable(o.export) -- before anything is sent
  if why then
    io.stderr:write("quan send: --export ", o.export, ": ", why, "\n")
    return require("quan.options").EXIT_USAGE
  end
  local _, code = M.run {
    stock_id = arguments[1], users = arguments[2], journal = arguments[3],
    key = o.key, batch_id = o.batch_id, continues = o.continue or nil, concurrency = o.concurrency,
    rate = o.rate, attempts = o.attempts, log_format = o.log_format,
    preflight = not o.no_preflight, export = o.export, profile = o.profile,
  }
  return code
end

return M
