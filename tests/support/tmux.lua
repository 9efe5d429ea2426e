-- tests.support.tmux: drive a program on a pseudo-terminal through tmux.
--
--   local tmux = require "tests.support.tmux"
--   local s = tmux.start(cmd, {env = {HOME = dir, NO_COLOR = "1"}})
--   s:type("1 + 1") s:keys("Enter")
--   s:wait_for("2")          -- polls the screen until the text appears
--   s:close()
--
-- Each session has its own tmux server (a private -L socket), so specs never
-- touch a user's tmux. The pane stays after the program exits, so its last
-- screen can still be read; s:dead() tells whether it has exited.
local sh = require "tests.support.sh"
local qos = require "quan.os"

local M = {}

local Session = {}
Session.__index = Session

local count = 0

-- sessions not closed (a spec that failed before its s:close()) are ended
-- when the test process closes its Lua state, so no tmux server outlives it
local open = {}
M._reaper = setmetatable({}, { __gc = function()
  for socket in pairs(open) do os.execute("tmux -L " .. socket .. " kill-server 2>/dev/null") end
end })

local function tmux(self, args)
  return sh.run("tmux -u -L " .. self.socket .. " " .. args)
end

-- start(cmd [, opts]) -> session; opts.env: variables for the program,
-- opts.width/height (120 x 40)
function M.start(cmd, opts)
  opts = opts or {}
  count = count + 1
  local self = setmetatable({
    socket = ("quan-spec-%d-%d"):format(qos.getpid(), count),
  }, Session)
  local env = { "TERM=xterm-256color" }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. sh.quote(v) end
  local conf = os.tmpname()
  sh.write(conf, "set -g remain-on-exit on\nset -g history-limit 5000\n")
  self.conf = conf
  local full = "env " .. table.concat(env, " ") .. " " .. cmd
  local _, err, code = sh.run(("tmux -u -L %s -f %s new-session -d -s t -x %d -y %d %s"):format(
    self.socket, conf, opts.width or 120, opts.height or 40, sh.quote(full)))
  assert(code == 0, "tmux new-session failed: " .. tostring(err))
  open[self.socket] = true
  return self
end

-- type(text): literal keys
function Session:type(text)
  tmux(self, "send-keys -t t -l " .. sh.quote(text))
  return self
end

-- keys(...): named keys, e.g. "Enter", "Tab", "C-c", "C-d", "Up"
function Session:keys(...)
  for _, k in ipairs { ... } do tmux(self, "send-keys -t t " .. k) end
  return self
end

-- line(text): text then Enter
function Session:line(text)
  return self:type(text):keys("Enter")
end

-- screen([escapes]) -> the pane's text with its scrollback (with colour
-- escapes when asked)
function Session:screen(escapes)
  local out = tmux(self, "capture-pane -p -J -S -1000 " .. (escapes and "-e " or "") .. "-t t")
  return out
end

-- dead() -> true when the program has exited
function Session:dead()
  local out = tmux(self, "display-message -p -t t '#{pane_dead}'")
  return out:match("1") ~= nil
end

-- wait_for(text [, timeout=20, escapes]) -> screen; plain text, not a
-- pattern; fails with the screen when it does not appear in time. With a
-- count n (text, timeout, escapes, n), waits for the n-th occurrence.
function Session:wait_for(text, timeout, escapes, n)
  local deadline = qos.now() + (timeout or 20)
  n = n or 1
  local screen
  repeat
    screen = self:screen(escapes)
    local found, at = 0, 1
    while true do
      local s, e = screen:find(text, at, true)
      if not s then break end
      found, at = found + 1, e + 1
    end
    if found >= n then return screen end
    qos.sleep(0.05)
  until qos.now() > deadline
  error(("text %q did not appear; screen:\n%s"):format(text, screen), 2)
end

-- wait_dead([timeout=10]) -> true when the program exited in time
function Session:wait_dead(timeout)
  local deadline = qos.now() + (timeout or 10)
  repeat
    if self:dead() then return true end
    qos.sleep(0.05)
  until qos.now() > deadline
  return false
end

function Session:close()
  tmux(self, "kill-server")
  os.remove(self.conf)
  open[self.socket] = nil
end

return M
