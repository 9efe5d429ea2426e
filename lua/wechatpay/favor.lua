-- wechatpay.favor: builders for cash-coupon (代金券) campaign tables.
--
-- A literal request table, written as the API docs write it, is always valid
-- input; these builders only produce parts of that same structure:
--
--   yuan(x)            money in 元 -> integer 分 (refuses fractions of a fen)
--   at(s [, offset])   "2026-11-11 10:00" (local time) -> "2026-11-11T10:00:00+08:00"
--   seconds("10:00")   a time of day -> seconds since 00:00
--   weekdays{1, 2, from = "10:00", to = "22:00"}, daily{from =, to =}
--                      -> a coupon_available_time table with fix_available_time
--   after_receive(minutes) -> { available_time_after_receive = minutes }
--   stock(fields [, {campaign = name}]) -> a template (:with{overrides})
--   request_no(campaign, name [, mchid]) -> a deterministic out_request_no
--   merge(base, overrides) -> deep merge, arrays replaced
--   unset              a value for overrides that removes a field
--
-- Programmer errors (a wrong type, a malformed value) raise at the caller.
-- See docs/campaigns.md.
local schema = require "wechatpay.favor.schema"
local rfc3339 = require("quan.time").parse

local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring, tonumber, error
local floor, abs, tointeger = math.floor, math.abs, math.tointeger
local sformat = string.format

local M = {}

M.schema = schema

-- ---------------------------------------------------------------------------
-- money

local MAX_FEN = 2^53

-- yuan(x) -> integer 分
-- x: a decimal string ("12.34", "12", "0.01", "12.340") parsed exactly, or a
-- number (integer, or a float within float error of a whole fen: 0.1 + 0.2
-- gives 30). Refuses negatives, fractions of a fen ("12.345"), NaN, inf,
-- and anything else in a string (spaces around it too).
function M.yuan(x)
  if type(x) == "string" then
    local whole, frac = x:match("^(%d+)%.(%d+)$")
    if not whole then whole, frac = x:match("^(%d+)$"), "" end
    if not whole then
      error(sformat("favor.yuan: %q is not an amount in 元 (e.g. \"12.34\")", x), 2)
    end
    frac = frac:gsub("0+$", "")
    if #frac > 2 then
      error(sformat("favor.yuan: %q has a fraction of a fen (at most 2 decimals)", x), 2)
    end
    if #whole > 15 then error(sformat("favor.yuan: %q is too large", x), 2) end
    return tonumber(whole) * 100 + (tonumber((frac .. "00"):sub(1, 2)))
  elseif type(x) == "number" then
    if x ~= x or x == math.huge or x == -math.huge then
      error("favor.yuan: amount must be a finite number, got " .. tostring(x), 2)
    end
    if x < 0 then error("favor.yuan: amount must not be negative, got " .. tostring(x), 2) end
    if math.type(x) == "integer" then
      if x > MAX_FEN / 100 then error("favor.yuan: amount too large: " .. x, 2) end
      return x * 100
    end
    local f = x * 100
    if f > MAX_FEN then error("favor.yuan: amount too large: " .. tostring(x), 2) end
    local n = floor(f + 0.5)
    if abs(f - n) > 1e-3 then
      error(sformat("favor.yuan: %s has a fraction of a fen (at most 2 decimals)", tostring(x)), 2)
    end
    return tointeger(n)
  end
  error("favor.yuan: amount must be a string or number, got " .. type(x), 2)
end

-- ---------------------------------------------------------------------------
-- time

local function offset_seconds(offset, level)
  local sign, h, m = offset:match("^([+-])(%d%d):(%d%d)$")
  if not sign or tonumber(h) > 23 or tonumber(m) > 59 then
    error(sformat("favor.at: offset must be like \"+08:00\", got %q", offset), level + 1)
  end
  local s = tonumber(h) * 3600 + tonumber(m) * 60
  return sign == "-" and -s or s
end

-- the local times at() makes: years 1970..9999
local FIRST_YEAR, LAST_YEAR = 1970, 9999
local LAST_SECOND = 253402300799 -- 9999-12-31T23:59:59, as if at UTC

-- at(s [, offset]) -> RFC 3339 string
-- s: "YYYY-MM-DD HH:MM", "YYYY-MM-DD HH:MM:SS", "YYYY-MM-DD" (00:00), a "T"
-- in place of the space, or epoch seconds (a number); offset: "+08:00"
-- (Beijing time, the default) or any "+HH:MM" / "-HH:MM". The time at
-- offset must fall in the years 1970..9999.
function M.at(s, offset)
  if offset == nil then offset = "+08:00" end
  if type(offset) ~= "string" then error("favor.at: offset must be a string like \"+08:00\"", 2) end
  local off = offset_seconds(offset, 2)
  if type(s) == "number" then
    if s ~= s or s == math.huge or s == -math.huge then error("favor.at: epoch must be finite", 2) end
    local t = floor(s) + off
    if t < 0 or t > LAST_SECOND then
      error(sformat("favor.at: epoch %s is outside the years %d..%d at %s", tostring(s), FIRST_YEAR, LAST_YEAR,
        offset), 2)
    end
    return os.date("!%Y-%m-%dT%H:%M:%S", tointeger(t)) .. offset
  end
  if type(s) ~= "string" then
    error("favor.at: expected a time like \"2026-11-11 10:00\" or epoch seconds, got " .. type(s), 2)
  end
  local Y, Mo, D, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  local h, mi, sec = 0, 0, 0
  if Y and rest ~= "" then
    h, mi, sec = rest:match("^[ T](%d%d):(%d%d):(%d%d)$")
    if not h then
      h, mi = rest:match("^[ T](%d%d):(%d%d)$")
      sec = 0
    end
    if not h then Y = nil end
  end
  if not Y then
    error(sformat("favor.at: expected \"YYYY-MM-DD HH:MM\", got %q", s), 2)
  end
  if tonumber(Y) < FIRST_YEAR then
    error(sformat("favor.at: %q is outside the years %d..%d", s, FIRST_YEAR, LAST_YEAR), 2)
  end
  local r = sformat("%s-%s-%sT%02d:%02d:%02d%s", Y, Mo, D, tonumber(h), tonumber(mi), tonumber(sec), offset)
  -- the validator's parser (quan.time's) is the one judge of dates ("no
  -- such date", "no such time of day"), so what at() makes always validates
  local ok, why = rfc3339(r)
  if not ok then error(sformat("favor.at: %s %q", why, s), 2) end
  return r
end

-- seconds(t, who, level): favor.seconds's work; errors name `who` and
-- are raised at `level`
local function seconds(t, who, level)
  if math.type(t) == "integer" then
    if t < 0 or t > 86400 then error(sformat("%s: %d is not a second of a day (0..86400)", who, t), level + 1) end
    return t
  end
  if type(t) ~= "string" then
    error(sformat("%s: time of day must be \"HH:MM\" or seconds, got %s", who, type(t)), level + 1)
  end
  local h, m, s = t:match("^(%d%d?):(%d%d):(%d%d)$")
  if not h then h, m = t:match("^(%d%d?):(%d%d)$"); s = "0" end
  if not h then error(sformat("%s: time of day must be \"HH:MM\", got %q", who, t), level + 1) end
  h, m, s = tonumber(h), tonumber(m), tonumber(s)
  if h == 24 and m == 0 and s == 0 then return 86399 end
  if h > 23 or m > 59 or s > 59 then error(sformat("%s: no such time of day %q", who, t), level + 1) end
  return h * 3600 + m * 60 + s
end

-- seconds(t) -> seconds since 00:00 of "HH:MM" or "HH:MM:SS" ("24:00" is
-- 86399, the API's last second of a day); a number is returned as is
function M.seconds(t)
  -- no tail calls in these builders: a tail call would hide the frame that
  -- error levels count
  local n = seconds(t, "favor.seconds", 2)
  return n
end

local function window(who, spec, days, level)
  local from = spec.from == nil and 0 or seconds(spec.from, who, level + 1)
  local to = spec.to == nil and 86399 or seconds(spec.to, who, level + 1)
  if to > 86399 then to = 86399 end
  if from >= to then
    error(sformat("%s: from (%s) must be earlier than to (%s)", who, tostring(spec.from), tostring(spec.to)),
      level + 1)
  end
  return { fix_available_time = { available_week_day = days, begin_time = from, end_time = to } }
end

-- weekdays{d1, d2, ..., from = "HH:MM", to = "HH:MM"} -> coupon_available_time
-- days: 0 = Sunday, 1 = Monday, ..., 6 = Saturday; from/to default to the whole day
function M.weekdays(spec)
  if type(spec) ~= "table" then error("favor.weekdays: expected a table like {1, 2, 3, from = \"10:00\"}", 2) end
  local days, seen = {}, {}
  for k, v in pairs(spec) do
    if k ~= "from" and k ~= "to" and math.type(k) ~= "integer" then
      error("favor.weekdays: unknown option '" .. tostring(k) .. "' (days, from, to)", 2)
    end
  end
  for i, d in ipairs(spec) do
    if math.type(d) ~= "integer" or d < 0 or d > 6 then
      error(sformat("favor.weekdays: day %d must be 0..6 (0 = Sunday), got %s", i, tostring(d)), 2)
    end
    if seen[d] then error("favor.weekdays: day " .. d .. " given twice", 2) end
    seen[d] = true
    days[#days + 1] = d
  end
  if #days == 0 then error("favor.weekdays: no days given (use favor.daily for every day)", 2) end
  table.sort(days)
  local w = window("favor.weekdays", spec, days, 2)
  return w
end

-- daily{from = "HH:MM", to = "HH:MM"} -> coupon_available_time, every day of the week
function M.daily(spec)
  if spec == nil then spec = {} end
  if type(spec) ~= "table" then error("favor.daily: expected a table like {from = \"10:00\", to = \"22:00\"}", 2) end
  for k in pairs(spec) do
    if k ~= "from" and k ~= "to" then error("favor.daily: unknown option '" .. tostring(k) .. "' (from, to)", 2) end
  end
  local w = window("favor.daily", spec, { 0, 1, 2, 3, 4, 5, 6 }, 2)
  return w
end

-- after_receive(minutes) -> { available_time_after_receive = minutes }
function M.after_receive(minutes)
  if math.type(minutes) ~= "integer" or minutes < 1 then
    error("favor.after_receive: minutes must be a positive integer, got " .. tostring(minutes), 2)
  end
  return { available_time_after_receive = minutes }
end

-- ---------------------------------------------------------------------------
-- request numbers

local sha256_hex = require("quan.crypto").sha256
M._sha256 = sha256_hex

-- request_no(campaign, name [, mchid]) -> out_request_no
-- The same campaign, stock name and merchant always give the same number, so
-- running a script twice creates nothing twice (the API is idempotent on it).
-- Form: "<mchid>-<28 hex digits>" or "Q-<28 hex digits>"; [A-Za-z0-9-] only.
function M.request_no(campaign, name, mchid)
  if type(campaign) ~= "string" or campaign == "" then
    error("favor.request_no: campaign must be a non-empty string", 2)
  end
  if type(name) ~= "string" or name == "" then error("favor.request_no: name must be a non-empty string", 2) end
  if mchid ~= nil and type(mchid) ~= "string" then error("favor.request_no: mchid must be a string", 2) end
  local digest = sha256_hex("quan out_request_no v1\0" .. campaign .. "\0" .. name .. "\0" .. (mchid or ""))
  local prefix = (mchid and mchid:match("^[A-Za-z0-9]+$") and #mchid <= 20) and mchid or "Q"
  return prefix .. "-" .. digest:sub(1, 28)
end

-- ---------------------------------------------------------------------------
-- merging

M.unset = setmetatable({}, { __name = "favor.unset", __tostring = function() return "favor.unset" end })

local function is_sequence(t)
  return t[1] ~= nil
end

-- cycle(t, name) -> the path of a table inside t that holds one of its
-- own enclosing tables, and the path of that table; nil when t is a tree
-- (a table shared by two branches is no cycle)
local function cycle(t, path, open)
  open = open or {}
  open[t] = path
  for k, v in pairs(t) do
    if type(v) == "table" and v ~= M.unset then
      local p = path .. "." .. tostring(k)
      if open[v] then return p, open[v] end
      local a, b = cycle(v, p, open)
      if a then return a, b end
    end
  end
  open[t] = nil
end

-- check_tree(who, t, name, level): raises when t holds a cycle, which no
-- request body can be
local function check_tree(who, t, name, level)
  local at, back = cycle(t, name)
  if at then
    error(sformat("%s: %s holds a cycle: %s refers back to %s", who, name, at, back), level + 1)
  end
end

local function deep_copy(v)
  if type(v) ~= "table" or v == M.unset then return v end
  local r = {}
  for k, x in pairs(v) do r[k] = deep_copy(x) end
  return r
end

local function child(node, k)
  if not node or node.type ~= "object" then return nil end
  for _, f in ipairs(node.fields or {}) do
    if f.name == k then return f end
  end
  return nil
end

-- merge into a copy; node (optional) is the schema node, which says which
-- fields are arrays (an array is replaced whole, never merged by index)
local function merge(base, over, node)
  local r = deep_copy(base)
  for k, v in pairs(over) do
    local f = child(node, k)
    if v == M.unset then
      r[k] = nil
    elseif type(v) == "table" and type(r[k]) == "table" and not (f and f.type == "array")
      and not is_sequence(v) and not is_sequence(r[k]) then
      r[k] = merge(r[k], v, f)
    else
      r[k] = deep_copy(v)
    end
  end
  return r
end

-- merge(base, overrides) -> a new table: base deep-merged with overrides;
-- arrays are replaced; favor.unset removes a field
function M.merge(base, over)
  if type(base) ~= "table" then error("favor.merge: base must be a table, got " .. type(base), 2) end
  if type(over) ~= "table" then error("favor.merge: overrides must be a table, got " .. type(over), 2) end
  check_tree("favor.merge", base, "base", 2)
  check_tree("favor.merge", over, "overrides", 2)
  return merge(base, over)
end

-- ---------------------------------------------------------------------------
-- stock templates

local CREATE = schema.by_id.create_stock.body

local Stock = {}
Stock.__index = Stock
Stock.__name = "favor.stock"

local meta = setmetatable({}, { __mode = "k" })   -- stock -> { derived = {..}, opts = {..} }

local function derive(t, opts)
  local derived = {}
  local su = t.stock_use_rule
  local fnc = type(t.coupon_use_rule) == "table" and t.coupon_use_rule.fixed_normal_coupon
  if type(su) == "table" and su.max_amount == nil and type(fnc) == "table"
    and math.type(su.max_coupons) == "integer" and math.type(fnc.coupon_amount) == "integer"
    and abs(su.max_coupons + 0.0) * abs(fnc.coupon_amount + 0.0) < 2 ^ 62 then
    -- (a product past 2^63 would wrap to a wrong budget: left out, the
    -- validator names the count out of range and the budget missing)
    su.max_amount = su.max_coupons * fnc.coupon_amount
    derived.max_amount = true
  end
  if t.out_request_no == nil and opts.campaign and type(t.stock_name) == "string" then
    t.out_request_no = M.request_no(opts.campaign, t.stock_name,
      type(t.belong_merchant) == "string" and t.belong_merchant or nil)
    derived.out_request_no = true
  end
  return derived
end

local function make(fields, opts)
  local t = deep_copy(fields)
  local derived = derive(t, opts)
  meta[t] = { derived = derived, opts = opts }
  return setmetatable(t, Stock)
end

local function check_opts(who, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(who .. ": options must be a table", 3) end
  for k, v in pairs(opts) do
    if k ~= "campaign" then error(who .. ": unknown option '" .. tostring(k) .. "' (campaign)", 3) end
    if type(v) ~= "string" or v == "" then error(who .. ": campaign must be a non-empty string", 3) end
  end
  return { campaign = opts.campaign }
end

-- stock(fields [, {campaign = "spring-2027"}]) -> a stock template
-- fields are plain create-stock API fields (any subset). Derived when omitted:
-- stock_use_rule.max_amount = max_coupons × coupon_amount, and (with a
-- campaign) out_request_no = request_no(campaign, stock_name, belong_merchant).
-- The result is the request table itself (send it as `json`), with methods:
function M.stock(fields, opts)
  if type(fields) ~= "table" then error("favor.stock: fields must be a table, got " .. type(fields), 2) end
  check_tree("favor.stock", fields, "fields", 2)
  if getmetatable(fields) == Stock then
    return fields:with({}, opts) -- a tail call: :with raises at our caller's line
  end
  return make(fields, check_opts("favor.stock", opts))
end

-- stock:with(overrides [, opts]) -> a new stock: deep-merged, arrays replaced,
-- derived fields derived again from the result
function Stock:with(over, opts)
  if getmetatable(self) ~= Stock then error("favor.stock: use stock:with{...}, not stock.with{...}", 2) end
  if type(over) ~= "table" then error("stock:with: overrides must be a table, got " .. type(over), 2) end
  check_tree("stock:with", self, "stock", 2)
  check_tree("stock:with", over, "overrides", 2)
  local m = meta[self] or { derived = {}, opts = {} }
  local base = deep_copy(self)
  if m.derived.max_amount and type(base.stock_use_rule) == "table" then base.stock_use_rule.max_amount = nil end
  if m.derived.out_request_no then base.out_request_no = nil end
  local o = m.opts
  if opts ~= nil then
    o = merge(o, check_opts("stock:with", opts))
  end
  return make(merge(base, over, CREATE), o)
end

-- stock:plain() -> a plain deep copy (no methods)
function Stock:plain()
  return deep_copy(self)
end

return M
