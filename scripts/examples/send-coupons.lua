-- send-coupons.lua: send one coupon of a stock to every openid of a CSV.
--
--   quan run scripts/examples/send-coupons.lua [options] STOCK_ID USERS.csv [JOURNAL]
--
-- USERS.csv has a header with an `openid` column. JOURNAL (default
-- USERS.csv.journal) records every row; run the same command again after a
-- crash, a kill or a stop and it goes on where it was, never sending twice.
-- The appid and the creator mchid come from the profile (wx.profile.appid,
-- wx.mchid). Exit codes and a cron recipe: docs/batches.md.
--
-- options:
--   --concurrency N   calls in flight at once (64)
--   --rate N          calls per second at most, retries included (400)
--   --attempts N      tries per row before it counts as failed (6)
--   --key COLUMN      the CSV column that holds the openid (openid)
--   --batch-id ID     name the batch (default: STOCK_ID-<UTC time>-<random>);
--                     out_request_no is derived from it and the openid
--   --export FILE     write every row's outcome as CSV when the run ends
--   --log-format F    bar | json | text (default: bar on a terminal, else json)
--   --no-preflight    do not query the stock before sending
local batch = require "quan.batch"
local coupons = require "quan.batch.coupons"
local wechatpay = require "wechatpay"

local USAGE = "usage: quan run send-coupons.lua [--concurrency N] [--rate N] [--attempts N] [--key COLUMN]\n" ..
  "         [--batch-id ID] [--export FILE] [--log-format F] [--no-preflight] STOCK_ID USERS.csv [JOURNAL]\n"

local function usage(msg)
  io.stderr:write("send-coupons: ", msg, "\n", USAGE)
  os.exit(batch.exit.cannot_start)
end

local numeric = { concurrency = "integer", rate = "number", attempts = "integer" }
local opts, pos = {}, {}
local args = { ... }
local i = 1
while i <= #args do
  local a = args[i]
  local name, value = a:match("^%-%-([%w-]+)=(.*)$")
  name = name or a:match("^%-%-([%w-]+)$")
  if name == "help" then
    io.stdout:write(USAGE, "exit codes and a cron recipe: docs/batches.md\n")
    os.exit(0)
  elseif name == "no-preflight" then
    opts.preflight = false
  elseif name then
    if value == nil then
      i = i + 1
      value = args[i]
      if value == nil then usage("--" .. name .. " needs a value") end
    end
    if numeric[name] then
      local n = math.tointeger(tonumber(value)) or tonumber(value)
      if not n or n <= 0 or (numeric[name] == "integer" and math.type(n) ~= "integer") then
        usage("--" .. name .. " wants a positive " .. numeric[name])
      end
      opts[name] = n
    elseif name == "log-format" and value ~= "bar" and value ~= "json" and value ~= "text" then
      usage("--log-format wants bar, json or text")
    elseif name == "key" or name == "batch-id" or name == "export" or name == "log-format" then
      opts[name] = value
    else
      usage("unknown option --" .. name)
    end
  else
    pos[#pos + 1] = a
  end
  i = i + 1
end
if #pos < 2 or #pos > 3 then usage("expected STOCK_ID USERS.csv [JOURNAL]") end
local stock_id, users, journal = pos[1], pos[2], pos[3] or pos[2] .. ".journal"

local ok, wx = pcall(wechatpay.client)
if not ok then
  io.stderr:write("send-coupons: ", tostring(wx), "\n")
  os.exit(batch.exit.cannot_start)
end

local summary, err, code = coupons.send {
  wx = wx, stock_id = stock_id, input = users, journal = journal,
  key = opts.key, batch_id = opts["batch-id"], concurrency = opts.concurrency,
  rate = opts.rate, retry = opts.attempts and { attempts = opts.attempts } or nil,
  log_format = opts["log-format"], preflight = opts.preflight,
}
if not summary then os.exit(code) end -- err is already on stderr
if opts.export then
  local n, e = batch.export(journal, opts.export)
  if not n then io.stderr:write("send-coupons: ", e, "\n") end
end
os.exit(summary.exit_code)
