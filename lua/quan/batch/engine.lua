-- quan.batch.engine: one run of a batch, as an object (quan.batch.run's
-- engine; quan.batch is its public face and docs/batches.md its contract).
--
-- A run reads rows (quan.batch.input), claims them in the journal
-- (in_flight, committed) a few dozen at a time, hands them to `concurrency`
-- worker tasks that send them under the token bucket, puts retryable
-- failures aside in the backoff set, and commits the outcomes in groups
-- (quan.batch.recorder). A stop (an error every later row would get too)
-- lets the calls in flight finish, hands claimed rows back and marks the
-- rest not attempted; a Ctrl-C, SIGTERM or SIGHUP (trapped while the run
-- goes on: quan.os.trap) ends the run at once, committing what is known
-- and handing back the rows claimed and not sent (the calls in flight stay
-- in_flight: their outcome is unknown).
-- The summary and the exit code come last.
--
-- Every piece of a run's state is a field of the Run, listed in new().
local M = {}

local input_mod = require "quan.batch.input"
local journal_mod = require "quan.batch.journal"
local recorder_mod = require "quan.batch.recorder"
local backoff_mod = require "quan.batch.backoff"
local ratelimit = require "quan.batch.ratelimit"
local retry = require "quan.batch.retry"
local qos = require "quan.os"
local time = require "quan.time"
local cjson = require "cjson"

-- Exit codes (documented in docs/batches.md and docs/errors.md).
M.exit = {
  ok = 0,            -- every row done (sent now or before)
  cannot_start = 2,  -- bad arguments, unreadable input, journal unusable: fix, run again
  refused = 3,       -- some rows refused by the API (recorded); the rest done
  failed = 4,        -- some rows still failing after every retry; run again
  stopped = 5,       -- the batch stopped early (budget exhausted, stock not running, ...)
  busy = 6,          -- another run holds the journal's lock
  unavailable = 7,   -- the API did not answer before anything was sent; run again later
  hangup = 129,      -- SIGHUP: as Ctrl-C
  interrupted = 130, -- Ctrl-C: finished rows are recorded; run again to go on
  terminated = 143,  -- SIGTERM (cron, systemd, kill): as Ctrl-C
}

M.exit_reason = {
  [0] = "all done", [2] = "could not start", [3] = "some refused", [4] = "some failed",
  [5] = "stopped early", [6] = "journal locked by another run", [7] = "API unavailable, nothing sent",
  [129] = "hung up (SIGHUP)", [130] = "interrupted", [143] = "terminated (SIGTERM)",
}

-- the exit code of a run a signal ended, by the signal's name
local SIGNAL_EXIT = { INT = M.exit.interrupted, TERM = M.exit.terminated, HUP = M.exit.hangup }

local PACE_TICK = 0.01 -- seconds: the grid paced rows wake on
local NO_NUMBER = "-"   -- the out_request_no of a row without a key: never sent
local MARK_CHUNK = 2000 -- rows marked not attempted per transaction after a stop

-- request_no(batch_id, key[, scope]) -> out_request_no
-- Deterministic: the batch id (made safe, cut to 40 characters) and 40 hex
-- digits of SHA-256(scope "\n" batch_id "\n" key), or of
-- SHA-256(batch_id "\n" key) without a scope. The scope is what the batch
-- sends to (a send-coupon batch's stock id): the same batch id on another
-- stock numbers its rows apart. Only [A-Za-z0-9|_*-], at most 81
-- characters, as send-coupon requires; the same row of the same batch always
-- gets the same number, so a retry or a resumed run can never send twice.
function M.request_no(batch_id, key, scope)
  if type(batch_id) ~= "string" or batch_id == "" then
    error("batch.request_no: batch_id must be a non-empty string", 2)
  end
  if type(key) ~= "string" then error("batch.request_no: key must be a string", 2) end
  if scope ~= nil and (type(scope) ~= "string" or scope == "") then
    error("batch.request_no: scope must be a non-empty string", 2)
  end
  local prefix = batch_id:gsub("[^A-Za-z0-9|_*%-]", "_"):sub(1, 40)
  local text = (scope and scope .. "\n" or "") .. batch_id .. "\n" .. key
  return prefix .. "-" .. require("quan.crypto").sha256(text):sub(1, 40)
end

-- exit_code(stats) -> the exit code of a finished run (stats.signal: the
-- signal that interrupted it, "INT" when none is named)
function M.exit_code(s)
  if s.interrupted then return SIGNAL_EXIT[s.signal] or M.exit.interrupted end
  if s.stop_reason then return M.exit.stopped end
  if (s.failed or 0) > 0 then return M.exit.failed end
  if (s.refused or 0) > 0 then return M.exit.refused end
  return M.exit.ok
end

-- is_interrupt(err) -> true when err is the host's Ctrl-C (quan.os.interrupt,
-- raised wherever Lua runs): the run ends, it is nobody's failure
local is_interrupt = qos.is_interrupt

-- default_result(res) -> what the journal records of an answer:
-- res.json.coupon_id (or id, or the JSON), else the body
local function default_result(res)
  if type(res) == "table" then
    local j = res.json
    if type(j) == "table" then
      return j.coupon_id or j.id or cjson.encode(j)
    end
    return res.body
  end
  return res ~= nil and tostring(res) or nil
end

-- simulated(opts) -> true when requests are only pretended (opts.simulated,
-- else the wechatpay client's dry-run or check mode)
local function simulated(opts)
  if opts.simulated ~= nil then return opts.simulated end
  local wechatpay = package.loaded.wechatpay
  return type(wechatpay) == "table" and wechatpay.simulation ~= nil
end

-- ---- the queue of claimed rows ----------------------------------------------

-- Rows claimed (in_flight, committed) and not yet taken by a worker, in
-- input order.
local Queue = {}
Queue.__index = Queue

local function new_queue() return setmetatable({ first = 1, last = 0 }, Queue) end

function Queue:push(item)
  self.last = self.last + 1
  self[self.last] = item
end

-- queue:pop() -> the oldest item | nil when empty (an emptied queue starts
-- again from slot 1)
function Queue:pop()
  if self.first > self.last then return nil end
  local item = self[self.first]
  self[self.first] = nil
  self.first = self.first + 1
  if self.first > self.last then self.first, self.last = 1, 0 end
  return item
end

-- queue:drain() -> every item left, in order; the queue is empty after
function Queue:drain()
  local rest = {}
  for i = self.first, self.last do rest[#rest + 1] = self[i] end
  self.first, self.last = 1, 0
  return rest
end

-- ---- a run -------------------------------------------------------------------

local Run = {}
Run.__index = Run

-- new(opts, report) -> run: a run of batch.run's opts (checked by the
-- caller), reporting through report (a quan.batch.progress reporter). Opens
-- nothing yet (open() does). The fields, all of a run's state:
--   opts, report, async       the options, the log, the scheduler
--   send, classify, result, policy, bucket, concurrency
--                             how rows are sent and judged
--   flush_size, flush_interval  how outcomes are grouped in commits
--   input                     the rows (quan.batch.input), once open
--   journal, batch_id         the open journal and its batch id
--   scratch                   the throwaway journal copy of a simulated run
--   recorder                  outcomes waiting for their commit
--   queue                     claimed rows waiting for a worker
--   backoff                   rows waiting out a backoff before a retry
--   waiting                   rows take() popped from the backoff and whose
--                             worker sleeps until their retry is due (a
--                             set); they count as retrying
--   counts                    what progress and the summary count: done,
--                             sent, sent_or_held, skipped, duplicates,
--                             refused (and refused_by_code), failed,
--                             not_attempted, retrying and next_retry (when
--                             the earliest waits, on quan.os.now's clock),
--                             attempted, retries; claimed, settled and
--                             kept_in_flight (rows left in flight:
--                             claimed - settled + kept_in_flight);
--                             unrecorded (read, never recorded: a failed
--                             journal write); total (rows expected, nil
--                             when unknown)
--   stop_code, stop_reason    the first stop, if any
--   interrupted, signal       a Ctrl-C (or SIGTERM, SIGHUP: signal names it)
--                             reached the run
--   running                   the ticker goes on while true
--   ended                     the run has ended (done, stopped, Ctrl-C): a
--                             worker task the event loop resumes later (the
--                             REPL drives it again after a Ctrl-C) neither
--                             sends nor touches the closed journal
--   started                   quan.os.now() when the run started
function M.new(opts, report)
  local concurrency = opts.concurrency or 64
  local self = setmetatable({
    opts = opts, report = report,
    async = opts.async or require("quan.async"),
    send = opts.send,
    classify = opts.classify or retry.classify,
    result = opts.result or default_result,
    policy = retry.policy(opts.retry),
    concurrency = concurrency,
    bucket = ratelimit.new { rate = opts.rate or 400, burst = opts.burst },
    flush_size = opts.flush_size or math.max(64, concurrency),
    flush_interval = opts.flush_interval or 0.25,
    queue = new_queue(),
    backoff = backoff_mod.new(4 * concurrency),
    waiting = {},
    counts = { done = 0, sent = 0, sent_or_held = 0, skipped = 0, duplicates = 0, refused = 0,
               failed = 0, not_attempted = 0, retrying = 0, attempted = 0, retries = 0,
               claimed = 0, settled = 0, kept_in_flight = 0, unrecorded = 0, refused_by_code = {} },
    interrupted = false, running = false, ended = false,
  }, Run)
  return self
end

-- run:open() -> true | nil, message, exit code: opens the input and the
-- journal (a throwaway copy of it when the run is simulated: a dry run or
-- `quan check` only pretends to send, and pretended sends must never count
-- as done; rows a real run would skip, the copy skips)
function Run:open()
  local opts = self.opts
  local input, ierr = input_mod.open(opts.input, { key = opts.key, total = opts.total, sep = opts.sep })
  if not input then return nil, ierr, M.exit.cannot_start end
  self.input = input
  local path = opts.journal
  if simulated(opts) then
    local scratch, serr = journal_mod.scratch(opts.journal)
    if not scratch then
      input:close()
      return nil, serr, M.exit.cannot_start
    end
    self.scratch, path = scratch, scratch.path
  end
  local meta = opts.meta
  if opts.scope then
    meta = { scope = opts.scope }
    for k, v in pairs(opts.meta or {}) do meta[k] = v end
  end
  local j, jerr, jcode = journal_mod.open(path, {
    batch_id = opts.batch_id, batch_prefix = opts.batch_prefix, meta = meta,
    synchronous = opts.synchronous, continues = opts.continues })
  if not j then
    input:close()
    return nil, jerr, jcode == "busy" and M.exit.busy or M.exit.cannot_start
  end
  self.journal, self.batch_id, self.scope = j, j.batch_id, opts.scope
  self.success = j.continued and "sent_or_held" or "sent"
  self.recorder = recorder_mod.new(j, { size = self.flush_size, interval = self.flush_interval })
  self.report.batch = j.batch_id
  self.counts.total = input.total
  return true
end

-- run:remove_scratch(): removes the scratch copy of a simulated run (the
-- run's __close: done however the run ends)
function Run:remove_scratch()
  if self.scratch then self.scratch:remove() end
end
Run.__close = Run.remove_scratch

-- run:stop(code, reason): the batch stops (the first stop is the one kept
-- and reported)
function Run:stop(code, reason)
  if not self.stop_reason then
    self.stop_reason, self.stop_code = reason, code
    self.report:event("stop", { code = code, reason = reason })
  end
end

-- ---- recording outcomes -------------------------------------------------------

-- run:journal_failed(err): a journal that cannot be written (disk full, I/O
-- error, damage) stops the batch: what was not committed stays in_flight or
-- unread, and the next run sends it again with the same out_request_no. A
-- Ctrl-C during the write is raised again: not the journal's fault.
function Run:journal_failed(err)
  if is_interrupt(err) then error(err, 0) end
  local message = "journal: " .. tostring(err):gsub("^[^\n]-%.lua:%d+: ", "")
  if self.stop_reason then self.report:event("error", { message = message }) else self:stop("JOURNAL", message) end
end

-- run:write(fn) -> true | false: fn in a journal transaction (on failure:
-- journal_failed)
function Run:write(fn)
  local ok, err = self.recorder:write(fn)
  if not ok then self:journal_failed(err) end
  return ok
end

-- run:commit([fn]) -> outcomes committed | nil: the pending outcomes and fn
-- in one transaction (on failure: journal_failed, the outcomes stay pending)
function Run:commit(fn)
  local list, err = self.recorder:commit(fn)
  if not list then self:journal_failed(err) end
  return list
end

-- run:settle(list): counts outcomes once committed, and reports them
function Run:settle(list)
  local counts, report = self.counts, self.report
  for _, p in ipairs(list) do
    counts.done = counts.done + 1
    if p.claimed then counts.settled = counts.settled + 1 end
    local s = p.state
    if s == "sent" or s == "sent_or_held" then
      counts[s] = counts[s] + 1
      if self.opts.log_items then
        report:event("sent", { row = p.row, key = p.key, result = p.result, attempts = p.attempts,
                               state = s })
      end
    elseif s == "refused" then
      counts.refused = counts.refused + 1
      counts.refused_by_code[p.code] = (counts.refused_by_code[p.code] or 0) + 1
      report:event("refused", { row = p.row, key = p.key, code = p.code, message = p.message })
    elseif s == "failed" then
      counts.failed = counts.failed + 1
      report:event("failed", { row = p.row, key = p.key, code = p.code, message = p.message,
                               attempts = p.attempts })
    else
      counts.not_attempted = counts.not_attempted + 1
    end
  end
end

-- run:flush(): commits the pending outcomes (and nothing else), then
-- counts them; on a journal error they stay pending (in_flight)
function Run:flush()
  if #self.recorder.pending == 0 then return end
  local list = self:commit()
  if not list then return end
  self:settle(list)
  self:tick()
end

-- run:tick([force]): the progress display, with the rows waiting for a
-- retry and the time of the earliest
function Run:tick(force)
  local counts, due, n = self.counts, self.backoff:next_due(), self.backoff:count()
  for item in pairs(self.waiting) do
    n = n + 1
    if not due or item.due < due then due = item.due end
  end
  counts.retrying, counts.next_retry = n, due
  self.report:tick(counts, force)
end

-- run:outcome(item, state, result, code, message[, answered]): the outcome
-- of an item, committed with the next group; answered: the API's time of
-- the answer that decided it (answered_at)
function Run:outcome(item, state, result, code, message, answered)
  if self.ended then return end -- stays in_flight in the journal: resent, same number
  local due = self.recorder:add { key = item.key, row = item.row, state = state, claimed = true,
    attempts = item.attempt or 0, result = result, code = code, message = message, answered = answered }
  if due then self:flush() end
end

-- ---- reading and claiming rows ------------------------------------------------

-- run:identify(key, row) -> journal key, out_request_no: a row without a
-- key is recorded as "(row N)" and never numbered (nor sent). The only
-- caller of request_no: a row the journal already holds keeps the number
-- recorded there (claim).
function Run:identify(key, row)
  if key == nil or key == "" then return ("(row %d)"):format(row), NO_NUMBER end
  return key, M.request_no(self.batch_id, key, self.scope)
end

-- run:claim(): claims up to flush_size rows in one transaction (with the
-- pending outcomes): new and resumed rows go to the queue once committed;
-- a row without a key is refused (INVALID_ROW) and recorded; a row an
-- earlier run finished is skipped, a key seen before in this run is a
-- duplicate
function Run:claim()
  local j, input, pending = self.journal, self.input, self.recorder.pending
  local skipped, dups, read = 0, 0, 0
  local claimed = {} -- queued only once the claims are committed
  local duplicates = {} -- reported only once committed
  local list = self:commit(function()
    while #claimed < self.flush_size do
      local key, row, record = input:read()
      if not row then break end
      read = read + 1
      local orn
      key, orn = self:identify(key, row)
      local what, prior = j:claim(key, row, orn)
      if orn == NO_NUMBER then
        if what == "new" or what == "resume" then
          j:record(key, "refused", 0, nil, "INVALID_ROW", "no key in this row")
          pending[#pending + 1] = { key = key, row = row, state = "refused", attempts = 0,
                                    code = "INVALID_ROW", message = "no key in this row" }
        else
          skipped = skipped + 1
        end
      elseif what == "new" or what == "resume" then
        -- a row seen before is sent with the number its journal recorded
        claimed[#claimed + 1] = { key = key, row = row, record = record,
                                  out_request_no = prior and prior.out_request_no or orn,
                                  new = what == "new", prior = prior and prior.state,
                                  prior_code = prior and prior.code,
                                  prior_message = prior and prior.message }
      elseif what == "done" then
        skipped = skipped + 1
      else
        dups = dups + 1
        duplicates[#duplicates + 1] = { row = row, key = key, first_row = prior and prior.row }
      end
    end
  end)
  if not list then -- rolled back: the rows read are recorded nowhere
    self.counts.unrecorded = self.counts.unrecorded + read
    return
  end
  for _, item in ipairs(claimed) do self.queue:push(item) end
  self:settle(list)
  local counts = self.counts
  counts.claimed = counts.claimed + #claimed
  counts.skipped, counts.duplicates = counts.skipped + skipped, counts.duplicates + dups
  counts.done = counts.done + skipped + dups
  for _, d in ipairs(duplicates) do self.report:event("duplicate", d) end
  self:tick()
end

-- ---- dispatching to workers ---------------------------------------------------

-- run:pop_retry(due_only) -> the row whose retry comes first (when due,
-- with due_only) | nil
function Run:pop_retry(due_only)
  local backoff = self.backoff
  if backoff:count() == 0 then return nil end
  local item = backoff:pop(due_only and qos.now() or nil)
  if item then self.counts.retrying = backoff:count() end
  return item
end

-- run:take() -> the next item for a worker | nil when there is none left
-- (or the run ended, or a Ctrl-C reached it, also while the worker waited):
-- a due retry first, then a claimed row (claiming more when the queue is
-- empty), else the earliest retry, waited for
function Run:take()
  if self.ended or self.interrupted then return nil end
  local item = self:pop_retry(true)
  if item then return item end
  if not self.stop_reason and not self.backoff:full() then
    item = self.queue:pop()
    if not item and not self.input.eof then
      self:claim()
      item = self.queue:pop()
    end
    if item then return item end
  end
  -- nothing new to send: the earliest retry, when its time comes (the
  -- row counts as retrying meanwhile: run.waiting)
  item = self:pop_retry(false)
  if item then
    local wait = item.due - qos.now()
    if wait > 0 then
      self.waiting[item] = true
      self.async.sleep(wait)
      self.waiting[item] = nil
      if self.ended or self.interrupted then return nil end
    end
  end
  return item
end

-- run:pace(): waits for a token of the bucket. Paced rows wake on a 10 ms
-- grid: they start in small groups, one turn of the event loop each, not
-- one turn per row (the bucket still holds: waking later than the token is
-- due never hurts).
function Run:pace()
  local wait = self.bucket:take()
  if wait > 0 then
    local now = qos.now()
    self.async.sleep(math.ceil((now + wait) / PACE_TICK) * PACE_TICK - now)
  end
  return wait > 0
end

-- answered_at(res) -> the API's own time of an answer (or an error table
-- of one): its Date header, else its signed Wechatpay-Timestamp; nil when
-- it has neither (no answer, a test's table). quan report counts sends on
-- the days of this time, never this machine's clock.
local function answered_at(res)
  local headers = type(res) == "table" and type(res.headers) == "table" and res.headers
  if not headers then return nil end
  return time.parse_http(headers.Date or headers.date) or
    math.tointeger(tonumber(headers["Wechatpay-Timestamp"] or headers["wechatpay-timestamp"]))
end
M.answered_at = answered_at

-- run:result_of(res, item) -> true, value (a string or nil) | false, why:
-- what the journal records of an answer; one it cannot hold leaves the
-- outcome unknown (retried with the same number)
function Run:result_of(res, item)
  local ok, value, why = pcall(self.result, res, item)
  if not ok and is_interrupt(value) then self.interrupted = true; error(value, 0) end
  if ok and (type(value) == "string" or math.type(value) == "integer" or (value == nil and why == nil)) then
    return true, value ~= nil and tostring(value) or nil
  end
  return false, "the answer cannot be read: " .. tostring(ok and (why or ("result is a " .. type(value))) or value)
end

-- run:retry_later(item, attempt, code, message): puts the item aside for
-- its next try, or records it failed when no try is left
function Run:retry_later(item, attempt, code, message)
  local delay = self.policy:delay(attempt, code)
  if not delay then return self:outcome(item, "failed", nil, code, message) end
  self.counts.retries = self.counts.retries + 1
  self.report:event("retry", { row = item.row, key = item.key, attempt = attempt,
                               code = code, delay = math.floor(delay * 1000) / 1000 })
  self.backoff:add(item, qos.now() + delay)
  self.counts.retrying = self.backoff:count()
end

-- run:process(item): one try of an item: its outcome, or the item put
-- aside for a retry
function Run:process(item)
  local attempt = (item.attempt or 0) + 1
  if self:pace() and self.ended then return end
  item.attempt = attempt
  if attempt == 1 then self.counts.attempted = self.counts.attempted + 1 end
  local ok, res, err = pcall(self.send, item)
  if self.ended then return end
  if not ok then
    if is_interrupt(res) then self.interrupted = true; error(res, 0) end
    -- a bug in send: the outcome is unknown; stop, keep the item to retry
    local message = tostring(res)
    self:outcome(item, "failed", nil, "ERROR", message)
    self:stop("ERROR", "send raised an error: " .. message)
    return
  end
  local action, code, message = self.classify(res, err)
  if action == "ok" then
    local readable, value = self:result_of(res, item)
    if readable then return self:outcome(item, self.success, value, nil, nil, answered_at(res)) end
    action, code, message = "retry", "BAD_ANSWER", value
  end
  if action == "retry" then
    self:retry_later(item, attempt, code, message)
  elseif action == "stop" then
    -- nothing was sent for this row: it goes back to not attempted
    self:outcome(item, "not_attempted", nil, code, message)
    self:stop(code, code .. ": " .. tostring(message))
  else
    self:outcome(item, "refused", nil, code, message, answered_at(err))
  end
end

-- run:work(): a worker task's loop. A Ctrl-C raises the interrupt in
-- whichever task runs: that worker ends with it, and the others take no
-- new row (take) and end too.
function Run:work()
  local ok, err = pcall(function()
    while true do
      local item = self:take()
      if not item then return end
      self:process(item)
    end
  end)
  if not ok then
    if is_interrupt(err) then self.interrupted = true end
    error(err, 0)
  end
end

-- run:ticker(): the ticker task: commits outcomes that waited too long,
-- keeps the progress display going while the workers run, and stops the
-- run when a signal came whose interrupt did not (taken on its way for an
-- ordinary error by code that does not test quan.os.is_interrupt)
function Run:ticker()
  while self.running do
    self.async.sleep(self.flush_interval)
    -- a signal is never lost: one whose interrupt a pcall on the way took
    -- for an ordinary error stops the run here all the same
    if not self.interrupted and qos.interrupt_signal() then self.interrupted = true end
    if self.recorder:overdue(qos.now()) then self:flush() end
    self:tick()
  end
end

-- run:drive(): runs the workers and the ticker to their end. An error (Ctrl-C
-- raises the interrupt wherever Lua runs) ends it at once: what is done
-- is committed by the caller, the rest resumes next run.
function Run:drive()
  local async, tasks = self.async, {}
  for i = 1, self.concurrency do tasks[i] = async.spawn(function() self:work() end) end
  local ticker = async.spawn(function() self:ticker() end)
  for _, t in ipairs(tasks) do
    local ok, err = pcall(t.wait, t)
    if not ok then error(err, 0) end
  end
  self.running = false
  -- the progress display failing must not fail the run, nor pass unseen
  local ok, err = pcall(ticker.wait, ticker)
  if not ok and not is_interrupt(err) then
    io.stderr:write("quan.batch: progress display: ", tostring(err), "\n")
  end
end

-- ---- the end of a run ---------------------------------------------------------

-- run:hand_back(): rows claimed but never sent go back to what they were,
-- last error kept; counted only once that is committed (else they stay
-- in_flight, and the summary says so)
function Run:hand_back()
  local back = self.queue:drain()
  if #back == 0 then return end
  local j = self.journal
  if not self:write(function()
    for _, item in ipairs(back) do
      j:record(item.key, item.new and "not_attempted" or (item.prior or "in_flight"), 0,
               nil, item.prior_code, item.prior_message)
    end
  end) then return end
  local counts = self.counts
  for _, item in ipairs(back) do
    if item.new or item.prior == "not_attempted" then
      counts.not_attempted = counts.not_attempted + 1
    elseif (item.prior or "in_flight") == "in_flight" then
      counts.kept_in_flight = counts.kept_in_flight + 1
    end
    counts.settled = counts.settled + 1
    counts.done = counts.done + 1
  end
end

-- run:mark_rest(): a stopped batch marks the rest of the input not
-- attempted, MARK_CHUNK rows per transaction, as far as the input reads.
-- A chunk is counted once committed; the rows of one that could not be
-- (the journal failing) are unrecorded, and marking ends there.
function Run:mark_rest()
  local j, input, counts = self.journal, self.input, self.counts
  local more = true
  while more do
    local chunk = { rows = 0, not_attempted = 0, kept_in_flight = 0, skipped = 0, duplicates = 0 }
    if self:write(function()
      for _ = 1, MARK_CHUNK do
        local key, row = input:read()
        if not row then more = false; return end
        chunk.rows = chunk.rows + 1
        local jkey, orn = self:identify(key, row)
        local what, state = j:not_attempted(jkey, row, orn)
        if what == "new" or (what == "kept" and state ~= "in_flight") then
          chunk.not_attempted = chunk.not_attempted + 1
        elseif what == "kept" then chunk.kept_in_flight = chunk.kept_in_flight + 1
        elseif what == "done" then chunk.skipped = chunk.skipped + 1
        else chunk.duplicates = chunk.duplicates + 1 end
      end
    end) then
      for _, k in ipairs { "not_attempted", "kept_in_flight", "skipped", "duplicates" } do
        counts[k] = counts[k] + chunk[k]
      end
      counts.done = counts.done + chunk.rows
    else
      counts.unrecorded = counts.unrecorded + chunk.rows
      more = false
    end
  end
end

-- run:summary(code) -> the summary of the run (fields in docs/batches.md)
function Run:summary(code)
  local counts, elapsed = self.counts, qos.now() - self.started
  local summary = {
    batch = self.batch_id, journal = self.opts.journal, run = self.journal.run,
    rows = self.input.rows, sent = counts.sent, sent_or_held = counts.sent_or_held,
    skipped = counts.skipped, duplicates = counts.duplicates,
    refused = counts.refused, refused_by_code = counts.refused_by_code, failed = counts.failed,
    not_attempted = counts.not_attempted, retries = counts.retries, attempted = counts.attempted,
    in_flight = counts.claimed - counts.settled + counts.kept_in_flight,
    unrecorded = counts.unrecorded > 0 and counts.unrecorded or nil,
    continued = self.journal.continued or nil, signal = self.signal,
    elapsed = math.floor(elapsed * 1000) / 1000,
    rows_per_sec = elapsed > 0 and math.floor(counts.attempted / elapsed * 10) / 10 or 0,
    stop_reason = self.stop_reason, stop_code = self.stop_code,
    exit_code = code, exit_reason = M.exit_reason[code],
  }
  local ok, journal_counts = pcall(self.journal.counts, self.journal)
  if ok then summary.journal_counts = journal_counts end
  -- rows of a known total this run never read (interrupted, or an input
  -- line it could not read past)
  local input = self.input
  if (not input.eof or input.error) and input.total and input.total > input.rows then
    summary.not_read = input.total - input.rows
  end
  summary.simulated = self.scratch and true or nil
  return summary
end

-- run:execute() -> summary: runs the open run to its end, whatever happens
-- on the way, and closes its journal
function Run:execute()
  local j, input, report = self.journal, self.input, self.report
  -- SIGTERM and SIGHUP stop the run as a Ctrl-C does, while it runs
  local trap <close> = qos.trap { "INT", "TERM", "HUP" }
  self.started = qos.now()
  report:event("start", { journal = self.opts.journal, total = input.total, resumed = not j.created,
                          simulated = self.scratch and true, run = j.run, continued = j.continued or nil,
                          concurrency = self.concurrency, rate = self.bucket.rate })
  self.running = true
  -- once the workers are done a signal is only noted: the run finishes
  -- its records and its summary (held inside the call, so that no signal
  -- falls between its end and the hold)
  local ok, err = pcall(function()
    self:drive()
    if qos.interrupt_signal() then self.interrupted = true end -- its interrupt lost on the way
    trap:hold()
  end)
  trap:hold()
  self.running, self.ended = false, true
  if not ok then
    if is_interrupt(err) then
      self.interrupted = true
    else
      self:stop("ERROR", "engine: " .. tostring(err))
    end
  end
  if self.interrupted then self.signal = qos.interrupt_signal() or "INT" end
  -- whatever happened, commit the outcomes we know
  self:flush()
  if input.error and not self.stop_reason then self:stop("INPUT", "input: " .. input.error) end
  -- rows claimed and never sent go back (a signal too: they were not sent)
  self:hand_back()
  if not self.interrupted and self.stop_reason and not input.eof then self:mark_rest() end
  input:close()

  local counts = self.counts
  counts.stop_reason, counts.interrupted, counts.signal = self.stop_reason, self.interrupted, self.signal
  local code = M.exit_code(counts)
  local summary = self:summary(code)
  self:tick(true)
  report:finish(summary)
  pcall(j.finish_run, j, code, cjson.encode(summary))
  j:close()
  return summary
end

-- run(opts, report) -> summary | nil, message, exit code: batch.run's
-- engine (opts already checked): a batch that cannot start is reported as
-- an "error" event
function M.run(opts, report)
  local run <close> = M.new(opts, report)
  local ok, message, code = run:open()
  if not ok then
    report:event("error", { message = message, exit = code })
    return nil, message, code
  end
  return run:execute()
end

return M
