-- wechatpay.json: JSON as the client sends and reads it.
-- encode(v) -> text (raises on a value JSON cannot hold: programmer error);
-- decode(text) -> value | nil, message. Decoded integral numbers become Lua
-- integers (Debian's cjson 2.1.0 decodes every number as a float), so
-- `res.json.stock_use_rule.max_coupons` is 100, not 100.0.
--
-- encode writes object keys in sorted order, so the same table gives the same
-- bytes in every process (cjson follows the hash order, which Lua 5.4 seeds
-- per process): what `--dry-run` prints is what a later run sends. Integral
-- numbers are written in full ("%d"; cjson rounds past 14 digits and writes
-- 1e15 as "1e+15"); strings and other floats are written as cjson writes
-- them. A table is an array when its keys are exactly 1..n, an object when
-- they are not all positive integers; json.empty_array is an empty array. encode raises, naming the field, for
-- what WeChat Pay could not read as meant: an array with holes (a nil
-- inside 1..n; cjson would write null), a string or key that is not valid
-- UTF-8, NaN and infinities.
local cjson = require "cjson"
local safe = require "cjson.safe"
local tointeger, mtype, huge = math.tointeger, math.type, math.huge
local concat, sort, sformat = table.concat, table.sort, string.format
local next, type, tostring = next, type, tostring
local utf8len = utf8.len -- strict: no surrogates, nothing past U+10FFFF, no overlong forms
local is_interrupt = require("quan.os").is_interrupt

local M = {}

M.null = cjson.null
local null = cjson.null

-- empty_array: written as [] (an empty table is written as {}), as the
-- OpenResty cjson's cjson.empty_array; read-only
local EMPTY_ARRAY = setmetatable({}, {
  __name = "wechatpay.json.empty_array",
  __newindex = function() error("wechatpay.json.empty_array is read-only", 2) end,
})
M.empty_array = EMPTY_ARRAY

local integers = require("quan.json").integers -- in place, in C

function M.decode(text)
  local v, err = safe.decode(text)
  if v == nil and err then return nil, err end
  return integers(v)
end

local MAX_DEPTH = 1000

-- str(s) -> s as a JSON string literal, escaped by cjson | nil when s is
-- not valid UTF-8 (cjson would write the bytes as they are); remembered
-- (field names and enum values repeat; short ones only), the memo dropped
-- past 2048 entries
local memo, memo_n = {}, 0
local function str(s)
  local e = memo[s]
  if e then return e end
  if not utf8len(s) then return nil end
  e = cjson.encode(s)
  if #s > 64 then return e end
  if memo_n >= 2048 then memo, memo_n = {}, 0 end
  memo[s], memo_n = e, memo_n + 1
  return e
end

-- array_length(t) -> n when t is a JSON array (positive integral keys, all
-- of 1..n), -1 for an object, -2 and a message for an array with holes:
-- a nil inside 1..n would go out as null, which WeChat Pay refuses
local function array_length(t)
  local max, items = 0, 0
  for k in next, t do
    if mtype(k) ~= "integer" or k < 1 then return -1 end -- a float key has no integral value
    if k > max then max = k end
    items = items + 1
  end
  if max > items then
    local hole = 1
    while rawget(t, hole) ~= nil do hole = hole + 1 end
    return -2, sformat("is a sparse array (%d values under keys up to %d, none at [%d]); use a sequence 1..n",
      items, max, hole)
  end
  return items == 0 and -1 or tointeger(max)
end

-- the output of the encode in progress: pieces buf[1..n] (encode calls no
-- Lua code of the caller's, so one at a time); keys[d] is the key under which
-- the value at depth d + 1 sits, for naming the field in an error
local buf, n
local at = {}

-- fail(depth, msg): raises msg naming the field at depth ("a.b[2]: msg")
local function fail(depth, msg)
  if depth > 1 then
    local parts = {}
    for d = 1, depth - 1 do
      local k = at[d]
      parts[#parts + 1] = type(k) == "number" and ("[" .. sformat("%d", k) .. "]")
        or ((d > 1 and "." or "") .. tostring(k))
    end
    msg = "field " .. concat(parts) .. ": " .. msg
  end
  error(msg, 0)
end

local function put(v, depth)
  local t = type(v)
  if t == "string" then
    local e = str(v)
    if not e then fail(depth, sformat("is not valid UTF-8 (at byte %d)", select(2, utf8len(v)))) end
    n = n + 1; buf[n] = e
  elseif t == "number" then
    -- integers, and floats with an integral value (1000.0, 1e15), in full
    local i = tointeger(v)
    if not i and (v ~= v or v == huge or v == -huge) then fail(depth, "is not a finite number (" .. (v ~= v and "NaN" or tostring(v)) .. ")") end
    n = n + 1; buf[n] = i and sformat("%d", i) or cjson.encode(v)
  elseif t == "boolean" then
    n = n + 1; buf[n] = v and "true" or "false"
  elseif v == null then
    n = n + 1; buf[n] = "null"
  elseif t ~= "table" then
    fail(depth, "a " .. t .. " is not a JSON value")
  else
    if depth > MAX_DEPTH then error(sformat("nested more than %d deep (a table that contains itself?)", MAX_DEPTH), 0) end
    if v == EMPTY_ARRAY then n = n + 1; buf[n] = "[]" return end
    local mt = getmetatable(v)
    if mt and mt.__name == "wechatpay.node" then
      fail(depth, "is " .. tostring(v) .. ", not a value (a misspelt field of the client, such as wx.mchId for wx.mchid?)")
    end
    local len, why = array_length(v)
    if why then fail(depth, why) end
    if len >= 0 then
      for i = 1, len do
        n = n + 1; buf[n] = i == 1 and "[" or ","
        at[depth] = i
        put(rawget(v, i), depth + 1)
      end
      n = n + 1; buf[n] = "]"
      return
    end
    local keys, numeric = {}, nil
    for k in next, v do
      local tk = type(k)
      if tk == "number" then
        -- a number key is written as its text, as cjson does
        numeric = numeric or {}
        if k == huge or k == -huge then fail(depth, "has a key that is not a finite number (" .. tostring(k) .. ")") end
        local name = mtype(k) == "integer" and sformat("%d", k) or cjson.encode(k)
        numeric[name] = k
        k = name
      elseif tk ~= "string" then
        fail(depth, "has a key that is a " .. tk .. " (keys must be strings or numbers)")
      end
      keys[#keys + 1] = k
    end
    if keys[1] == nil then n = n + 1; buf[n] = "{}" return end
    sort(keys)
    for i = 1, #keys do
      local name = keys[i]
      local e = str(name)
      if not e then
        fail(depth, sformat("has a key that is not valid UTF-8 (at byte %d)", select(2, utf8len(name))))
      end
      n = n + 1; buf[n] = i == 1 and "{" or ","
      n = n + 1; buf[n] = e
      n = n + 1; buf[n] = ":"
      local k = numeric and numeric[name] or name
      at[depth] = k
      put(rawget(v, k), depth + 1)
    end
    n = n + 1; buf[n] = "}"
  end
end

-- the same text from C for plain values (quan.json; nil for anything else,
-- which the Lua encoder below writes or names in its error)
local fast = package.preload["quan.json"] and require("quan.json").encode

function M.encode(v, level)
  if fast then
    local s = fast(v)
    if s then return s end
  end
  buf, n = {}, 0
  local ok, err = pcall(put, v, 1)
  local out = ok and concat(buf, "", 1, n)
  buf = nil
  if not ok and is_interrupt(err) then error(err, 0) end -- a Ctrl-C (a signal) is no JSON error
  if not ok then error("json: " .. tostring(err):gsub("^[^:]*:%d+: ", ""), (level or 1) + 1) end
  return out
end

-- string(s) -> s as a JSON string literal (the bytes as they are: check
-- utf8.len(s) first where that matters)
function M.string(s)
  return cjson.encode(s)
end

return M
