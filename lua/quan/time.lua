-- quan.time: times as WeChat Pay writes them. The API's times are RFC 3339
-- with an explicit offset, and its zone is Beijing time (UTC+8, no daylight
-- saving): what quan prints, and what the sandbox answers, is in that zone.
-- Core layer: loads nothing.
--
--   time.BEIJING                   -> 28800, Beijing time's offset east of UTC in seconds
--   time.beijing(epoch [, format]) -> os.date text of the Beijing wall-clock time at
--                                     epoch seconds (the fraction dropped); format
--                                     default "%Y-%m-%dT%H:%M:%S+08:00" (RFC 3339)
--   time.parse(s [, lenient])      -> epoch seconds | nil, reason
--   time.duration(s)               -> seconds | nil, reason: "90s", "30m", "2h", "1d",
--                                     "1w", several in a row ("1d12h"), or plain
--                                     digits (seconds)
--   time.http(epoch)               -> an HTTP Date header's text (IMF-fixdate, GMT:
--                                     "Wed, 01 Dec 2027 02:00:00 GMT")
--   time.parse_http(s)             -> epoch seconds (integer) | nil, reason: an
--                                     IMF-fixdate, as servers write Date (RFC 9110)
--
-- parse reads "YYYY-MM-DDTHH:MM:SS[.fraction]+HH:MM" (or -HH:MM): a day that
-- exists in the proleptic Gregorian calendar, hours 00-23, seconds 00-59, an
-- offset of at most 23:59. The result is an integer, or a float when a
-- fraction is given. Strict by default: an explicit numeric offset is
-- required, as the API's "+08:00"; `lenient` also takes "Z" and a space in
-- place of the offset's "+" (an unencoded "+" in a query string), as a server
-- reading a query does. Non-string input gives nil, "not a string".
local M = {}

local type, tonumber = type, tonumber
local floor = math.floor
local smatch, date = string.match, os.date

local DAY = 86400
M.BEIJING = 8 * 3600

-- beijing(epoch [, format]) -> text
function M.beijing(t, format)
  return date("!" .. (format or "%Y-%m-%dT%H:%M:%S+08:00"), floor(t) + M.BEIJING)
end

-- days_from_civil (Howard Hinnant): days since 1970-01-01 of a proleptic
-- Gregorian date
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local MDAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
local function days_in_month(y, m)
  if m == 2 and (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) then return 29 end
  return MDAYS[m]
end

local function parse(s, lenient)
  local Y, Mo, D, h, mi, sec, frac, off = smatch(s,
    "^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not Y then return nil, "not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS+08:00)" end
  if frac == "." then return nil, "empty fraction of a second" end
  Y, Mo, D, h, mi, sec = tonumber(Y), tonumber(Mo), tonumber(D), tonumber(h), tonumber(mi), tonumber(sec)
  if Mo < 1 or Mo > 12 or D < 1 or D > days_in_month(Y, Mo) then return nil, "no such date" end
  if h > 23 or mi > 59 or sec > 59 then return nil, "no such time of day" end
  local t = days_from_civil(Y, Mo, D) * DAY + h * 3600 + mi * 60 + sec
  if not (lenient and (off == "Z" or off == "z")) then
    local sign, oh, om = smatch(off, lenient and "^([+ -])(%d%d):(%d%d)$" or "^([+-])(%d%d):(%d%d)$")
    if not sign then
      if off == "" then return nil, "missing the offset (e.g. +08:00)" end
      if off == "Z" or off == "z" then return nil, "needs an explicit offset such as +08:00, not Z" end
      return nil, "bad offset (expected +HH:MM)"
    end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then return nil, "bad offset (expected +HH:MM)" end
    local o = oh * 3600 + om * 60
    if sign == "-" then t = t + o else t = t - o end
  end
  if #frac > 1 then t = t + tonumber("0" .. frac) end
  return t
end

-- strict results are remembered (a campaign repeats the same few times); the
-- memo is dropped when it grows past 512 entries
local memo, memo_n = {}, 0

-- parse(s [, lenient]) -> epoch seconds | nil, reason
function M.parse(s, lenient)
  if type(s) ~= "string" then return nil, "not a string" end
  if lenient then return parse(s, true) end
  local t = memo[s]
  if t then return t end
  local why
  t, why = parse(s, false)
  if not t then return nil, why end
  if memo_n >= 512 then memo, memo_n = {}, 0 end
  memo[s], memo_n = t, memo_n + 1
  return t
end

local UNITS = { s = 1, m = 60, h = 3600, d = DAY, w = 7 * DAY }

-- duration(s) -> whole seconds | nil, reason
function M.duration(s)
  if type(s) ~= "string" then return nil, "not a string" end
  if smatch(s, "^%d+$") then return tonumber(s) // 1 end
  if s == "" then return nil, "empty" end
  local total, pos = 0, 1
  while pos <= #s do
    local n, unit, after = smatch(s, "^(%d+)(%a)()", pos)
    if not n or not UNITS[unit] then
      return nil, "not a duration: digits and a unit (s, m, h, d, w), several in a row, e.g. 90s, 2h, 1d12h"
    end
    total = total + tonumber(n) * UNITS[unit]
    pos = after
  end
  return total // 1
end

local MONTH_NAMES = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }
local MONTHS = {}
for i, name in ipairs(MONTH_NAMES) do MONTHS[name] = i end
local DAY_NAMES = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }

-- http(epoch) -> "Wed, 01 Dec 2027 02:00:00 GMT" (English names whatever
-- the locale, as HTTP wants them)
function M.http(t)
  local d = date("!*t", floor(t))
  return ("%s, %02d %s %04d %02d:%02d:%02d GMT"):format(DAY_NAMES[d.wday], d.day, MONTH_NAMES[d.month], d.year,
    d.hour, d.min, d.sec)
end

local WEEKDAYS = { Sun = true, Mon = true, Tue = true, Wed = true, Thu = true, Fri = true, Sat = true }

-- parse_http(s) -> epoch seconds | nil, reason: "Wed, 01 Dec 2027 02:00:00 GMT"
function M.parse_http(s)
  if type(s) ~= "string" then return nil, "not a string" end
  local wd, D, Mo, Y, h, mi, sec = smatch(s, "^(%a%a%a), (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not wd or not WEEKDAYS[wd] or not MONTHS[Mo] then
    return nil, "not an HTTP date (Wed, 01 Dec 2027 02:00:00 GMT)"
  end
  Y, Mo, D, h, mi, sec = tonumber(Y), MONTHS[Mo], tonumber(D), tonumber(h), tonumber(mi), tonumber(sec)
  if D < 1 or D > days_in_month(Y, Mo) then return nil, "no such date" end
  if h > 23 or mi > 59 or sec > 60 then return nil, "no such time of day" end
  return days_from_civil(Y, Mo, D) * DAY + h * 3600 + mi * 60 + math.min(sec, 59)
end

return M
