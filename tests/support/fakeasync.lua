-- tests.support.fakeasync: a tiny stand-in for quan.async (spawn, sleep,
-- task:wait) over coroutines and a virtual or real clock, so the batch
-- engine can be tested without the network. Sleeping tasks wake in order of
-- their wake time; with virtual = true no real time passes.
local M = {}

function M.new(opts)
  opts = opts or {}
  local qos = require "quan.os"
  local A = { now = 0 }
  local tasks, sleeping = {}, {}
  local current

  local function clock()
    if opts.virtual then return A.now end
    return qos.now()
  end
  A.clock = clock

  local Task = {}
  Task.__index = Task

  function A.spawn(fn, ...)
    local args = table.pack(...)
    local t = setmetatable({ co = coroutine.create(function() return fn(table.unpack(args, 1, args.n)) end),
                             done = false }, Task)
    tasks[#tasks + 1] = t
    sleeping[#sleeping + 1] = { at = clock(), task = t }
    return t
  end

  function A.sleep(s)
    local t = current
    if not t then
      if opts.virtual then A.now = A.now + s else qos.sleep(s) end
      return
    end
    sleeping[#sleeping + 1] = { at = clock() + s, task = t }
    coroutine.yield()
  end

  function A.in_task() return current ~= nil end

  local function step()
    if #sleeping == 0 then return false end
    local bi = 1
    for i = 2, #sleeping do if sleeping[i].at < sleeping[bi].at then bi = i end end
    local s = table.remove(sleeping, bi)
    local now = clock()
    if s.at > now then
      if opts.virtual then A.now = s.at else qos.sleep(s.at - now) end
    end
    current = s.task
    local ok, err = coroutine.resume(s.task.co)
    current = nil
    if coroutine.status(s.task.co) == "dead" then
      s.task.done = true
      if not ok then s.task.err = err end
    end
    return true
  end

  function Task:wait()
    while not self.done do
      if not step() then error("fakeasync: deadlock", 2) end
    end
    if self.err then error(self.err, 0) end
  end

  function A.run() while step() do end end

  return A
end

return M
