-- wechatpay.json: JSON as the client sends and reads it.
-- encode(v) -> text (raises on a value JSON cannot hold: programmer error);
-- decode(text) -> value | nil, message. Decoded integral numbers become Lua
-- integers (Debian's cjson 2.1.0 decodes every number as a float), so
-- `res.json.stock_use_rule.max_coupons` is 100, not 100.0.
--
-- encode writes object keys in sorted order, so the same table gives the same
-- bytes in every process (cjson follows the hash order, which Lua 5.4 seeds
-- per process): what `--dry-run` prints is what a later run sends. Integers
-- are written in full ("%d"; cjson rounds past 14 digits); strings, floats
-- and the array-or-object decision are cjson's.
local cjson = require "cjson"
local safe = require "cjson.safe"
local tointeger, mtype = math.tointeger, math.type
local concat, sort, sformat = table.concat, table.sort, string.format
local next, type, tostring = next, type, tostring

local M = {}

M.null = cjson.null

local function integers(v, depth)
  local t = type(v)
  if t == "number" then
    return tointeger(v) or v
  elseif t == "table" then
    if depth > 1000 then return v end
    for k, x in pairs(v) do
      local tx = type(x)
      if tx == "number" or tx == "table" then v[k] = integers(x, depth + 1) end
    end
  end
  return v
end

function M.decode(text)
  local v, err = safe.decode(text)
  if v == nil and err then return nil, err end
  return integers(v, 0)
end

local MAX_DEPTH = 1000

local put -- put(buf, v, depth): appends the JSON text of v to buf

-- str(s) -> s as a JSON string literal, escaped by cjson; remembered (field
-- names and enum values repeat; short ones only), the memo dropped past 2048
-- entries
local memo, memo_n = {}, 0
local function str(s)
  local e = memo[s]
  if e then return e end
  e = cjson.encode(s)
  if #s > 64 then return e end
  if memo_n >= 2048 then memo, memo_n = {}, 0 end
  memo[s], memo_n = e, memo_n + 1
  return e
end

-- array_length(t) -> n when t is a JSON array (keys 1..n, as cjson decides:
-- positive integral keys, not excessively sparse), -1 for an object
local function array_length(t)
  local max, items = 0, 0
  for k in next, t do
    if type(k) ~= "number" or k < 1 or k ~= k // 1 then return -1 end
    if k > max then max = k end
    items = items + 1
  end
  if max > 10 and max > items * 2 then error("Cannot serialise table: excessively sparse array", 0) end
  return items == 0 and -1 or tointeger(max)
end

local function put_table(buf, t, depth)
  if depth > MAX_DEPTH then error(sformat("Cannot serialise, excessive nesting (%d)", depth), 0) end
  local n = array_length(t)
  if n >= 0 then
    buf[#buf + 1] = "["
    for i = 1, n do
      if i > 1 then buf[#buf + 1] = "," end
      local v = t[i]
      if v == nil then buf[#buf + 1] = "null" else put(buf, v, depth + 1) end
    end
    buf[#buf + 1] = "]"
    return
  end
  local keys, numeric = {}, nil
  for k in next, t do
    local tk = type(k)
    if tk == "number" then
      -- a number key is written as its text, as cjson does
      numeric = numeric or {}
      local name = mtype(k) == "integer" and sformat("%d", k) or cjson.encode(k)
      numeric[name] = k
      k = name
    elseif tk ~= "string" then
      error("table key must be a number or string", 0)
    end
    keys[#keys + 1] = k
  end
  sort(keys)
  buf[#buf + 1] = "{"
  for i = 1, #keys do
    local name = keys[i]
    if i > 1 then buf[#buf + 1] = "," end
    buf[#buf + 1] = str(name)
    buf[#buf + 1] = ":"
    local k = numeric and numeric[name] or name
    put(buf, t[k], depth + 1)
  end
  buf[#buf + 1] = "}"
end

function put(buf, v, depth)
  local t = type(v)
  if t == "string" then
    buf[#buf + 1] = str(v)
  elseif t == "number" then
    buf[#buf + 1] = mtype(v) == "integer" and sformat("%d", v) or cjson.encode(v)
  elseif t == "boolean" then
    buf[#buf + 1] = v and "true" or "false"
  elseif t == "table" then
    put_table(buf, v, depth)
  else
    buf[#buf + 1] = cjson.encode(v) -- null, or cjson's error for a function
  end
end

function M.encode(v, level)
  local buf = {}
  local ok, err = pcall(put, buf, v, 1)
  if not ok then error("json: " .. tostring(err):gsub("^[^:]*:%d+: ", ""), (level or 1) + 1) end
  return concat(buf)
end

-- string(s) -> s as a JSON string literal
function M.string(s)
  return cjson.encode(s)
end

return M
