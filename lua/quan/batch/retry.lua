-- quan.batch.retry: when to try an item again, and how long to wait.
--
-- classify(res, err) sorts the answer to one call into what the engine does
-- next: "ok", "retry" (transport error, 429, 5xx, a response that failed
-- verification: the outcome is unknown or transient), "refuse" (a business
-- 4xx for this item: recorded, the batch goes on) or "stop" (a 4xx that
-- every remaining item would get too: budget exhausted, stock not running,
-- wrong credentials: the batch stops). A business 4xx is never retried.
--
-- The policy (the delay before each retry: exponential backoff with "equal
-- jitter", capped, and a cap on attempts) is wechatpay.retry's.
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
    if not ok and require("quan.os").is_interrupt(j) then error(j, 0) end
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

-- policy{attempts, base, factor, max, random} -> policy; policy:delay(failed
-- [, code]) -> seconds | nil: the client's retry policy (wechatpay.retry),
-- shared so a batch and a single call back off alike
M.policy = require("wechatpay.retry").policy

return M
