-- quan.batch.retry: when to try an item again, and how long to wait.
--
-- classify(res, err) sorts the answer to one call into what the engine does
-- next: "ok", "retry" (transport error, 429, 5xx, a response that failed
-- verification: the outcome is unknown or transient), "refuse" (a business
-- 4xx for this item: recorded, the batch goes on) or "stop" (a 4xx that
-- every remaining item would get too: budget exhausted, stock not running,
-- wrong credentials: the batch stops). A business 4xx is never retried.
--
-- A policy gives the delay before each retry: exponential backoff with
-- "equal jitter" (half fixed, half random), capped, and a cap on attempts.
local M = {}

local cjson = require "cjson"

-- Codes that end the whole batch: every later item would get the same.
M.stop_codes = {
  NOT_ENOUGH = "stock budget exhausted",
  STOCK_NOT_RUNNING = "stock not running",     -- sandbox and newer docs
  STOCK_STATUS_ERROR = "stock not running",
  RESOURCE_NOT_EXISTS = "stock does not exist",
  APPID_MCHID_NOT_MATCH = "appid and mchid not bound",
  MCH_NOT_EXISTS = "merchant id invalid",
  SIGN_ERROR = "request signature refused",
  NO_AUTH = "merchant not authorised",
}

-- INVALID_REQUEST is per item (openid not under the appid) or global (the
-- stock ended or is not active): tell them apart by the message.
local stock_state_words = { "未激活", "已结束", "未开始", "已暂停", "已停止",
  "not running", "not active", "not started", "not begun", "has ended", "paused",
  "stopped", "expired" }

local function mentions_stock_state(message)
  if type(message) ~= "string" then return false end
  local lower = message:lower()
  for _, w in ipairs(stock_state_words) do
    if lower:find(w, 1, true) then return true end
  end
  return false
end

-- classify(res, err) -> action, code, message
-- res: a client result ({status, json, ...}) or nil; err: nil, a client
-- error table ({kind, status, code, message, retryable}) or a string
-- (transport message).
function M.classify(res, err)
  if res and not err then
    local status = res.status or 200
    if status >= 200 and status < 300 then return "ok" end
    local j = type(res.json) == "table" and res.json or {}
    err = { kind = "http", status = status, code = j.code, message = j.message }
  end
  if type(err) ~= "table" then
    return "retry", "NETWORK", tostring(err or "no answer")
  end
  local kind, status, code = err.kind, err.status, err.code
  local message = err.message and tostring(err.message) or tostring(err)
  -- the API's own message (the client's message also names the request)
  local api_message = message
  if type(err.body) == "string" and err.body ~= "" then
    local ok, j = pcall(cjson.decode, err.body)
    if ok and type(j) == "table" and type(j.message) == "string" then api_message = j.message end
  end
  if kind == "network" or (kind == nil and status == nil) then
    return "retry", err.code or "NETWORK", message
  end
  if kind == "verify" then -- the answer came but could not be trusted: unknown outcome
    return "retry", "VERIFY", message
  end
  if kind == "config" then return "stop", "CONFIG", message end
  if kind == "validation" then return "refuse", "VALIDATION", message end
  status = tonumber(status) or 0
  if status == 429 then return "retry", code or "FREQUENCY_LIMITED", message end
  if status >= 500 then return "retry", code or ("HTTP_" .. status), message end
  if status >= 400 and (code == nil or code == "HTTP_" .. status) then
    -- no API error code: not WeChat Pay refusing this row but something in
    -- the way (a wrong base_url's 404, a proxy's 403 page) that every row
    -- meets; a refusal would be final and the row never sent
    return "stop", "HTTP_" .. status, message
  end
  code = code or ("HTTP_" .. status)
  if M.stop_codes[code] or status == 401 then return "stop", code, message end
  if code == "INVALID_REQUEST" and mentions_stock_state(api_message) then
    return "stop", code, message
  end
  if status >= 400 then return "refuse", code, message end
  return "retry", code, message -- 1xx/3xx: not an answer we understand
end

local Policy = {}
Policy.__index = Policy

local policy_opts = { attempts = true, base = true, factor = true, max = true, random = true }

-- policy{attempts = 6, base = 1, factor = 3, max = 30, random = math.random}
-- attempts counts every try (the first one too); delays in seconds.
-- Defaults follow WeChat Pay's advice for 5xx (1 s, 3 s, 10 s, 30 s).
function M.policy(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("retry.policy: opts must be a table", 2) end
  for k in pairs(opts) do
    if not policy_opts[k] then error("retry.policy: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local p = setmetatable({
    attempts = opts.attempts or 6, base = opts.base or 1, factor = opts.factor or 3,
    max = opts.max or 30, random = opts.random or math.random,
  }, Policy)
  if math.type(p.attempts) ~= "integer" or p.attempts < 1 then
    error("retry.policy: attempts must be an integer >= 1", 2)
  end
  for _, k in ipairs { "base", "factor", "max" } do
    if type(p[k]) ~= "number" or p[k] < 0 then
      error("retry.policy: " .. k .. " must be a number >= 0", 2)
    end
  end
  return p
end

-- policy:delay(failed) -> seconds to wait after the failed-th try, or nil
-- when no try is left. The delay is d/2 + random(0, d/2) with
-- d = min(max, base * factor^(failed-1)), so retries never bunch up and
-- never come back sooner than half the backoff.
function Policy:delay(failed, code)
  if failed >= self.attempts then return nil end
  local d = self.base * self.factor ^ (failed - 1)
  if d > self.max then d = self.max end
  if code == "FREQUENCY_LIMITED" or code == "FREQUENCY_LIMIT_EXCEED" then
    d = math.max(d, self.base) -- throttled: never sooner than the base
  end
  return d / 2 + self.random() * d / 2
end

return M
