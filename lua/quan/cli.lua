-- quan.cli: quan's commands other than running a script (main.c handles
-- that, lua.c-style). main(command, args) -> exit status.
local M = {}

local commands = {
  check = "quan.check",     -- validate a campaign script's requests, send nothing
  sandbox = "quan.sandbox", -- serve the local emulator of the favor API
  repl = "quan.repl",       -- the interactive loop
  plan = "quan.campaign.plan",   -- what apply would do to make a campaign so (reads only)
  apply = "quan.campaign.apply", -- make a campaign so: create, start, pause, restart
}

function M.main(command, args)
  local mod = commands[command]
  if not mod then
    io.stderr:write("quan: unknown command '", tostring(command), "'\n")
    return 2
  end
  return require(mod).main(args)
end

return M
