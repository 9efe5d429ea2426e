-- wechatpay.verify: the checks a 2xx response passes before the caller sees
-- it, in order: the four Wechatpay-* headers present (each one string), the
-- serial known, the timestamp within 300 s of now (301 either way fails), and
-- the RSA-SHA256 signature valid over "timestamp\nnonce\nbody\n" with the
-- exact bytes received.
local sign = require "wechatpay.sign"

local M = {}

M.MAX_SKEW = 300

M.HEADERS = { "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial" }

-- Paths whose 2xx answers are not signed: the file downloads the use-flow
-- and refund-flow URLs point at (the SDKs skip them: wechatpay-php
-- src/ClientJsonTrait.php, wechatpay-go core/auth/validators/null_validator.go;
-- their hash_value is checked instead, docs/client.md "Flow files").
local UNSIGNED = { "^/v3/billdownload/file" }

-- skip(path) -> true when responses from path are not verified
function M.skip(path)
  for _, p in ipairs(UNSIGNED) do
    if path:find(p) then return true end
  end
  return false
end

local LOWER = {}
for _, name in ipairs(M.HEADERS) do LOWER[name] = name:lower() end

-- text(v, name) -> v as a header's text | nil, message: a number is its
-- decimal text (a framework may hand over a timestamp as a number); a
-- table, a repeated header as an array, counts when it holds one string
local function text(v, name)
  local t = type(v)
  if t == "number" then
    local i = math.tointeger(v)
    return i and ("%d"):format(i) or tostring(v)
  end
  if t == "table" and v[1] ~= nil and v[2] == nil and next(v, next(v)) == nil then
    if type(v[1]) == "string" then return v[1] end
    t = "table holding a " .. type(v[1])
  elseif t == "table" then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    t = ("table of %d value%s"):format(n, n == 1 and "" or "s")
  end
  return nil, ("header %s is a %s, not one string"):format(name, t)
end

-- header(h, name) -> value | nil (empty counts as missing) | nil, message
-- for a value that is not a header's text (see text); lower-case key
-- first (how quan.http stores them), then the name as written, then any
-- spelling (a web framework's table: WECHATPAY-TIMESTAMP)
local function header(h, name)
  local lower = LOWER[name] or name:lower()
  local v = h[lower]
  if v == nil then v = h[name] end
  if v == nil then
    for k, x in pairs(h) do
      if type(k) == "string" and k:lower() == lower then v = x break end
    end
  end
  if type(v) ~= "string" and v ~= nil then
    local why
    v, why = text(v, name)
    if not v then return nil, why end
  end
  if v == "" then return nil end
  return v
end
M.header = header

-- lookup(keys, serial) -> key | nil: exact match first, then a
-- case-insensitive match for hex serials
function M.lookup(keys, serial)
  local k = keys[serial]
  if k then return k end
  if serial:find("^%x+$") then
    local up = serial:upper()
    for name, key in pairs(keys) do
      if name:upper() == up then return key end
    end
  end
  return nil
end

-- check(headers, body, keys, now[, max_skew]) -> true | false, code, message
-- headers: table indexed by header name (any case); keys: serial -> key
-- with :verify(msg, sig_b64); now: epoch seconds; max_skew: seconds
-- (default MAX_SKEW), false for no timestamp window
function M.check(headers, body, keys, now, max_skew)
  if max_skew == nil then max_skew = M.MAX_SKEW end
  -- quan.http's lower-case keys holding strings, as header() finds them
  -- first; any other spelling or shape through header()
  local ts, nonce, sig, serial = headers["wechatpay-timestamp"], headers["wechatpay-nonce"],
    headers["wechatpay-signature"], headers["wechatpay-serial"]
  if not (type(ts) == "string" and ts ~= "" and type(nonce) == "string" and nonce ~= ""
      and type(sig) == "string" and sig ~= "" and type(serial) == "string" and serial ~= "") then
    ts = header(headers, "Wechatpay-Timestamp")
    nonce = header(headers, "Wechatpay-Nonce")
    sig = header(headers, "Wechatpay-Signature")
    serial = header(headers, "Wechatpay-Serial")
  end
  if not (ts and nonce and sig and serial) then
    for _, name in ipairs(M.HEADERS) do
      local v, why = header(headers, name)
      if why then return false, "bad_header", "response " .. why end
      if not v then
        return false, "missing_header", "response header " .. name .. " missing"
      end
    end
  end
  local key = M.lookup(keys, serial)
  if not key then
    return false, "unknown_serial", "response signed by unknown serial " .. serial
  end
  local t = ts:match("^%d+$") and math.tointeger(tonumber(ts))
  if not t then
    return false, "bad_timestamp", "response timestamp '" .. ts .. "' is not epoch seconds"
  end
  local skew = math.floor(now) - t
  if max_skew and (skew > max_skew or skew < -max_skew) then
    return false, "clock_skew", ("response timestamp %s is %d s from now (allowed ± %d s)"):format(ts, skew, max_skew)
  end
  local ok, why = key:verify(sign.response_message(ts, nonce, body), sig)
  if not ok then
    return false, "bad_signature", "response signature does not verify" .. (why and (" (" .. tostring(why) .. ")") or "")
  end
  return true
end

return M
