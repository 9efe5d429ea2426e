-- quan.sandbox.clock: `quan sandbox clock [--state DIR] [+DURATION | TIME]`,
-- the business clock of a running sandbox from the command line (the
-- control endpoint /sandbox/clock, over the sandbox's own HTTPS with its CA).
--
--   quan sandbox clock --state DIR                  prints the clock
--   quan sandbox clock --state DIR +2h              moves it 2 hours ahead
--   quan sandbox clock --state DIR "2027-12-01 10:00"   moves it to that Beijing time
--
-- The clock only moves forward. Exit status: 0 done, 1 no sandbox serves
-- DIR or it refused, 2 usage. See docs/sandbox.md.
local M = {}

local format = require "quan.format"

local USAGE = "usage: quan sandbox clock [--state DIR] [+DURATION | \"YYYY-MM-DD HH:MM\"]\n"
  .. "  DURATION: a number and a unit, several in a row: +90s, +30m, +2h, +1d, +1d12h\n"

local UNITS = { s = 1, m = 60, h = 3600, d = 86400, w = 7 * 86400 }

-- seconds_of(spec) -> seconds of "+1d12h" | nil
local function seconds_of(spec)
  local rest = spec:match("^%+(.+)$")
  if not rest then return nil end
  local total, pos = 0, 1
  while pos <= #rest do
    local n, unit, nxt = rest:match("^(%d+)(%a)()", pos)
    if not n or not UNITS[unit] then return nil end
    total = total + tonumber(n) * UNITS[unit]
    pos = nxt
  end
  return total
end

-- parse(args) -> {state =, target =} | nil, message (nil, nil: --help)
local function parse(args)
  local o, i = {}, 1
  while i <= #args do
    local a = args[i]
    local v = a:match("^%-%-state=(.*)$")
    if a == "--state" then
      v = args[i + 1]
      if not v then return nil, "--state needs a value" end
      i = i + 1
    end
    if v then
      o.state = v
    elseif a == "--help" or a == "-h" then
      return nil, nil
    elseif a:sub(1, 2) == "--" or (a:sub(1, 1) == "-" and #a > 1) then
      return nil, "unknown option '" .. a .. "'"
    elseif o.target then
      return nil, "one clock change at a time (got '" .. o.target .. "' and '" .. a .. "')"
    else
      o.target = a
    end
    i = i + 1
  end
  return o
end

-- control(dir, method, body) -> answer table | nil, message: a control
-- request to the sandbox serving dir
local function control(dir, method, body)
  local f = io.open(dir .. "/config.lua", "rb")
  local text = f and f:read("a")
  if f then f:close() end
  local base = text and text:match('base_url = "(https://[^"]+)"')
  if not base then
    return nil, "no sandbox state in " .. dir .. " (start one: quan sandbox --state " .. dir .. ")"
  end
  local res, err, code = require("quan.http").request {
    method = method, url = base .. "/sandbox/clock", cafile = dir .. "/ca.pem", timeout = 10,
    headers = { "Content-Type: application/json" }, body = body,
  }
  if not res then
    if code == "connect" then
      return nil, "no sandbox is serving " .. dir .. " at " .. base .. " (start one: quan sandbox --state " .. dir .. ")"
    end
    return nil, base .. "/sandbox/clock: " .. tostring(err)
  end
  local j = require("cjson.safe").decode(res.body or "")
  if res.status ~= 200 or type(j) ~= "table" then
    return nil, ("the sandbox answered %s: %s"):format(tostring(res.status),
      type(j) == "table" and tostring(j.message) or tostring(res.body))
  end
  return j
end

local function epoch(rfc)
  return require("quan.validate").rfc3339(rfc)
end

-- main(args) -> exit status
function M.main(args)
  local o, err = parse(args or {})
  if not o then
    io.stderr:write(err and ("quan sandbox clock: " .. err .. "\n") or "", USAGE)
    return err and 2 or 0
  end
  local dir = o.state or require("quan.sandbox").default_state()
  local advance
  if o.target then
    advance = seconds_of(o.target)
    if not advance then
      local ok, t = pcall(require("wechatpay.favor").at, o.target)
      if not ok then
        io.stderr:write("quan sandbox clock: '", o.target, "' is neither +DURATION nor a time \"YYYY-MM-DD HH:MM\"\n",
          USAGE)
        return 2
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
  if not o.target then
    io.stdout:write(("%s (Beijing time), %s ahead of real time\n"):format(format.beijing(before),
      format.duration(now.offset_seconds)))
    return 0
  end
  if not o.target:find("^%+") then -- a time: the step to it
    local target = advance
    if target < before then
      io.stderr:write(("quan sandbox clock: the clock only moves forward; it reads %s, later than %s\n"):format(
        format.beijing(before), format.beijing(target)))
      return 1
    end
    advance = target - math.floor(before)
  end
  local after, aerr = control(dir, "POST", require("cjson").encode { advance_seconds = advance })
  if not after then
    io.stderr:write("quan sandbox clock: ", aerr, "\n")
    return 1
  end
  io.stdout:write(("%s -> %s (Beijing time), %s ahead of real time\n"):format(format.beijing(before),
    format.beijing(epoch(after.now)), format.duration(after.offset_seconds)))
  return 0
end

return M
