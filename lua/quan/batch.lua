-- quan.batch: send one request per input row, exactly once, fast.
--
-- The engine reads rows lazily (a CSV file with a header, or any iterator),
-- records each in a SQLite journal before its call and after it, runs
-- `concurrency` calls at once on quan.async tasks under a global token
-- bucket, retries what is retryable with backoff (reusing the row's
-- out_request_no), stops the whole batch on an error every later row would
-- get too, and tells the operator what happened (progress bar or JSON lines
-- on stderr, a summary, an exit code). See docs/batches.md.
--
-- This module is the public face: it checks a run's options and names the
-- exit codes. The run itself is an object of quan.batch.engine; its parts
-- are modules of their own: the rows (quan.batch.input), the journal
-- (quan.batch.journal) and the outcomes on their way to it
-- (quan.batch.recorder), the answers judged and the delays before a retry
-- (quan.batch.retry), the rows waiting for one (quan.batch.backoff), the
-- token bucket (quan.batch.ratelimit), what the operator sees
-- (quan.batch.progress).
local M = {}

local engine = require "quan.batch.engine"
local input = require "quan.batch.input"
local journal_mod = require "quan.batch.journal"
local progress = require "quan.batch.progress"
local qos = require "quan.os"

-- Exit codes and their reasons (documented in docs/batches.md), the code
-- of a finished run's counts, and the out_request_no of a row: the engine's
-- (quan.batch.engine), here by name.
M.exit = engine.exit
M.exit_reason = engine.exit_reason
M.exit_code = engine.exit_code
M.request_no = engine.request_no

local run_opts = {
  input = "path, csv reader or iterator", key = "column name or function", total = "number",
  journal = "path", batch_id = "string", batch_prefix = "string", meta = "table",
  send = "function", classify = "function", result = "function",
  concurrency = "integer", rate = "number", burst = "number", retry = "table",
  log_format = "string", out = "file", progress_interval = "number", log_items = "boolean",
  synchronous = "string", flush_size = "integer", flush_interval = "number",
  async = "table", sep = "string", simulated = "boolean", scope = "string", continues = "boolean",
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
  if opts.continues ~= nil and type(opts.continues) ~= "boolean" then error("batch.run: continues must be a boolean", 3) end
  if opts.scope ~= nil and (type(opts.scope) ~= "string" or opts.scope == "") then
    error("batch.run: scope must be a non-empty string", 3)
  end
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
  if not input.is_source(opts.input) then
    error("batch.run: input must be a path, a csv reader or an iterator function", 3)
  end
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

-- run(opts) -> summary | nil, message, exit_code
-- opts (see docs/batches.md): input, key ("openid"), journal, send,
-- batch_id, continues, batch_prefix, scope, meta, classify, result, concurrency (64),
-- rate (400/s), burst, retry ({attempts, base, factor, max}), log_format,
-- out (io.stderr), progress_interval (5 s), log_items, total, synchronous,
-- flush_size, flush_interval, async (quan.async), sep, simulated.
-- The summary has the counts of this run, the journal's totals, the
-- exit code and its reason.
function M.run(opts)
  check_opts(opts)
  return engine.run(opts, reporter_for(opts))
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
