-- quan.sandbox.clock: `quan sandbox clock [--state DIR] [+DURATION | TIME]`,
-- the business clock of a running sandbox from the command line (the
-- control endpoint /sandbox/clock, over the sandbox's own HTTPS with its CA).
--
--   quan sandbox clock --state DIR                  prints the clock
--   quan sandbox clock --state DIR +2h              moves it 2 hours ahead
--   quan sandbox clock --state DIR "2027-12-01 10:00"   moves it to that Beijing time
--
-- The clock moves back only on a sandbox without stocks. Exit status: 0 done, 1 no sandbox serves
-- DIR or it refused, 2 usage. See docs/sandbox.md.
local M = {}

local format = require "quan.format"

-- DURATION: a number and a unit, several in a row
M.DURATIONS = "+90s, +30m, +2h, +1d, +1w, +1d12h"

-- seconds_of(spec) -> seconds of "+1d12h" | nil (quan.time.duration after the +)
local function seconds_of(spec)
  local rest = spec:match("^%+(.+)$")
  return rest and require("quan.time").duration(rest) or nil
end

-- usage(message [, who]) -> 2, after the message and the sandbox command's usage
local function usage(message, who)
  io.stderr:write(who or "quan sandbox clock", ": ", message, "\n", require("quan.cli").usage("sandbox"))
  return 2
end

-- control(dir, method, body) -> answer table | nil, message: a control
-- request to /sandbox/clock of the sandbox serving dir
local function control(dir, method, body)
  return require("quan.sandbox.remote").request(dir, method, "/sandbox/clock", body, 10)
end

-- relative(offset) -> "2h ahead of real time", "3d behind real time"
local function relative(offset)
  if offset < 0 then return format.duration(-offset) .. " behind real time" end
  return format.duration(offset) .. " ahead of real time"
end

local function epoch(rfc)
  return require("quan.time").parse(rfc)
end

-- main(o, arguments, word) -> exit status: `quan sandbox clock [TIME]`
-- (word "clock"; o: the sandbox command's options, of which --state counts)
function M.main(o, arguments, word)
  if word ~= "clock" then
    return usage("unexpected argument '" .. tostring(word) .. "'", "quan sandbox") -- the usage names clock
  end
  if #arguments > 1 then
    return usage("one clock change at a time (got '" .. arguments[1] .. "' and '" .. arguments[2] .. "')")
  end
  if o.faults or o.ready_file or o.temporary then
    return usage("clock takes --state only")
  end
  local target = arguments[1]
  local dir = o.state or require("quan.sandbox").default_state()
  local advance
  if target then
    advance = seconds_of(target)
    -- the most one move can take, from the furthest behind to the furthest
    -- ahead of real time: a longer one is never possible, whatever the clock
    local control = require("quan.sandbox.control")
    local limit = control.MAX_CLOCK_OFFSET + control.MAX_CLOCK_BACK
    if advance and advance > limit then
      return usage(("'%s' is more than the clock can move at once (%s)"):format(target, format.duration(limit)))
    end
    if not advance then
      local ok, t = pcall(require("wechatpay.favor").at, target)
      if not ok then
        return usage("'" .. target .. "' is neither +DURATION (" .. M.DURATIONS .. ") nor a time \"YYYY-MM-DD HH:MM\"")
      end
      advance = epoch(t)
    end
  end
  local now, cerr = control(dir, "GET")
  if not now then
    io.stderr:write("quan sandbox clock: ", cerr, "\n")
    return 1
  end
  local before = epoch(now.now)
  if not target then
    io.stdout:write(("%s (Beijing time), %s\n"):format(format.beijing(before), relative(now.offset_seconds)))
    return 0
  end
  if not target:find("^%+") then -- a time: the step to it (back only on a sandbox without stocks)
    advance = advance - math.floor(before)
  end
  local after, aerr = control(dir, "POST", require("cjson").encode { advance_seconds = advance })
  if not after then
    io.stderr:write("quan sandbox clock: ", aerr, "\n")
    return 1
  end
  io.stdout:write(("%s -> %s (Beijing time), %s\n"):format(format.beijing(before),
    format.beijing(epoch(after.now)), relative(after.offset_seconds)))
  return 0
end

return M
