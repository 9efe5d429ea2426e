-- tests.support.batch: scaffolding of the batch specs: input files, journal
-- counts, API errors as the client returns them, batch.run over a virtual
-- clock with its events captured, a Ctrl-C as the host raises it, and
-- reading events.
local sh = require "tests.support.sh"
local fakeasync = require "tests.support.fakeasync"
local cjson = require "cjson"

local M = {}

-- lines(t) -> the lines of t, each ended by "\n"
function M.lines(t) return table.concat(t, "\n") .. "\n" end

-- read_all(reader) -> every record of a quan.batch.csv reader (raises on a
-- malformed line)
function M.read_all(r)
  local out = {}
  while true do
    local rec, n = r:read()
    if not rec then
      if n then error(n) end
      return out
    end
    out[#out + 1] = rec
  end
end

-- users_csv(dir, n[, extra]) -> path of dir/users.csv: "openid,name" and n
-- rows o00001.., then the extra lines
function M.users_csv(dir, n, extra)
  local t = { "openid,name" }
  for i = 1, n do t[#t + 1] = ("o%05d,user %d"):format(i, i) end
  for _, l in ipairs(extra or {}) do t[#t + 1] = l end
  return sh.write(dir .. "/users.csv", M.lines(t))
end

-- counts_of(path) -> the journal's counts by state (and total) | nil when
-- it cannot be read (yet)
function M.counts_of(path)
  local j = require("quan.batch.journal").open_read(path)
  if not j then return nil end
  local ok, c = pcall(j.counts, j)
  j:close()
  return ok and c or nil
end

-- api_error(status, code[, message]) -> nil, err: an API error as a
-- client call returns it
function M.api_error(status, code, message)
  return nil, { kind = "http", status = status, code = code, message = message or code }
end

-- ok(item) -> a success answer with coupon C<key>
function M.ok(item)
  return { status = 200, json = { coupon_id = "C" .. item.key } }
end

-- null_out: a log destination that drops everything
M.null_out = { write = function(self) return self end, flush = function() end }

-- run_fake(opts) -> summary, events, calls, message, code: batch.run with
-- a virtual clock (opts.async), JSON events captured, every send recorded
-- in calls ({key, orn, attempt}) and taking 10 ms; rate 1e6 and retries
-- {base = 0.01, attempts = 4} unless opts says otherwise
function M.run_fake(opts)
  local A = fakeasync.new { virtual = true }
  local events = {}
  local out = {
    write = function(self, ...)
      local s = table.concat({ ... })
      for l in s:gmatch("[^\n]+") do events[#events + 1] = cjson.decode(l) end
      return self
    end,
    flush = function() end,
  }
  local calls = {}
  local send = opts.send
  opts.send = function(item)
    calls[#calls + 1] = { key = item.key, orn = item.out_request_no, attempt = item.attempt }
    A.sleep(0.01)
    return send(item)
  end
  opts.async = A
  opts.out = out
  opts.log_format = "json"
  opts.rate = opts.rate or 1e6
  opts.retry = opts.retry or { base = 0.01, attempts = 4 }
  local sum, err, code = require("quan.batch").run(opts)
  return sum, events, calls, err, code
end

-- ctrl_c_when(condition) -> fired(): the first time condition() holds in
-- the main thread (outside every task), raises the interrupt
-- (quan.os.interrupt) there, as the host's SIGINT hook does when Ctrl-C
-- reaches the REPL. fired() removes the
-- hook and says whether it fired.
function M.ctrl_c_when(condition)
  local fired = false
  debug.sethook(function()
    if not fired and not coroutine.isyieldable() and condition() then
      fired = true
      error(require("quan.os").interrupt, 0)
    end
  end, "", 50)
  return function()
    debug.sethook()
    return fired
  end
end

-- events_of(path) -> the JSON events of a log file (other lines skipped)
function M.events_of(path)
  local out = {}
  for line in io.lines(path) do
    local ok, e = pcall(cjson.decode, line)
    if ok and type(e) == "table" then out[#out + 1] = e end
  end
  return out
end

-- count(events, name) -> how many events are named name
function M.count(events, name)
  local n = 0
  for _, e in ipairs(events) do if e.event == name then n = n + 1 end end
  return n
end

-- last(events, name) -> the last event named name, or nil
function M.last(events, name)
  for i = #events, 1, -1 do
    if events[i].event == name then return events[i] end
  end
end

return M
