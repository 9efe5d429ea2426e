-- quan.batch.progress: what the operator sees while a batch runs.
--
-- Three formats, all on stderr (stdout is left for data):
--   "bar"   a one-line progress bar redrawn in place on a terminal
--           (done/total, rate, ETA, refused, failed); notable events print
--           above it; the summary at the end
--   "json"  one JSON object per line per event (start, progress every few
--           seconds, retry, refused, failed, stop, summary): for cron mail,
--           journald and log shippers
--   "text"  the same events as short human lines
-- The formatting functions are pure and exported for the tests.
local M = {}

local cjson = require "cjson"

local floor, max, min = math.floor, math.max, math.min
local concat, sort = table.concat, table.sort

-- duration(s) -> "1:02:03", "2:03", "0:05"; "?" when unknown
function M.duration(s)
  if s == nil or s ~= s or s == math.huge or s < 0 then return "?" end
  s = floor(s + 0.5)
  local h, m, sec = s // 3600, s % 3600 // 60, s % 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, sec) end
  return ("%d:%02d"):format(m, sec)
end

-- Keys printed first, in this order; the rest sorted.
local first_keys = { "ts", "event", "batch", "row", "key" }
local first_rank = {}
for i, k in ipairs(first_keys) do first_rank[k] = i end

local function key_order(a, b)
  local ra, rb = first_rank[a], first_rank[b]
  if ra and rb then return ra < rb end
  if ra then return true end
  if rb then return false end
  return a < b
end

-- json_line(t) -> one line of JSON with a stable key order (ts, event,
-- batch, row, key first, then sorted), no trailing newline
function M.json_line(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  sort(keys, key_order)
  local parts = {}
  for i, k in ipairs(keys) do
    local v = t[k]
    if math.type(v) == "float" and v == floor(v) and v > -2^53 and v < 2^53 then
      v = math.tointeger(v)
    end
    parts[i] = cjson.encode(k) .. ":" .. cjson.encode(v)
  end
  return "{" .. concat(parts, ",") .. "}"
end

-- text_line(t) -> "event k=v k=v" for humans
function M.text_line(t)
  local keys = {}
  for k in pairs(t) do
    if k ~= "ts" and k ~= "event" then keys[#keys + 1] = tostring(k) end
  end
  sort(keys, key_order)
  local parts = { tostring(t.event) }
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "table" then v = (cjson.encode(v):gsub("\\/", "/"))
    elseif math.type(v) == "float" then v = ("%.1f"):format(v) end
    v = tostring(v)
    -- for a person: a key past 200 bytes (a broken input line) cut, its length said
    if k == "key" and #v > 200 then v = v:sub(1, 200) .. ("... (%d bytes)"):format(#v) end
    -- quoted as a JSON string (control characters escaped), but "/" as itself (cjson writes "\/")
    if v:find("[%s%c\"]") then v = (cjson.encode(v):gsub("\\/", "/")) end
    parts[#parts + 1] = k .. "=" .. v
  end
  return concat(parts, " ")
end

-- bar_line(s, width) -> the progress line, at most width columns
-- s = {done, total (nil when unknown), rate (rows/s), eta (s or nil),
--      refused, failed, retrying, next_retry (s until the earliest retry)}
function M.bar_line(s, width)
  width = width or 80
  local counts = ("%d/%s"):format(s.done, s.total and tostring(s.total) or "?")
  local tail = ("%s %4.0f/s ETA %s"):format(counts, s.rate or 0, M.duration(s.eta))
  local extra = {}
  if (s.refused or 0) > 0 then extra[#extra + 1] = ("refused %d"):format(s.refused) end
  if (s.failed or 0) > 0 then extra[#extra + 1] = ("failed %d"):format(s.failed) end
  if (s.retrying or 0) > 0 then
    extra[#extra + 1] = ("retrying %d"):format(s.retrying)
      .. (s.next_retry and (" (next in %s)"):format(M.duration(s.next_retry)) or "")
  end
  if #extra > 0 then tail = tail .. " " .. concat(extra, " ") end
  local pct = ""
  local frac = s.total and s.total > 0 and min(1, s.done / s.total) or nil
  if frac then pct = ("%3d%% "):format(floor(frac * 100)) end
  local room = width - #tail - #pct - 3
  if room < 10 then return (pct .. tail):sub(1, width) end
  room = min(room, 40)
  local bar
  if frac then
    local fill = floor(frac * room + 0.5)
    bar = "[" .. ("#"):rep(fill) .. ("."):rep(room - fill) .. "]"
  else -- unknown total: a marker that moves
    local p = s.done % room
    bar = "[" .. ("."):rep(p) .. "#" .. ("."):rep(room - p - 1) .. "]"
  end
  return bar .. " " .. pct .. tail
end

-- summary_text(sum) -> several lines for humans (no trailing newline)
-- sum = {batch, rows, sent, skipped, refused, refused_by_code = {CODE = n},
--        failed, not_attempted, duplicates, elapsed, exit_code, exit_reason,
--        journal_counts, not_read, simulated}
function M.summary_text(sum)
  local lines = {}
  local function add(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  add("batch %s: %d %s in %.1f s (%.0f rows/s)", tostring(sum.batch), sum.rows or 0, sum.rows == 1 and "row" or "rows",
      sum.elapsed or 0, (sum.elapsed or 0) > 0 and (sum.attempted or 0) / sum.elapsed or 0)
  if sum.continued then
    add("  sent or held   %8d  (sent now or already held: this batch continues one begun elsewhere,"
      .. " and the API does not say which)", sum.sent_or_held or 0)
  else
    add("  sent           %8d", sum.sent or 0)
  end
  add("  already done   %8d", sum.skipped or 0)
  local codes = {}
  for code, n in pairs(sum.refused_by_code or {}) do codes[#codes + 1] = { code, n } end
  sort(codes, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return a[1] < b[1] end)
  local by = {}
  for _, c in ipairs(codes) do by[#by + 1] = c[1] .. " " .. c[2] end
  add("  refused        %8d%s", sum.refused or 0, #by > 0 and "  (" .. concat(by, ", ") .. ")" or "")
  add("  failed         %8d", sum.failed or 0)
  add("  not attempted  %8d", sum.not_attempted or 0)
  if (sum.duplicates or 0) > 0 then add("  duplicate rows %8d", sum.duplicates) end
  local unknown = sum.in_flight or (sum.journal_counts and sum.journal_counts.in_flight) or 0
  if unknown > 0 then add("  outcome unknown%8d  (in flight when the run ended: run again, same out_request_no)", unknown) end
  if (sum.unrecorded or 0) > 0 then
    add("  not recorded   %8d  (read, but the journal could not be written: the next run reads them again)",
        sum.unrecorded)
  end
  if (sum.not_read or 0) > 0 then add("  not read       %8d  (the input was not read to its end)", sum.not_read) end
  if sum.simulated then add("simulated: nothing was sent, the journal was not changed") end
  if sum.stop_reason then add("stopped: %s", sum.stop_reason) end
  add("exit %d (%s)", sum.exit_code or 0, sum.exit_reason or "")
  return concat(lines, "\n")
end

-- A rate over the last few seconds from (time, done) samples.
local function window_rate(self, now, done)
  local w = self.window
  w[#w + 1] = { now, done }
  while #w > 2 and now - w[1][1] > 5 do table.remove(w, 1) end
  local t0, d0 = w[1][1], w[1][2]
  if now - t0 < 0.25 then
    local el = now - self.started
    return el > 0 and done / el or 0
  end
  return (done - d0) / (now - t0)
end

local Reporter = {}
Reporter.__index = Reporter

local reporter_opts = { format = true, out = true, clock = true, wallclock = true,
                        interval = true, columns = true, batch = true }

M.FORMATS = { bar = true, json = true, text = true }

-- new{format = "bar"|"json"|"text", out = file (io.stderr),
--     interval = seconds between progress events (5), batch = id,
--     clock, wallclock, columns = function() -> width} -> reporter
function M.new(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not reporter_opts[k] then error("progress.new: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local format = opts.format or "json"
  if not M.FORMATS[format] then
    error("progress.new: format must be 'bar', 'json' or 'text'", 2)
  end
  local qos = require "quan.os"
  local clock = opts.clock or qos.now
  return setmetatable({
    format = format, out = opts.out or io.stderr, clock = clock,
    wallclock = opts.wallclock or qos.time, interval = opts.interval or 5,
    columns = opts.columns or function() return qos.columns() or 80 end,
    batch = opts.batch, started = clock(), last_draw = -math.huge,
    last_event = clock(), window = {}, drawn = false,
  }, Reporter)
end

-- format_for(env_value, isatty) -> "bar" | "json" | "text": the bar on a
-- terminal unless QUAN_LOG_FORMAT says otherwise, JSON lines elsewhere
function M.format_for(value, tty)
  if value == "json" or value == "text" then return value end
  if value == "bar" then return "bar" end
  return tty and "bar" or "json"
end

function Reporter:_clear()
  if self.drawn then
    self.out:write("\r\27[K")
    self.drawn = false
  end
end

-- reporter:event(name, fields): one event line (in bar mode only events
-- other than retry/progress are printed, above the bar)
function Reporter:event(name, fields)
  local t = {}
  for k, v in pairs(fields or {}) do t[k] = v end
  t.event = name
  t.batch = t.batch or self.batch
  if self.format == "json" then
    t.ts = ("%.3f"):format(self.wallclock())
    t.ts = tonumber(t.ts)
    self.out:write(M.json_line(t), "\n")
  elseif self.format == "text" then
    self.out:write(M.text_line(t), "\n")
  else
    if name == "retry" or name == "progress" or name == "summary" then return end
    self:_clear()
    self.out:write(M.text_line(t), "\n")
  end
  self.out:flush()
end

-- eta(stats, rate, retry_in) -> seconds left | nil: the rows left at the
-- recent rate; when the rows left are all waiting for a retry, no sooner
-- than the earliest retry
local function eta(stats, rate, retry_in)
  if not stats.total then return nil end
  local left = max(0, stats.total - stats.done)
  local e = rate > 0 and left / rate or nil
  if retry_in and left > 0 and left <= (stats.retrying or 0) then e = max(e or 0, retry_in) end
  return e
end

-- reporter:tick(stats[, force]): stats = {done, total, refused, failed,
-- retrying, next_retry (when the earliest retry is due, on the reporter's
-- clock), sent, sent_or_held, skipped}; redraws the bar (at most 10 times a
-- second) or emits a progress event every `interval` seconds
function Reporter:tick(stats, force)
  local now = self.clock()
  local retry_in = (stats.retrying or 0) > 0 and stats.next_retry and max(0, stats.next_retry - now) or nil
  if self.format == "bar" then
    if not force and now - self.last_draw < 0.1 then return end
    self.last_draw = now
    local rate = window_rate(self, now, stats.done)
    local s = { done = stats.done, total = stats.total, rate = rate, eta = eta(stats, rate, retry_in),
                refused = stats.refused, failed = stats.failed, retrying = stats.retrying,
                next_retry = retry_in }
    self.out:write("\r", M.bar_line(s, max(20, (self.columns() or 80) - 1)), "\27[K")
    self.out:flush()
    self.drawn = true
  else
    if not force and now - self.last_event < self.interval then return end
    self.last_event = now
    local rate = window_rate(self, now, stats.done)
    local ev = { done = stats.done, total = stats.total, sent = stats.sent,
                 skipped = stats.skipped, refused = stats.refused, failed = stats.failed,
                 retrying = stats.retrying, rate = floor(rate * 10 + 0.5) / 10 }
    if (stats.sent_or_held or 0) > 0 then ev.sent_or_held = stats.sent_or_held end
    if retry_in then ev.next_retry_s = floor(retry_in * 10 + 0.5) / 10 end
    local e = eta(stats, rate, retry_in)
    if e then ev.eta_s = floor(e + 0.5) end
    self:event("progress", ev)
  end
end

-- reporter:finish(summary): the summary (lines for humans in the bar and
-- text formats, a JSON event otherwise)
function Reporter:finish(sum)
  if self.format ~= "json" then
    self:_clear()
    self.out:write(M.summary_text(sum), "\n")
    self.out:flush()
  else
    local t = {}
    for k, v in pairs(sum) do t[k] = v end
    t.batch = nil -- event() puts the reporter's batch id first
    self:event("summary", t)
  end
end

return M
