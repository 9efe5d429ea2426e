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
-- Its options are the spec below (`--help` prints them); it reads them
-- with quan.options, the parser of quan's own commands (docs/cli.md).
local batch = require "quan.batch"
local coupons = require "quan.batch.coupons"
local wechatpay = require "wechatpay"
local options = require "quan.options"

local opts, positional = options.read_or_exit({
  program = "send-coupons",
  usage = "quan run send-coupons.lua [options] STOCK_ID USERS.csv [JOURNAL]",
  arguments = { "STOCK_ID", "USERS.csv", "[JOURNAL]" },
  options = {
    { "--concurrency N", "calls in flight at once (64)", check = options.positive_integer },
    { "--rate N", "calls per second at most, retries included (400)", check = options.positive_number },
    { "--attempts N", "tries per row before it counts as failed (6)", check = options.positive_integer },
    { "--key COLUMN", "the CSV column that holds the openid (openid)" },
    { "--batch-id ID", "name the batch (STOCK_ID-<UTC time>-<random>); out_request_no derives from it" },
    { "--export FILE", "write every row's outcome as CSV when the run ends" },
    { "--log-format F", "the log: bar on a terminal, else json", choices = require("quan.batch.progress").FORMATS },
    { "--no-preflight", "do not query the stock before sending" },
  },
  footer = "exit codes and a cron recipe: docs/batches.md",
}, { ... })
local stock_id, users, journal = positional[1], positional[2], positional[3] or positional[2] .. ".journal"

local ok, wx = pcall(wechatpay.client)
if not ok then
  io.stderr:write("send-coupons: ", tostring(wx), "\n")
  os.exit(batch.exit.cannot_start)
end

local summary, err, code = coupons.send {
  wx = wx, stock_id = stock_id, input = users, journal = journal,
  key = opts.key, batch_id = opts.batch_id, concurrency = opts.concurrency,
  rate = opts.rate, retry = opts.attempts and { attempts = opts.attempts } or nil,
  log_format = opts.log_format, preflight = not opts.no_preflight,
}
if not summary then os.exit(code) end -- err is already on stderr
if opts.export then
  local n, e = batch.export(journal, opts.export)
  if not n then io.stderr:write("send-coupons: ", e, "\n") end
end
os.exit(summary.exit_code)
