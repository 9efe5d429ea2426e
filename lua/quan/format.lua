-- quan.format: amounts, counts and times written for people, as the tools
-- print them (quan plan, quan sandbox clock).
--
--   yuan(fen)        -> "¥50,000.00"  (integer 分; exact, no float on the way)
--   count(n)         -> "5,000"
--   beijing(epoch)   -> "2027-12-01 10:00 Wed"  (Beijing time, seconds when not :00)
--   date(epoch)      -> "2027-12-01 Wed"
--   clock(seconds)   -> "10:00" (a time of day; 86399 is "24:00", the API's last second)
--   weekdays(list)   -> "Mon–Fri", "Sat, Sun", "every day"
--   duration(s)      -> "2h", "1d 2h", "90s"
local M = {}

local floor, mtype, sformat = math.floor, math.type, string.format

local function group(digits)
  local s = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (s:gsub("^,", ""))
end

-- count(n) -> the integer with thousands separators
function M.count(n)
  if mtype(n) ~= "integer" then return tostring(n) end
  if n < 0 then return "-" .. group(tostring(-n)) end
  return group(tostring(n))
end

-- yuan(fen) -> "¥1,234.56"; a value that is not an integer is written as is
function M.yuan(fen)
  if mtype(fen) ~= "integer" then return tostring(fen) end
  local sign = fen < 0 and "-" or ""
  if fen < 0 then fen = -fen end
  return sformat("%s¥%s.%02d", sign, group(tostring(fen // 100)), fen % 100)
end

local DAYS = { [0] = "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
M.DAYS = DAYS

local time = require "quan.time"
local BEIJING = time.BEIJING

-- beijing(epoch) -> "YYYY-MM-DD HH:MM Ddd" in Beijing time (":SS" added
-- when the seconds are not 0)
function M.beijing(t)
  t = floor(t)
  local d = os.date("!*t", t + BEIJING)
  local hm = d.sec == 0 and sformat("%02d:%02d", d.hour, d.min) or sformat("%02d:%02d:%02d", d.hour, d.min, d.sec)
  return sformat("%04d-%02d-%02d %s %s", d.year, d.month, d.day, hm, DAYS[d.wday - 1])
end

-- date(epoch) -> "YYYY-MM-DD Ddd" in Beijing time
function M.date(t)
  local d = os.date("!*t", floor(t) + BEIJING)
  return sformat("%04d-%02d-%02d %s", d.year, d.month, d.day, DAYS[d.wday - 1])
end

-- weekday(epoch) -> 0 (Sunday) .. 6 of the Beijing calendar day
function M.weekday(t)
  return os.date("!*t", floor(t) + BEIJING).wday - 1
end

-- clock(seconds) -> "HH:MM" (":SS" when needed) of a time of day; 86399
-- and 86400 are the end of the day, "24:00"
function M.clock(s)
  if s >= 86399 then return "24:00" end
  local h, m, sec = s // 3600, s % 3600 // 60, s % 60
  if sec ~= 0 then return sformat("%02d:%02d:%02d", h, m, sec) end
  return sformat("%02d:%02d", h, m)
end

-- weekdays(list) -> the days of the week in words: runs of three or more
-- consecutive days as "Mon–Fri", "every day" for all seven
function M.weekdays(list)
  local on, n = {}, 0
  for _, d in ipairs(list) do
    if mtype(d) == "integer" and d >= 0 and d <= 6 and not on[d] then on[d], n = true, n + 1 end
  end
  if n == 7 then return "every day" end
  if n == 0 then return "no day" end
  -- the week from Monday, as people read it: Mon .. Sat, Sun
  local order = { 1, 2, 3, 4, 5, 6, 0 }
  local parts, i = {}, 1
  while i <= 7 do
    if on[order[i]] then
      local j = i
      while j < 7 and on[order[j + 1]] do j = j + 1 end
      if j - i >= 2 then
        parts[#parts + 1] = DAYS[order[i]] .. "–" .. DAYS[order[j]]
      else
        for k = i, j do parts[#parts + 1] = DAYS[order[k]] end
      end
      i = j + 1
    else
      i = i + 1
    end
  end
  return table.concat(parts, ", ")
end

-- duration(seconds) -> "1d 2h", "2h 30m", "90s"
function M.duration(s)
  s = floor(s)
  if s < 0 then return "-" .. M.duration(-s) end
  if s < 120 then return s .. "s" end
  local d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
  local parts = {}
  if d > 0 then parts[#parts + 1] = d .. "d" end
  if h > 0 then parts[#parts + 1] = h .. "h" end
  if m > 0 and d == 0 then parts[#parts + 1] = m .. "m" end
  return table.concat(parts, " ")
end

return M
