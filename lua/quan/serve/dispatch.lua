-- quan.serve.dispatch: runs the notification handler on the stored events,
-- on the receiver's main thread (server:wait's tick), never on the answer
-- path: a slow or failing handler delays no answer and loses no event.
--
--   dispatch.new{store =, handler = fn | nil, log =, retry_max =, timeout =}
--       -> dispatcher
--   dispatcher:run(budget[, stop]) -> calls made: the due events, in
--       arrival order, until none is due, `budget` seconds have passed, or
--       stop() (asked between calls) is true
--   dispatch.event(row, attempt) -> the table the handler gets
--
-- Each call is counted in the store before it starts and the event marked
-- handled only after the handler returned: a receiver killed inside a
-- handler calls it again for that event after its restart (at least once).
-- A call fails when the handler raises, or returns false, or nil and a
-- reason (the `nil, err` of a failed API call passed on); the event stays
-- pending and is called again after a backoff (1 s, 2 s, 4 s, ... up to
-- retry_max). A call running past `timeout` seconds (default TIMEOUT) fails
-- too, stopped where it next runs code of its own (quan.os.resume_within): a
-- wait inside C or inside quan's modules (a sleep, an API call) runs to its
-- end first.
local M = {}

local cjson = require "cjson.safe"
local qos = require "quan.os"
local storemod = require "quan.serve.store"

-- LEASE: seconds an event under way is held from other calls; only a
-- handler running longer than that (or a killed receiver) sees it due again,
-- and a restart makes every pending event due at once
local LEASE = 3600

-- TIMEOUT: seconds a handler call may run (--handler-timeout): under the
-- 60 s stop timeout of the systemd unit in docs/notifications.md, so that a
-- SIGTERM's drain (the call under way) ends before systemd's SIGKILL
M.TIMEOUT = 50

local Dispatcher = {}
Dispatcher.__index = Dispatcher

-- event(row, attempt) -> {id, event_type, create_time, summary,
-- resource_type, data (the decrypted resource), received, deliveries, attempt}
function M.event(row, attempt)
  return {
    id = row.id, event_type = row.event_type, create_time = row.create_time, summary = row.summary,
    resource_type = row.resource_type, data = cjson.decode(row.data), received = row.received,
    deliveries = row.deliveries, attempt = attempt,
  }
end

-- new{store, handler, log, retry_max} -> dispatcher (handler nil: events
-- are stored and stay pending, for a later receiver with a handler)
function M.new(o)
  return setmetatable({ store = o.store, handler = o.handler, log = o.log,
    retry_max = o.retry_max or storemod.RETRY_MAX, timeout = o.timeout or M.TIMEOUT }, Dispatcher)
end

-- message(err) -> text of an error value (an error table prints as its text)
local function message(err)
  if type(err) == "table" then
    local mt = getmetatable(err)
    if mt and mt.__tostring then return tostring(err) end
    return cjson.encode(err) or tostring(err)
  end
  return tostring(err)
end

local function traceback(err)
  return debug.traceback(message(err), 2)
end

-- call(handler, event, timeout) -> true | false, message: the handler in a
-- coroutine, resumed with a time limit (quan.os.resume_within: a Ctrl-C
-- reaches it, and past the limit it is stopped wherever it runs code of its
-- own, in the coroutines it made too); a call that yields is closed
local function call(handler, event, timeout)
  local co = coroutine.create(function() return xpcall(handler, traceback, event) end)
  local stopped, resumed, ok, first, second = qos.resume_within(timeout, co)
  local yielded = coroutine.status(co) == "suspended"
  if yielded then coroutine.close(co) end -- its to-be-closed variables run
  if stopped then
    return false, ("the handler ran past %g s (--handler-timeout)"):format(timeout)
  end
  if not resumed then return false, message(ok) end
  if yielded then return false, "the handler yielded outside a quan.async task" end
  if not ok then return false, first end
  if first == false then return false, second ~= nil and message(second) or "the handler returned false" end
  if first == nil and second ~= nil then return false, message(second) end
  return true
end

-- dispatcher:run(budget[, stop]) -> calls made
function Dispatcher:run(budget, stop)
  if not self.handler then return 0 end
  local store, log = self.store, self.log
  local deadline, calls = qos.now() + (budget or 0), 0
  repeat
    local rows = store:due(qos.time(), 16)
    for _, row in ipairs(rows) do
      local started = qos.now()
      local attempt = store:begin_attempt(row.id, qos.time(), LEASE)
      local ok, why = call(self.handler, M.event(row, attempt), self.timeout)
      calls = calls + 1
      local seconds = math.floor((qos.now() - started) * 1000 + 0.5) / 1000
      if ok then
        store:handled(row.id, qos.time())
        log("handled", { id = row.id, attempt = attempt, seconds = seconds })
      else
        local wait = storemod.retry_delay(attempt, self.retry_max)
        store:failed(row.id, qos.time() + wait, why)
        log("handler_failed", { id = row.id, attempt = attempt, seconds = seconds, retry_in = wait,
          error = (why:gsub("\n.*", "")) })
      end
      if qos.now() >= deadline or (stop and stop()) then return calls end
    end
  until #rows == 0 or qos.now() >= deadline
  return calls
end

return M
