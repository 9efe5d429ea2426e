-- quan.campaign.sends: the sends a campaign declares (`sends = { name = {
-- stock = KEY, users = FILE } }`), run by `quan apply` once the plan's steps
-- are done: each send whose stock runs, and whose window is open, goes
-- through quan.send (the engine of `quan send`), with its journal beside
-- the campaign's state and recorded in it (the state's `journals` table,
-- which `quan report` reads). A send whose stock does not run yet waits for
-- a later apply; one whose window has ended is over. See docs/campaigns.md.
--
--   sends.run(decl, plan, session, state, dry) -> exit code: the worst of
--       the sends' (quan.send.worst), 0 when none ran
local M = {}

local time = require "quan.time"
local format = require "quan.format"
local path = require "quan.path"

-- what a stock is after a step
local AFTER = { create = "unactivated", start = "running", pause = "paused", restart = "running" }

-- status_after(item) -> the stock's status once the plan's steps are done
local function status_after(it)
  local status = it.status
  for _, action in ipairs(it.steps or {}) do status = AFTER[action] or status end
  return status
end

-- window(item) -> begin, end (epoch seconds | nil): the stock's, else the
-- declaration's
local function window(it)
  local source = type(it.stock) == "table" and it.stock.available_begin_time and it.stock or it.json or {}
  return time.parse(source.available_begin_time), time.parse(source.available_end_time)
end

-- run(decl, plan, s, state, dry) -> exit code
function M.run(decl, plan, s, state, dry)
  if #decl.sends == 0 then return 0 end
  local send = require "quan.send"
  local items = {}
  for _, it in ipairs(plan.stocks) do items[it.key] = it end
  local codes = {}
  io.stdout:write(dry and "sends (--dry-run: none is run):\n" or "sends:\n")
  for _, sd in ipairs(decl.sends) do
    local it = items[sd.stock]
    local users = path.beside(decl.path, sd.users)
    local head = ("send '%s' → %s"):format(sd.name, sd.stock)
    local begin, stop = window(it)
    local status = status_after(it)
    if not it.stock_id and not dry then
      io.stdout:write("  ", head, ": not sent: the stock was not created\n")
    elseif status ~= "running" and not (dry and status == "unactivated" and it.state == "running") then
      io.stdout:write("  ", head, ": waits: the stock is ", tostring(status), ", not running (apply again once it runs)\n")
    elseif stop and s.now > stop then
      io.stdout:write("  ", head, ": not sent: the stock's window ended ", format.beijing(stop), "\n")
    elseif begin and s.now < begin then
      io.stdout:write("  ", head, ": waits: the stock's window opens ", format.beijing(begin),
        " (apply again then)\n")
    elseif dry then
      io.stdout:write("  ", head, ": would send stock ", tostring(it.stock_id or "(to be created)"),
        "'s coupons to the users of ", users, "\n")
    else
      local journal = path.absolute(send.journal_beside(state.path, sd.name))
      state:record_journal(sd.name, sd.stock, journal, nil) -- before: found even if this run is killed
      io.stdout:write("  ", head, " (stock ", it.stock_id, ", ", users, "):\n")
      io.stdout:flush()
      local summary, code, message = send.run { wx = s.wx, stock_id = it.stock_id, users = users,
        journal = journal, key = sd.key }
      if summary then state:record_journal(sd.name, sd.stock, journal, summary.batch) end
      io.stdout:write("  ", head, ": ", summary and send.describe(summary) or ("not sent: " .. tostring(message)), "\n")
      codes[#codes + 1] = code
    end
  end
  return send.worst(table.unpack(codes))
end

return M
