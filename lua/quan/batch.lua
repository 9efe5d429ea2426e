-- quan.batch: send one request per input row, exactly once, fast.
--
-- The engine reads rows lazily (a CSV file with a header, or any iterator),
-- records each in a SQLite journal before its call and after it, runs
-- `concurrency` calls at once on quan.async tasks under a global token
-- bucket, retries what is retryable with backoff (reusing the row's
-- out_request_no), stops the whole batch on an error every later row would
-- get too, and tells the operator what happened (progress bar or JSON lines
-- on stderr, a summary, an exit code). See docs/batches.md.
local M = {}

local csv = require "quan.batch.csv"
local journal_mod = require "quan.batch.journal"
local progress = require "quan.batch.progress"
local ratelimit = require "quan.batch.ratelimit"
local retry = require "quan.batch.retry"
local qos = require "quan.os"
local cjson = require "cjson"

-- Exit codes (documented in docs/batches.md).
M.exit = {
  ok = 0,            -- every row done (sent now or before)
  cannot_start = 2,  -- bad arguments, unreadable input, journal unusable
  refused = 3,       -- some rows refused by the API (recorded); the rest done
  failed = 4,        -- some rows still failing after every retry; run again
  stopped = 5,       -- the batch stopped early (budget exhausted, stock not running, ...)
  busy = 6,          -- another run holds the journal's lock
  interrupted = 130, -- Ctrl-C: finished rows are recorded; run again to go on
}

local PACE_TICK = 0.01 -- seconds: the grid paced rows wake on

local exit_reason = {
  [0] = "all done", [2] = "could not start", [3] = "some refused", [4] = "some failed",
  [5] = "stopped early", [6] = "journal locked by another run", [130] = "interrupted",
}
M.exit_reason = exit_reason

-- request_no(batch_id, key) -> out_request_no
-- Deterministic: the batch id (made safe, cut to 40 characters) and 40 hex
-- digits of SHA-256(batch_id "\n" key). Only [A-Za-z0-9|_*-], at most 81
-- characters, as send-coupon requires; the same row of the same batch always
-- gets the same number, so a retry or a resumed run can never send twice.
function M.request_no(batch_id, key)
  if type(batch_id) ~= "string" or batch_id == "" then
    error("batch.request_no: batch_id must be a non-empty string", 2)
  end
  if type(key) ~= "string" then error("batch.request_no: key must be a string", 2) end
  local prefix = batch_id:gsub("[^A-Za-z0-9|_*%-]", "_"):sub(1, 40)
  return prefix .. "-" .. require("quan.crypto").sha256(batch_id .. "\n" .. key):sub(1, 40)
end

-- exit_code(stats) -> the exit code of a finished run
function M.exit_code(s)
  if s.interrupted then return M.exit.interrupted end
  if s.stop_reason then return M.exit.stopped end
  if (s.failed or 0) > 0 then return M.exit.failed end
  if (s.refused or 0) > 0 then return M.exit.refused end
  return M.exit.ok
end

local run_opts = {
  input = "path, csv reader or iterator", key = "column name or function", total = "number",
  journal = "path", batch_id = "string", batch_prefix = "string", meta = "table",
  send = "function", classify = "function", result = "function",
  concurrency = "integer", rate = "number", burst = "number", retry = "table",
  log_format = "string", out = "file", progress_interval = "number", log_items = "boolean",
  synchronous = "string", flush_size = "integer", flush_interval = "number",
  async = "table", sep = "string", simulated = "boolean",
}

local function check_opts(opts)
  if type(opts) ~= "table" then error("batch.run: opts must be a table", 3) end
  for k in pairs(opts) do
    if not run_opts[k] then error("batch.run: unknown option '" .. tostring(k) .. "'", 3) end
  end
  if type(opts.journal) ~= "string" then error("batch.run: journal must be a path", 3) end
  if type(opts.send) ~= "function" then error("batch.run: send must be a function", 3) end
  if opts.input == nil then error("batch.run: input is required", 3) end
  if opts.simulated ~= nil and type(opts.simulated) ~= "boolean" then error("batch.run: simulated must be a boolean", 3) end
  local c = opts.concurrency
  if c ~= nil and (math.type(c) ~= "integer" or c < 1) then
    error("batch.run: concurrency must be an integer >= 1", 3)
  end
  local lf = opts.log_format
  if lf ~= nil and not progress.FORMATS[lf] then
    error("batch.run: log_format must be 'bar', 'json' or 'text'", 3)
  end
  for _, k in ipairs { "key", "classify", "result" } do
    local v = opts[k]
    if v ~= nil and type(v) ~= "function" and not (k == "key" and type(v) == "string") then
      error("batch.run: " .. k .. " must be a " .. run_opts[k], 3)
    end
  end
end

-- Opens the input: returns next() -> record | nil | nil, err, plus the
-- total if known, or nil, message.
local function open_input(opts, keycol)
  local input = opts.input
  if type(input) == "string" then
    local r, err = csv.open(input, { sep = opts.sep })
    if not r then return nil, "input " .. input .. ": " .. err end
    if type(keycol) == "string" and not r.columns[keycol] then
      r:close()
      return nil, ("input %s: no column '%s' in the header"):format(input, keycol)
    end
    local total = opts.total
    if total == nil then
      local n = csv.count_lines(input)
      total = n and math.max(0, n - 1)
    end
    return function() return r:read() end, total, function() r:close() end
  elseif type(input) == "table" and getmetatable(input) and input.read then
    return function() return input:read() end, opts.total, function() end
  elseif type(input) == "function" then
    return input, opts.total, function() end
  end
  error("batch.run: input must be a path, a csv reader or an iterator function", 3)
end

-- send(item) is called with item = {key, row, record, out_request_no,
-- attempt}; it returns what a client call returns (res | nil, err); the
-- default result(res) stores res.json.coupon_id (or the body).
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

-- log_format: the format when a run names none, before QUAN_LOG_FORMAT
-- (`quan check --log-format F` sets it)
M.log_format = nil

local function reporter_for(opts)
  local out = opts.out or io.stderr
  local format = progress.format_for(opts.log_format or M.log_format or os.getenv("QUAN_LOG_FORMAT"),
                                     out == io.stderr and qos.isatty(2))
  return progress.new { format = format, out = out, interval = opts.progress_interval }
end

-- fail(opts, message, code) -> nil, message, code: reports a batch that
-- could not start as the run would (an "error" event in the log format of
-- opts.log_format / QUAN_LOG_FORMAT, on opts.out or stderr)
function M.fail(opts, message, code)
  reporter_for(opts or {}):event("error", { message = message, exit = code })
  return nil, message, code
end

-- simulated(opts) -> true when requests are only pretended (opts.simulated,
-- else the wechatpay client's dry-run or check mode)
local function simulated(opts)
  if opts.simulated ~= nil then return opts.simulated end
  local wechatpay = package.loaded.wechatpay
  return type(wechatpay) == "table" and wechatpay.simulation ~= nil
end

-- run(opts) -> summary | nil, message, exit_code
-- opts (see docs/batches.md): input, key ("openid"), journal, send,
-- batch_id, batch_prefix, meta, classify, result, concurrency (64),
-- rate (400/s), burst, retry ({attempts, base, factor, max}), log_format,
-- out (io.stderr), progress_interval (5 s), log_items, total, synchronous,
-- flush_size, flush_interval, async (quan.async), sep, simulated.
-- The summary has the counts of this run, the journal's totals, the
-- exit code and its reason.
function M.run(opts)
  check_opts(opts)
  local async = opts.async or require("quan.async")
  local keycol = opts.key or "openid"
  local keyfn = type(keycol) == "function" and keycol
    or function(rec) if type(rec) == "string" then return rec end return rec[keycol] end
  local classify = opts.classify or retry.classify
  local resultfn = opts.result or default_result
  local policy = retry.policy(opts.retry)
  local concurrency = opts.concurrency or 64
  local bucket = ratelimit.new { rate = opts.rate or 400, burst = opts.burst }
  local flush_size = opts.flush_size or math.max(64, concurrency)
  local flush_interval = opts.flush_interval or 0.25
  local report = reporter_for(opts)

  -- could not start: report and return the code
  local function cannot(msg, code)
    report:event("error", { message = msg, exit = code })
    return nil, msg, code
  end

  local next_record, total, close_input = open_input(opts, keycol)
  if not next_record then return cannot(total, M.exit.cannot_start) end

  -- a dry run or `quan check` only pretends to send: the batch runs on a
  -- throwaway copy of its journal (rows a real run would skip, it skips), so
  -- that pretended sends never count as done
  local journal_path, scratch = opts.journal, nil
  if simulated(opts) then
    local serr
    scratch, serr = journal_mod.scratch(opts.journal)
    if not scratch then
      close_input()
      return cannot(serr, M.exit.cannot_start)
    end
    journal_path = scratch.path
  end
  local _ <close> = scratch -- removed however this function ends
  local j, jerr, jcode = journal_mod.open(journal_path, {
    batch_id = opts.batch_id, batch_prefix = opts.batch_prefix, meta = opts.meta,
    synchronous = opts.synchronous })
  if not j then
    close_input()
    return cannot(jerr, jcode == "busy" and M.exit.busy or M.exit.cannot_start)
  end
  local batch_id = j.batch_id
  report.batch = batch_id

  local st = { rows = 0, done = 0, sent = 0, skipped = 0, duplicates = 0, refused = 0,
               failed = 0, not_attempted = 0, retrying = 0, attempted = 0, retries = 0,
               refused_by_code = {}, total = total }
  local started = qos.now()
  report:event("start", { journal = opts.journal, total = total, resumed = not j.created, simulated = scratch and true,
                          run = j.run, concurrency = concurrency, rate = bucket.rate })

  -- ---- reading and claiming rows -----------------------------------------
  local queue, qhead, qtail = {}, 1, 0  -- claimed items waiting for a worker
  local eof, input_error = false, nil
  local interrupted = false -- a Ctrl-C reached the run
  local pending, pending_since = {}, nil -- outcomes not yet committed
  local stop_reason, stop_code
  -- set once the run has ended (done, stopped, Ctrl-C): a worker task that
  -- the event loop resumes later (the REPL drives it again after a Ctrl-C)
  -- must neither send nor touch the closed journal
  local ended = false

  local function stop(code, reason)
    if not stop_reason then
      stop_reason, stop_code = reason, code
      report:event("stop", { code = code, reason = reason })
    end
  end

  -- reads the next input row -> key, row, record | nil at the end
  local function read_row()
    if eof then return nil end
    local rec, err = next_record()
    if rec == nil then
      eof = true
      if err then input_error = err end
      return nil
    end
    st.rows = st.rows + 1
    local row = st.rows
    local key = keyfn(rec)
    if key ~= nil and type(key) ~= "string" then key = tostring(key) end
    -- " oUser1 " in a hand-edited CSV is the openid oUser1
    if key and (key:find("^%s") or key:find("%s$")) then key = key:match("^%s*(.-)%s*$") end
    return key, row, rec
  end

  -- account outcomes once committed, then forget them
  local function account(list)
    for _, p in ipairs(list) do
      st.done = st.done + 1
      local s = p.state
      if s == "sent" then
        st.sent = st.sent + 1
        if opts.log_items then
          report:event("sent", { row = p.row, key = p.key, result = p.result, attempts = p.attempts })
        end
      elseif s == "refused" then
        st.refused = st.refused + 1
        st.refused_by_code[p.code] = (st.refused_by_code[p.code] or 0) + 1
        report:event("refused", { row = p.row, key = p.key, code = p.code, message = p.message })
      elseif s == "failed" then
        st.failed = st.failed + 1
        report:event("failed", { row = p.row, key = p.key, code = p.code, message = p.message,
                                 attempts = p.attempts })
      else
        st.not_attempted = st.not_attempted + 1
      end
    end
  end

  local function write_pending()
    for _, p in ipairs(pending) do
      j:record(p.key, p.state, p.attempts, p.result, p.code, p.message)
    end
  end

  -- journal_write(fn) -> true | false: runs fn in a journal transaction. A
  -- journal that cannot be written (disk full, I/O error, damage) stops the
  -- batch: what was not committed stays in_flight or unread, and the next
  -- run sends it again with the same out_request_no.
  local function journal_write(fn)
    local ok, committed, err = pcall(j.transaction, j, function() fn(); return true end)
    if ok and committed then return true end
    if not ok and qos.is_interrupt(committed) then error(committed, 0) end -- Ctrl-C: not the journal's fault
    err = "journal: " .. tostring(ok and err or committed):gsub("^[^\n]-%.lua:%d+: ", "")
    if stop_reason then report:event("error", { message = err }) else stop("JOURNAL", err) end
    return false
  end

  -- commits the pending outcomes (and nothing else); on a journal error
  -- they stay pending (in_flight in the journal)
  local function flush()
    if #pending == 0 then return end
    local list = pending
    if not journal_write(write_pending) then return end
    pending, pending_since = {}, nil
    account(list)
    report:tick(st)
  end

  local function outcome(item, state, result, code, message)
    if ended then return end -- stays in_flight in the journal: resent, same number
    pending[#pending + 1] = { key = item.key, row = item.row, state = state,
      attempts = item.attempt or 0, result = result, code = code, message = message }
    pending_since = pending_since or qos.now()
    if #pending >= flush_size or qos.now() - pending_since >= flush_interval then flush() end
  end

  -- claims up to flush_size rows in one transaction (with the pending
  -- outcomes): new and resumed items go to the queue, in_flight committed
  local function refill()
    local list = pending
    local skipped, dups = 0, 0
    local claimed = {} -- queued only once the claims are committed
    local committed = journal_write(function()
      write_pending()
      local n = 0
      while n < flush_size do
        local key, row, rec = read_row()
        if not row then break end
        if key == nil or key == "" then -- a row without a key: refused, recorded
          key = ("(row %d)"):format(row)
          local what = j:claim(key, row, "-")
          if what == "new" or what == "resume" then
            j:record(key, "refused", 0, nil, "INVALID_ROW", "no key in this row")
            list[#list + 1] = { key = key, row = row, state = "refused", attempts = 0,
                                code = "INVALID_ROW", message = "no key in this row" }
          else
            skipped = skipped + 1
          end
        else
          local orn = M.request_no(batch_id, key)
          local what, prior = j:claim(key, row, orn)
          if what == "new" or what == "resume" then
            claimed[#claimed + 1] = { key = key, row = row, record = rec, out_request_no = orn,
                                      new = what == "new", prior = prior and prior.state,
                                      prior_code = prior and prior.code,
                                      prior_message = prior and prior.message }
            n = n + 1
          elseif what == "done" then
            skipped = skipped + 1
          else
            dups = dups + 1
          end
        end
      end
    end)
    if not committed then return end
    for _, item in ipairs(claimed) do
      qtail = qtail + 1
      queue[qtail] = item
    end
    pending, pending_since = {}, nil
    account(list)
    st.skipped, st.duplicates = st.skipped + skipped, st.duplicates + dups
    st.done = st.done + skipped + dups
    report:tick(st)
  end

  -- Rows waiting to be retried. A waiting row holds no worker: the workers
  -- go on sending other rows meanwhile. The set is bounded (max_delayed):
  -- when it is full (the API failing a lot), workers take no new rows and
  -- wait for the earliest retry instead, so memory stays bounded and a
  -- failing API is not fed the whole list.
  local delayed, max_delayed = {}, 4 * concurrency
  local sleep = async.sleep

  local function pop_delayed(due_only)
    local bi
    for i = 1, #delayed do
      if not bi or delayed[i].due < delayed[bi].due then bi = i end
    end
    if not bi or (due_only and delayed[bi].due > qos.now()) then return nil end
    local item = delayed[bi]
    delayed[bi] = delayed[#delayed]
    delayed[#delayed] = nil
    st.retrying = #delayed
    return item
  end

  local function take()
    if ended or interrupted then return nil end
    local item = pop_delayed(true)
    if item then return item end
    if not stop_reason and #delayed < max_delayed then
      if qhead > qtail and not eof then
        queue, qhead, qtail = {}, 1, 0
        refill()
      end
      if qhead <= qtail then
        item = queue[qhead]
        queue[qhead] = nil
        qhead = qhead + 1
        return item
      end
    end
    -- nothing new to send: the earliest retry, when its time comes
    item = pop_delayed(false)
    if item then
      local wait = item.due - qos.now()
      if wait > 0 then sleep(wait) end
    end
    return item
  end

  -- ---- one item ------------------------------------------------------------

  -- one try of an item: its outcome, or the item put aside for a retry
  local function process(item)
    local attempt = (item.attempt or 0) + 1
    local wait = bucket:take()
    if wait > 0 then
      -- wake on a 10 ms grid: rows paced by the bucket start in small
      -- groups, one turn of the event loop each, not one turn per row (the
      -- bucket still holds: waking later than the token is due never hurts)
      local now = qos.now()
      sleep(math.ceil((now + wait) / PACE_TICK) * PACE_TICK - now)
      if ended then return end
    end
    item.attempt = attempt
    if attempt == 1 then st.attempted = st.attempted + 1 end
    local ok, res, err = pcall(opts.send, item)
    if ended then return end
    if not ok then
      if qos.is_interrupt(res) then interrupted = true; error(res, 0) end
      local msg = tostring(res)
      -- a bug in send: the outcome is unknown; stop, keep the item to retry
      outcome(item, "failed", nil, "ERROR", msg)
      stop("ERROR", "send raised an error: " .. msg)
      return
    end
    local action, code, message = classify(res, err)
    if action == "ok" then
      -- the answer must give a result the journal can hold; one it cannot
      -- read leaves the outcome unknown: retried with the same number
      local rok, value, why = pcall(resultfn, res, item)
      if not rok and qos.is_interrupt(value) then interrupted = true; error(value, 0) end
      if rok and (type(value) == "string" or math.type(value) == "integer" or (value == nil and why == nil)) then
        return outcome(item, "sent", value ~= nil and tostring(value) or nil)
      end
      action, code = "retry", "BAD_ANSWER"
      message = "the answer cannot be read: " .. tostring(rok and (why or ("result is a " .. type(value))) or value)
    end
    if action == "retry" then
      local d = policy:delay(attempt, code)
      if not d then return outcome(item, "failed", nil, code, message) end
      st.retries = st.retries + 1
      report:event("retry", { row = item.row, key = item.key, attempt = attempt,
                              code = code, delay = math.floor(d * 1000) / 1000 })
      item.due = qos.now() + d
      delayed[#delayed + 1] = item
      st.retrying = #delayed
    elseif action == "stop" then
      -- nothing was sent for this row: it goes back to not attempted
      outcome(item, "not_attempted", nil, code, message)
      stop(code, code .. ": " .. tostring(message))
    else
      return outcome(item, "refused", nil, code, message)
    end
  end

  -- a Ctrl-C raises the interrupt in whichever task runs: that worker ends
  -- with it, and the others take no new row (take) and end too
  local function worker()
    local ok, err = pcall(function()
      while true do
        local item = take()
        if not item then return end
        process(item)
      end
    end)
    if not ok then
      if qos.is_interrupt(err) then interrupted = true end
      error(err, 0)
    end
  end

  -- ---- run -----------------------------------------------------------------
  local running = true
  local ok, err = pcall(function()
    local tasks = {}
    for i = 1, concurrency do tasks[i] = async.spawn(worker) end
    local ticker = async.spawn(function()
      while running do
        sleep(flush_interval)
        if pending_since and qos.now() - pending_since >= flush_interval then flush() end
        report:tick(st)
      end
    end)
    for _, t in ipairs(tasks) do
      local tok, terr = pcall(t.wait, t)
      -- an error (Ctrl-C raises the interrupt wherever Lua runs) ends the
      -- run at once: what is done is committed below, the rest resumes
      if not tok then error(terr, 0) end
    end
    running = false
    -- the progress display failing must not fail the run, nor pass unseen
    local pok, perr = pcall(ticker.wait, ticker)
    if not pok and not qos.is_interrupt(perr) then
      io.stderr:write("quan.batch: progress display: ", tostring(perr), "\n")
    end
  end)
  running, ended = false, true
  if not ok then
    if qos.is_interrupt(err) then
      interrupted = true
    else
      stop("ERROR", "engine: " .. tostring(err))
    end
  end

  -- whatever happened, commit the outcomes we know
  flush()

  if input_error and not stop_reason then stop("INPUT", "input: " .. input_error) end

  -- rows claimed but never sent go back to what they were, last error kept
  if not interrupted then
    local back = {}
    for i = qhead, qtail do back[#back + 1] = queue[i] end
    queue, qhead, qtail = {}, 1, 0
    if #back > 0 then
      journal_write(function()
        for _, item in ipairs(back) do
          j:record(item.key, item.new and "not_attempted" or (item.prior or "in_flight"), 0,
                   nil, item.prior_code, item.prior_message)
        end
      end)
      for _, item in ipairs(back) do
        if item.new then st.not_attempted = st.not_attempted + 1 end
        st.done = st.done + 1
      end
    end
    -- a stopped batch marks the rest of the input not attempted
    if stop_reason and not eof then
      local more = true
      while more do
        if not journal_write(function()
          for _ = 1, 2000 do
            local key, row = read_row()
            if not row then more = false; return end
            local orn
            if key == nil or key == "" then
              key, orn = ("(row %d)"):format(row), "-"
            else
              orn = M.request_no(batch_id, key)
            end
            local what = j:not_attempted(key, row, orn)
            if what == "new" or what == "kept" then st.not_attempted = st.not_attempted + 1
            elseif what == "done" then st.skipped = st.skipped + 1
            else st.duplicates = st.duplicates + 1 end
            st.done = st.done + 1
          end
        end) then more = false end
      end
    end
  end
  close_input()

  st.stop_reason, st.interrupted = stop_reason, interrupted
  local code = M.exit_code(st)
  local elapsed = qos.now() - started
  local summary = {
    batch = batch_id, journal = opts.journal, run = j.run,
    rows = st.rows, sent = st.sent, skipped = st.skipped, duplicates = st.duplicates,
    refused = st.refused, refused_by_code = st.refused_by_code, failed = st.failed,
    not_attempted = st.not_attempted, retries = st.retries, attempted = st.attempted,
    elapsed = math.floor(elapsed * 1000) / 1000,
    rows_per_sec = elapsed > 0 and math.floor(st.attempted / elapsed * 10) / 10 or 0,
    stop_reason = stop_reason, stop_code = stop_code,
    exit_code = code, exit_reason = exit_reason[code],
  }
  local jok, counts = pcall(j.counts, j)
  if jok then summary.journal_counts = counts end
  -- rows of a known total this run never read (interrupted, or an input
  -- line it could not read past)
  if (not eof or input_error) and total and total > st.rows then summary.not_read = total - st.rows end
  summary.simulated = scratch and true or nil
  report:tick(st, true)
  report:finish(summary)
  pcall(j.finish_run, j, code, cjson.encode(summary))
  j:close()
  return summary
end

-- export(journal_path, out) -> rows written | nil, message
-- Writes the journal's items as CSV (see docs/batches.md) to a path or an
-- open file. Safe while a run is writing the journal.
function M.export(path, out)
  local j, err = journal_mod.open_read(path)
  if not j then return nil, err end
  local n, e = j:export(out)
  j:close()
  return n, e
end

return M
