-- quan.batch.coupons: the batch engine applied to send-coupon
-- (POST /v3/marketing/favor/users/{openid}/coupons): one coupon of a stock
-- to every openid of an input.
--
--   local coupons = require "quan.batch.coupons"
--   local summary = coupons.send{ wx = wx, stock_id = "9856000",
--     input = "users.csv", journal = "users.journal" }
local M = {}

local batch = require "quan.batch"
local retry = require "quan.batch.retry"

-- not_an_openid(key) -> a validation error for a key that cannot be an
-- openid, else nil. An openid is some 28 characters; where WeChat Pay gives
-- its length (the payer's openid of an order) it is string[1,128]. A longer
-- key, or one with control characters, is a broken input line: refused
-- here, per row, instead of going out as a URL path of any length (a 2 MB
-- line was retried as a network failure, exit 4, for ever)
local function not_an_openid(key)
  local why
  if #key > 128 then
    why = ("%d bytes, more than an openid's 128"):format(#key)
  elseif key:find("%c") then
    why = "control characters"
  end
  if not why then return nil end
  return require("wechatpay.errors").new { kind = "validation", code = "validation",
    message = ("openid: not an openid (%s): %s"):format(why, (key:sub(1, 40):gsub("%c", "?")) .. (#key > 40 and "..." or "")) }
end

-- sender{wx, stock_id, appid, creator_mchid[, validate]} -> send(item) for
-- batch.run: posts one coupon to item.key (the openid) with
-- item.out_request_no. The client validates the body of the first call
-- that gets an answer; later calls skip it (validate = false skips it
-- from the start)
function M.sender(opts)
  if type(opts) ~= "table" or type(opts.wx) ~= "table" then
    error("coupons.sender: opts.wx must be a client", 2)
  end
  for _, k in ipairs { "stock_id", "appid", "creator_mchid" } do
    if type(opts[k]) ~= "string" or opts[k] == "" then
      error("coupons.sender: opts." .. k .. " must be a non-empty string", 2)
    end
  end
  local node = opts.wx:chain("v3/marketing/favor/users/{openid}/coupons")
  local stock_id, appid, creator = opts.stock_id, opts.appid, opts.creator_mchid
  -- The body is built here, the same for every row but the number: it is
  -- validated against the schema once (the first row), not once per row.
  local validated = opts.validate == false
  return function(item)
    local refusal = not_an_openid(item.key)
    if refusal then return nil, refusal end
    local req = {
      openid = item.key,
      json = { stock_id = stock_id, out_request_no = item.out_request_no,
               appid = appid, stock_creator_mchid = creator },
    }
    if validated then req.validate = false end
    local res, err = node:post(req)
    if res or (err and err.kind ~= "validation") then validated = true end
    return res, err
  end
end

-- preflight(wx, stock_id, creator_mchid[, policy]) -> stock | nil, message,
-- exit code
-- Queries the stock before any coupon is sent: it must exist and be running.
-- The query is retried as a row's send is (network errors, 429, 5xx: the
-- policy, by default the batch's: 6 tries over about 40 s); when every try
-- failed so, the exit code is batch.exit.unavailable (run again later).
-- What the user must fix (no such stock, a stock not running, credentials
-- the API refuses) is batch.exit.cannot_start at once.
function M.preflight(wx, stock_id, creator, policy)
  policy = policy or retry.policy()
  local node = wx:chain("v3/marketing/favor/stocks/{stock_id}")
  local tries = 0
  while true do
    tries = tries + 1
    local res, err = node:get { stock_id = stock_id, query = { stock_creator_mchid = creator } }
    local action, code, message = retry.classify(res, err)
    if action == "ok" then
      local stock = res.json or {}
      -- a dry run's or quan check's answer is a placeholder: no verdict on it
      if stock.status ~= "running" and require("wechatpay").simulation == nil then
        return nil, ("stock %s is %s, not running"):format(stock_id, tostring(stock.status)),
          batch.exit.cannot_start
      end
      return stock
    end
    if action ~= "retry" then
      return nil, ("stock %s: %s"):format(stock_id, tostring(err or message)), batch.exit.cannot_start
    end
    local d = policy:delay(tries, code)
    if not d then
      return nil, ("stock %s: no answer after %d tries, nothing sent (run again later): %s"):format(
        stock_id, tries, tostring(err or message)), batch.exit.unavailable
    end
    require("quan.async").sleep(d)
  end
end

local send_opts = { wx = true, stock_id = true, appid = true, creator_mchid = true,
                    preflight = true }

-- coupon_id(res) -> the coupon_id of a send-coupon answer | nil, why: an
-- answer without one (verified, yet not what the API sends) leaves the
-- outcome unknown, so the row is retried with the same out_request_no
function M.coupon_id(res)
  local j = type(res) == "table" and res.json
  local id = type(j) == "table" and j.coupon_id
  if type(id) == "string" and id:find("^[%w%p]+$") and #id <= 128 then return id end
  local body = type(res) == "table" and type(res.body) == "string" and res.body or ""
  return nil, "no coupon_id in the answer: " .. (#body > 120 and body:sub(1, 120) .. "..." or body)
end

-- send(opts) -> summary | nil, message, exit_code (the message already
-- reported on stderr as batch.run reports it)
-- opts: wx (client), stock_id, appid (default wx.profile.appid),
-- creator_mchid (default wx.mchid), preflight (true: query the stock
-- first), and any option of batch.run (input, journal, concurrency, rate,
-- retry, key = "openid", batch_id, continues, ...). The journal records
-- the stock, appid and creator and refuses to resume with others; the
-- batch id starts with the stock id, and every out_request_no derives
-- from the stock and the batch id (batch.run's scope).
function M.send(opts)
  if type(opts) ~= "table" then error("coupons.send: opts must be a table", 2) end
  local wx = opts.wx
  if type(wx) ~= "table" then error("coupons.send: opts.wx must be a client", 2) end
  local stock_id = opts.stock_id
  if type(stock_id) ~= "string" or stock_id == "" then error("coupons.send: opts.stock_id must be a string", 2) end
  local appid = opts.appid or (wx.profile and wx.profile.appid)
  local creator = opts.creator_mchid or wx.mchid
  if type(appid) ~= "string" or appid == "" then
    return batch.fail(opts, "no appid: set appid in the profile or pass it", batch.exit.cannot_start)
  end
  if opts.preflight ~= false then
    local stock, err, code = M.preflight(wx, stock_id, creator, retry.policy(opts.retry))
    if not stock then return batch.fail(opts, err, code) end
  end
  local run = {}
  for k, v in pairs(opts) do
    if not send_opts[k] then run[k] = v end
  end
  run.send = M.sender { wx = wx, stock_id = stock_id, appid = appid, creator_mchid = creator }
  run.result = run.result or M.coupon_id
  run.batch_prefix = run.batch_prefix or stock_id
  run.scope = stock_id -- the same batch id on another stock numbers its rows apart
  local meta = { stock_id = stock_id, appid = appid, creator_mchid = creator }
  for k, v in pairs(run.meta or {}) do meta[k] = v end
  run.meta = meta
  return batch.run(run)
end

return M
