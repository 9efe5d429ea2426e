-- quan.sandbox.util: small pure helpers of the sandbox: multipart bodies,
-- fault specs, strict JSON, the form of times in answers, answers with
-- empty arrays. (Times, query strings and sorted JSON have their homes in
-- quan.time, quan.url and wechatpay.json.)
local M = {}

local cjson = require "cjson"

local tonumber, tostring = tonumber, tostring
local concat = table.concat

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

-- decode(text) -> value | nil, message: JSON as the API reads it, numbers in
-- JSON's decimal form only (lua-cjson also takes 0x10, NaN and Infinity
-- unless told not to)
local strict = require("cjson.safe").new()
strict.decode_invalid_numbers(false)
M.decode = strict.decode

-- times(fraction) -> rewrite(value) -> value: the form of the API's times
-- in answers. "none" (what real answers carry: 2020-09-09T10:10:59+08:00)
-- leaves them; "millis" (what the official pages' examples show:
-- 2015-05-20T13:29:35.120+08:00) rewrites, in place, every string field
-- named *_time that is an RFC 3339 time without a fraction to carry
-- milliseconds (.000: the sandbox keeps whole seconds).
local function with_millis(v)
  if type(v) ~= "table" then return v end
  for k, x in pairs(v) do
    if type(x) == "table" then
      with_millis(x)
    elseif type(x) == "string" and type(k) == "string" and k:sub(-5) == "_time" then
      local whole, offset = x:match("^(%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d)([+-]%d%d:%d%d)$")
      if whole then v[k] = whole .. ".000" .. offset end
    end
  end
  return v
end
local function as_is(v) return v end
function M.times(fraction)
  return fraction == "millis" and with_millis or as_is
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

return M
