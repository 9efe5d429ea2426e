-- quan.sandbox.util: small pure helpers of the sandbox: RFC 3339 times in
-- Beijing time, query strings, canonical JSON, multipart bodies, fault specs.
local M = {}

local cjson = require "cjson"

local floor, tonumber, tostring, type = math.floor, tonumber, tostring, type
local concat, sort = table.concat, table.sort

-- days_from_civil(y, m, d) -> days since 1970-01-01 (proleptic Gregorian)
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- parse_time(s) -> epoch seconds (integer) | nil
-- Accepts YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM); a space in place of the
-- '+' of the offset is taken as '+' (an unencoded '+' in a query string).
function M.parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  rest = rest:gsub("^%.%d+", "")
  local off
  if rest == "Z" then
    off = 0
  else
    local sign, oh, om = rest:match("^([%+%- ])(%d%d):(%d%d)$")
    if not sign then return nil end
    off = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == "-" then off = -off end
  end
  y, mo, d, h, mi, se = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(se)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or se > 60 then return nil end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off
end

-- format_time(epoch) -> "YYYY-MM-DDTHH:MM:SS+08:00" (Beijing time)
function M.format_time(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", floor(t) + 8 * 3600) .. "+08:00"
end

-- day(epoch) -> "YYYYMMDD" of the Beijing calendar day
function M.day(t)
  return os.date("!%Y%m%d", floor(t) + 8 * 3600)
end

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.unescape = unescape

-- split_target("/a/b?x=1") -> "/a/b", {x = "1"} (last value wins)
function M.split_target(target)
  local path, query = target:match("^([^?]*)%??(.*)$")
  local q = {}
  for pair in query:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    q[unescape(k)] = unescape(v)
  end
  return path, q
end

-- canonical(value) -> JSON text with object keys sorted, so two encodings of
-- the same request compare equal
local function canonical(v)
  local t = type(v)
  if t ~= "table" then
    if v == cjson.null then return "null" end
    return cjson.encode(v)
  end
  local n = #v
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  if n > 0 and #keys == n then
    local parts = {}
    for i = 1, n do parts[i] = canonical(v[i]) end
    return "[" .. concat(parts, ",") .. "]"
  end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = cjson.encode(tostring(k)) .. ":" .. canonical(v[k]) end
  return "{" .. concat(parts, ",") .. "}"
end
M.canonical = canonical

-- multipart(content_type, body) -> parts | nil, message
-- parts[name] = {headers = {lower-case name = value}, filename =, data =}
function M.multipart(content_type, body)
  local boundary = content_type and (content_type:match('boundary="([^"]+)"') or content_type:match("boundary=([^;%s]+)"))
  if not boundary then return nil, "no multipart boundary" end
  local delim = "--" .. boundary
  local parts = {}
  local pos = body:find(delim, 1, true)
  if not pos then return nil, "multipart boundary not found" end
  pos = pos + #delim
  while true do
    if body:sub(pos, pos + 1) == "--" then break end
    if body:sub(pos, pos + 1) ~= "\r\n" then return nil, "malformed multipart body" end
    pos = pos + 2
    local hend = body:find("\r\n\r\n", pos, true)
    if not hend then return nil, "malformed multipart headers" end
    local headers = {}
    for line in body:sub(pos, hend - 1):gmatch("[^\r\n]+") do
      local k, v = line:match("^([^:]+):%s*(.*)$")
      if k then headers[k:lower()] = v end
    end
    local dstart = hend + 4
    local nxt = body:find("\r\n" .. delim, dstart, true)
    if not nxt then return nil, "unterminated multipart part" end
    local disp = headers["content-disposition"] or ""
    local name = disp:match('name="([^"]*)"')
    if name then
      parts[name] = {headers = headers, filename = disp:match('filename="([^"]*)"'), data = body:sub(dstart, nxt - 1)}
    end
    pos = nxt + 2 + #delim
  end
  return parts
end

-- parse_faults(spec) -> faults table | nil, message
-- spec: "latency=20ms,error500=0.05,error429=0.02,drop=0.01,tamper=signature"
-- tamper takes one kind or several joined by '+' (signature, timestamp,
-- serial, body), optionally ":rate" (default 1).
local TAMPER = {signature = true, timestamp = true, serial = true, body = true}
function M.parse_faults(spec)
  local f = {}
  if spec == nil or spec == "" or spec == "none" then return f end
  for item in tostring(spec):gmatch("[^,]+") do
    local k, v = item:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
    if not k then return nil, "faults: bad item '" .. item .. "'" end
    if k == "latency" then
      local n, unit = v:match("^([%d%.]+)(%a*)$")
      n = tonumber(n)
      if not n or (unit ~= "" and unit ~= "ms" and unit ~= "s") then
        return nil, "faults: latency wants a duration like 20ms or 1s"
      end
      f.latency = unit == "s" and n or n / 1000
    elseif k == "error500" or k == "error429" or k == "drop" then
      local r = tonumber(v)
      if not r or r < 0 or r > 1 then return nil, "faults: " .. k .. " wants a rate between 0 and 1" end
      f[k] = r
    elseif k == "tamper" then
      local kinds, rate = v:match("^([%a+]+):?([%d%.]*)$")
      if not kinds then return nil, "faults: tamper wants signature|timestamp|serial|body" end
      local list = {}
      for kind in kinds:gmatch("[^+]+") do
        if not TAMPER[kind] then return nil, "faults: unknown tamper kind '" .. kind .. "'" end
        list[#list + 1] = kind
      end
      local r = rate == "" and 1 or tonumber(rate)
      if not r or r < 0 or r > 1 then return nil, "faults: tamper's rate (after ':') wants a rate between 0 and 1" end
      f.tamper = list
      f.tamper_rate = r
    else
      return nil, "faults: unknown fault '" .. k .. "'"
    end
  end
  return f
end

-- format_faults(f) -> spec string (inverse of parse_faults)
function M.format_faults(f)
  local out = {}
  if f.latency then out[#out + 1] = ("latency=%gms"):format(f.latency * 1000) end
  for _, k in ipairs {"error500", "error429", "drop"} do
    if f[k] then out[#out + 1] = ("%s=%g"):format(k, f[k]) end
  end
  if f.tamper and #f.tamper > 0 then
    local s = "tamper=" .. concat(f.tamper, "+")
    if f.tamper_rate and f.tamper_rate ~= 1 then s = s .. ":" .. f.tamper_rate end
    out[#out + 1] = s
  end
  return concat(out, ",")
end

-- array(t) -> t, or a marker that encode() turns into [] (the cjson in use
-- encodes an empty table as {})
local EMPTY = "@@quanSandboxEmptyArray@@"
function M.array(t)
  if next(t) == nil then return EMPTY end
  return t
end

-- encode(value) -> JSON text, empty arrays from array() as []
function M.encode(v)
  local s = cjson.encode(v)
  return (s:gsub('"' .. EMPTY .. '"', "[]"))
end

-- utf8 display width used for name limits: ASCII counts 1, anything else 2
function M.width(s)
  local w = 0
  for _, c in utf8.codes(s) do w = w + (c < 128 and 1 or 2) end
  return w
end

return M
