-- wechatpay.retry: when one request may be sent again, and how long to wait
-- before it is. The client's `retry` option and the batch engine
-- (quan.batch.retry) share this policy.
--
--   policy{attempts = 6, base = 1, factor = 3, max = 30, random = fn} -> policy
--   policy:delay(failed [, code]) -> seconds | nil (no try left)
--   idempotent(method, template, json) -> true | false, why
--   retryable(err) -> boolean
--
-- A call is repeated only when repeating it cannot do a thing twice: a GET,
-- a stock's start / pause / restart / stop (a state transition: a second
-- one finds the stock in the state the first one left), or a POST whose body
-- carries an out_request_no (WeChat Pay answers a repeated number with what
-- the first request made). Only failures that say nothing happened, or that
-- it is unknown, are retried: network errors, 429 and 5xx.
local M = {}

local Policy = {}
Policy.__index = Policy
Policy.__name = "wechatpay.retry.policy"

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

-- is_policy(v) -> true when v was made by policy{}
function M.is_policy(v)
  return getmetatable(v) == Policy
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

-- the favor family's state transitions: a path template (or a path with the
-- id written in) ending in stocks/<id>/<action>
local TRANSITIONS = { start = true, pause = true, restart = true, stop = true }

-- idempotent(method, template, json) -> true | false, why
-- template: the request's path template ("v3/marketing/favor/stocks/{stock_id}/start",
-- with or without a leading "/"); json: the body table, if any
function M.idempotent(method, template, json)
  if method == "GET" then return true end
  if method == "POST" then
    local action = template:match("marketing/favor/stocks/[^/]+/(%a+)$")
    if action and TRANSITIONS[action] then return true end
    if type(json) == "table" and type(json.out_request_no) == "string" and json.out_request_no ~= "" then
      return true
    end
    return false, "a POST without an out_request_no in its body"
  end
  return false, "a " .. tostring(method)
end

-- retryable(err) -> true for the failures worth another try: network errors
-- (no answer, or none that arrived), 429 and 5xx (the client marks them
-- err.retryable)
function M.retryable(err)
  return type(err) == "table" and err.retryable == true
end

return M
