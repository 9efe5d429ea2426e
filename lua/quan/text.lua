-- quan.text: how wide text is, in the two senses quan needs. Core layer:
-- loads nothing.
--
--   text.width(s)            -> columns s takes on a terminal: East Asian wide
--                               and fullwidth characters (UAX #11) and emoji
--                               count 2, combining marks, zero-width characters
--                               and ANSI colour codes 0; a byte that is not
--                               valid UTF-8 counts 1, the text around it as
--                               what it is
--   text.charwidth(c)        -> 0, 1 or 2 columns of the code point c
--   text.fits(s, cjk, ascii) -> true when s is valid UTF-8 within WeChat Pay's
--                               limit "at most `cjk` Chinese characters or
--                               `ascii` letters": a character outside ASCII
--                               weighs ascii/cjk letters (stock_name: 9 or 20,
--                               so 20 * non-ASCII + 9 * ASCII <= 180)
local M = {}

local tostring, utf8len, codes = tostring, utf8.len, utf8.codes

-- East Asian Wide and Fullwidth ranges (UAX #11), and emoji presentation.
local wide = {
  { 0x1100, 0x115F }, { 0x231A, 0x231B }, { 0x2329, 0x232A }, { 0x2E80, 0x303E },
  { 0x3041, 0x33FF }, { 0x3400, 0x4DBF }, { 0x4E00, 0x9FFF }, { 0xA000, 0xA4CF },
  { 0xA960, 0xA97F }, { 0xAC00, 0xD7A3 }, { 0xF900, 0xFAFF }, { 0xFE10, 0xFE19 },
  { 0xFE30, 0xFE6F }, { 0xFF00, 0xFF60 }, { 0xFFE0, 0xFFE6 }, { 0x1F300, 0x1F64F },
  { 0x1F900, 0x1F9FF }, { 0x20000, 0x2FFFD }, { 0x30000, 0x3FFFD },
}
-- Zero width: combining marks, zero-width space/joiners, variation selectors.
local zero = {
  { 0x0300, 0x036F }, { 0x200B, 0x200F }, { 0x20D0, 0x20FF }, { 0xFE00, 0xFE0F },
}

local function in_ranges(ranges, c)
  for i = 1, #ranges do
    local r = ranges[i]
    if c < r[1] then return false end
    if c <= r[2] then return true end
  end
  return false
end

-- charwidth(codepoint) -> 0, 1 or 2
local function charwidth(c)
  if c < 0x300 then return (c < 32 or c == 127) and 0 or 1 end
  if in_ranges(zero, c) then return 0 end
  return in_ranges(wide, c) and 2 or 1
end
M.charwidth = charwidth

-- width(s) -> terminal columns
function M.width(s)
  s = tostring(s):gsub("\27%[[%d;]*m", "")
  local n, i, len = 0, 1, #s
  while i <= len do
    local ok, bad = utf8len(s, i)
    local last = ok and len or bad - 1
    for _, c in codes(s:sub(i, last)) do n = n + charwidth(c) end
    if ok then break end
    n, i = n + 1, bad + 1
  end
  return n
end

-- fits(s, cjk, ascii) -> whether s is within the limit
function M.fits(s, cjk, ascii)
  local n = utf8len(s)
  if not n then return false end
  if n == #s then return n <= ascii end -- all ASCII
  local narrow = #s:gsub("[\128-\255]", "")
  return (n - narrow) * ascii + narrow * cjk <= cjk * ascii
end

return M
