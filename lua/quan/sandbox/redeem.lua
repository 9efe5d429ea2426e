-- quan.sandbox.redeem: `quan sandbox redeem STOCK_ID (--share X | --count N)
-- [--over DURATION] [--refunds N] [--seed N] [--ca-file FILE] [--state DIR]
-- [--json]`: redemptions of a stock's sent coupons by the sandbox serving
-- DIR, through its control endpoint POST /sandbox/redemptions (over the
-- sandbox's own HTTPS, trusting its CA). See docs/sandbox.md, "Redemptions".
--
-- Exit status: 0 scheduled, 1 no sandbox serves DIR or it refused, 2 usage.
local M = {}

local cjson = require "cjson.safe"
local time = require "quan.time"
local remote = require "quan.sandbox.remote"

-- ---- option values (quan.options `check` functions) ----------------------

-- share(text) -> a number above 0 and at most 1 | nil, reason
function M.share(text)
  local n = tonumber(text)
  if not n or not (n > 0 and n <= 1) then return nil, "wants a share above 0 and at most 1, like 0.3" end
  return n
end

-- duration(text) -> seconds | nil, reason: at most the sandbox's MAX_OVER
-- (a stock's longest window), which it would refuse whatever the stock
function M.duration(text)
  local seconds = time.duration(text)
  if not seconds then return nil, "wants a duration like 90s, 30m, 2h or 1d12h, got '" .. text .. "'" end
  local most = require("quan.sandbox.redemptions").MAX_OVER
  if seconds > most then return nil, ("wants at most %s (a stock's longest window), got '%s'"):format(
    require("quan.format").duration(most), text) end
  return seconds
end

-- count(text) -> a whole number from 0 | nil, reason
function M.count(text)
  local n = text:match("^%d+$") and math.tointeger(tonumber(text))
  if not n then return nil, "wants a whole number from 0" end
  return n
end

local function usage(message)
  io.stderr:write("quan sandbox redeem: ", message, "\n", require("quan.cli").usage("sandbox redeem"))
  return 2
end

-- wall(rfc3339) -> "YYYY-MM-DD HH:MM:SS" of a Beijing time
local function wall(text)
  return time.beijing(time.parse(text), "%Y-%m-%d %H:%M:%S")
end

-- main(o, arguments) -> exit status: the command (o: its options, parsed by
-- quan.cli's table; arguments: { STOCK_ID })
function M.main(o, arguments)
  if o.share and o.count then return usage("give --share or --count, not both") end
  if not o.share and not o.count then return usage("--share X or --count N is required") end
  local ca_file = o.ca_file
  if ca_file then -- read by the sandbox, from its own folder: a file, by its absolute path
    local st = require("quan.os").stat(ca_file)
    if not st or st.kind ~= "file" then
      return usage(("--ca-file %s: %s"):format(ca_file, st and "not a file" or "no such file"))
    end
    ca_file = require("quan.path").absolute(ca_file)
  end
  local dir = o.state or require("quan.sandbox").default_state()
  local body = cjson.encode { stock_id = arguments[1], share = o.share, count = o.count, over_seconds = o.over,
    refunds = o.refunds, seed = o.seed, ca_file = ca_file }
  local answer, text = remote.request(dir, "POST", "/sandbox/redemptions", body, 300)
  if not answer then -- text: why
    io.stderr:write("quan sandbox redeem: ", text, "\n")
    return 1
  end
  if o.json then
    io.stdout:write(text, "\n")
    return 0
  end
  if answer.count == 0 then
    io.stdout:write(("stock %s: no redemption (the share of its unused coupons rounds to none)\n"):format(answer.stock_id))
    return 0
  end
  local done = 0
  for _, r in ipairs(answer.data) do
    if r.state == "done" then done = done + 1 end
  end
  io.stdout:write(("stock %s: %d %s (seed %d) from %s to %s (Beijing time), %d of them refunded\n"):format(
    answer.stock_id, answer.count, answer.count == 1 and "redemption" or "redemptions", answer.seed,
    wall(answer.from), wall(answer.to), answer.refunds))
  io.stdout:write(("%d made now, %d as the business clock reaches them (quan sandbox clock moves it)\n"):format(done,
    answer.count - done))
  return 0
end

return M
