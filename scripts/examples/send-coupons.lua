-- send-coupons.lua: what `quan send` does, from a script of your own: one
-- call of quan.send, the module behind the command (docs/batches.md).
--
--   quan run scripts/examples/send-coupons.lua STOCK_ID USERS.csv [JOURNAL]
--
-- The command itself is built in and takes options: `quan send --help`.
local stock_id, users, journal = ...
if not users then
  io.stderr:write("usage: quan run send-coupons.lua STOCK_ID USERS.csv [JOURNAL]\n")
  os.exit(2)
end
local _, code = require("quan.send").run { stock_id = stock_id, users = users, journal = journal }
os.exit(code)
