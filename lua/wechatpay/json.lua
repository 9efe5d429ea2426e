-- wechatpay.json: JSON as the client sends and reads it.
-- encode(v) -> text (raises on a value JSON cannot hold: programmer error);
-- decode(text) -> value | nil, message. Decoded integral numbers become Lua
-- integers (Debian's cjson 2.1.0 decodes every number as a float), so
-- `res.json.stock_use_rule.max_coupons` is 100, not 100.0.
local cjson = require "cjson"
local safe = require "cjson.safe"
local tointeger = math.tointeger

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

function M.encode(v, level)
  local s, err = safe.encode(v)
  if not s then error("json: " .. tostring(err), (level or 1) + 1) end
  return s
end

-- string(s) -> s as a JSON string literal
function M.string(s)
  return cjson.encode(s)
end

return M
