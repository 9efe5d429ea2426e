-- wechatpay.errors: the client's error tables.
--
-- Every failure the client reports is a table with one shared metatable:
--   kind        "network" | "http" | "verify" | "validation" | "config"
--   status      HTTP status (nil for network and config errors)
--   code        stable code: the API's code ("PARAM_ERROR"), a transport code
--               ("timeout", "connect", ...) or a verify check ("missing_header",
--               "unknown_serial", "clock_skew", "bad_signature", ...)
--   message     one lower-case line, context first
--   detail      the API's free-form detail, validation findings, or nil
--   request_id  the Request-ID response header, when there was a response
--   retryable   true for network errors, 429 and 5xx; false otherwise
-- tostring(err) gives "<kind>: <message>" plus code, status and request id;
-- err:curl() the request it came from as a shell command.
local M = {}

local Error = {}
Error.__index = Error
Error.__name = "wechatpay.error"

function Error.__tostring(e)
  local parts = { e.message or "error" }
  local extra = {}
  if e.status then extra[#extra + 1] = "status " .. tostring(e.status) end
  if e.code and e.code ~= e.kind and not tostring(e.message):find(tostring(e.code), 1, true) then
    extra[#extra + 1] = "code " .. tostring(e.code)
  end
  if e.request_id then extra[#extra + 1] = "request-id " .. tostring(e.request_id) end
  if #extra > 0 then parts[#parts + 1] = " (" .. table.concat(extra, ", ") .. ")" end
  return table.concat(parts)
end

-- err:curl() -> text | nil, why: the request this error came from as a
-- shell command, signed anew (docs/client.md, "Copy as curl")
function Error.curl(e)
  local text, why = require("wechatpay.client").copy_of(e)
  return text, why
end

local kinds = { network = true, http = true, verify = true, validation = true, config = true }

-- new{kind=, message=, ...} -> error table
function M.new(t)
  if type(t) ~= "table" then error("errors.new: expected a table", 2) end
  if not kinds[t.kind] then error("errors.new: unknown kind '" .. tostring(t.kind) .. "'", 2) end
  if t.retryable == nil then t.retryable = false end
  return setmetatable(t, Error)
end

-- is(v) -> true when v is a client error table
function M.is(v)
  return getmetatable(v) == Error
end

-- retryable_status(status) -> boolean: 429 and every 5xx
function M.retryable_status(status)
  return status == 429 or (type(status) == "number" and status >= 500 and status <= 599)
end

-- config(fmt, ...) raises a config error (construction and profiles)
function M.config(fmt, ...)
  error(M.new { kind = "config", code = "config", message = fmt:format(...) }, 0)
end

-- Usage errors (programmer error deep inside request preparation) travel as
-- a private marker so the public verb can re-raise them at its caller's level.
local Usage = {}

-- usage(msg): raises a usage error
function M.usage(msg)
  error(setmetatable({ message = msg }, Usage), 0)
end

-- call(level, context, fn, ...) -> fn(...), re-raising a usage error as
-- error(context .. msg, level + 1) and anything else unchanged
function M.call(level, context, fn, ...)
  local r = table.pack(pcall(fn, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  local e = r[2]
  if getmetatable(e) == Usage then error(context .. e.message, level + 1) end
  error(e, 0)
end

return M
