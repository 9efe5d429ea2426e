-- quan.async: coroutine tasks and promises over one quan.http multi per state.
--
-- A task is a coroutine that the loop below resumes. Inside a task,
-- async.request, async.sleep and promise:wait() yield to the loop instead of
-- blocking; outside any task they drive the loop themselves until their own
-- result is in, so other tasks progress meanwhile. Only step() resumes tasks
-- (through quan.os.resume, which lets a Ctrl-C reach the task it runs).
--
-- A task is also a promise (:next, :catch, :wait). Callbacks given to :next
-- and :catch run in tasks of their own, so they may yield too.
local http = require "quan.http"
local qos = require "quan.os"

-- resume: coroutine.resume that lets a Ctrl-C reach the task it runs
local create, resume, yield = coroutine.create, require("quan.os").resume, coroutine.yield
local running, costatus = coroutine.running, coroutine.status
local pack, unpack = table.pack, table.unpack
local now = qos.now
local type, error, pcall, pairs, tostring, setmetatable, getmetatable =
  type, error, pcall, pairs, tostring, setmetatable, getmetatable

local M = {}

local YIELD = {}             -- what our tasks yield: nothing else may
local multi                  -- http.multi(), made on the first request
local waiting = {}           -- request id -> task or waiter table
local timers = {}            -- binary heap of {at =, seq =, task = | waiter =}
local timer_seq = 0
local ready_fn, ready_arg, ready_head, ready_tail = {}, {}, 1, 0
local task_of = setmetatable({}, { __mode = "k" }) -- coroutine -> task
local live = 0               -- tasks started and not finished
local unobserved_seq = 0
local UNOBSERVED_KEPT = 100  -- rejections kept for the report; the rest are counted
local unobserved_n = 0       -- entries in unobserved
local unobserved_more = 0    -- rejections past the cap, still unobserved

-- rejected promise nobody looked at -> sequence no. When the table goes
-- (the state closes), what is still in it is written to stderr: a rejection
-- never passes silently, even in a script that never calls async.run().
-- Only the first UNOBSERVED_KEPT are held (a long run must not grow); the
-- others are counted and reported as "and N more".
local unobserved = setmetatable({}, { __gc = function(list)
  local left = {}
  for p, n in pairs(list) do left[#left + 1] = { n, p } end
  table.sort(left, function(a, b) return a[1] < b[1] end)
  for _, e in ipairs(left) do
    local ok, msg = pcall(tostring, e[2].value[1])
    io.stderr:write("quan.async: a rejection nothing observed: ", ok and msg or "?", "\n")
  end
  if unobserved_more > 0 then
    io.stderr:write("quan.async: and ", unobserved_more, " more rejections nothing observed\n")
  end
end })

local Promise = {}
Promise.__index = Promise
Promise.__name = "quan.async.promise"

local function is_promise(v)
  return getmetatable(v) == Promise
end

local function argerror(fname, i, expected, v)
  local what = i == 0 and ("calling '%s' on bad self"):format(fname)
    or ("bad argument #%d to '%s'"):format(i, fname)
  error(("%s (%s expected, got %s)"):format(what, expected, type(v)), 3)
end

-- ---- the ready queue: callbacks run by the loop, never nested -------------

local function enqueue(fn, arg)
  ready_tail = ready_tail + 1
  ready_fn[ready_tail], ready_arg[ready_tail] = fn, arg
end

local function run_ready()
  while ready_head <= ready_tail do
    local i = ready_head
    local fn, arg = ready_fn[i], ready_arg[i]
    ready_fn[i], ready_arg[i] = nil, nil
    ready_head = i + 1
    fn(arg)
  end
end

-- ---- timers: a binary heap ordered by (at, seq) ---------------------------

local function earlier(a, b)
  return a.at < b.at or (a.at == b.at and a.seq < b.seq)
end

local function timer_push(t)
  timer_seq = timer_seq + 1
  t.seq = timer_seq
  local i = #timers + 1
  timers[i] = t
  while i > 1 do
    local p = i // 2
    if not earlier(timers[i], timers[p]) then break end
    timers[i], timers[p] = timers[p], timers[i]
    i = p
  end
end

local function timer_pop()
  local top, n = timers[1], #timers
  timers[1] = timers[n]
  timers[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and earlier(timers[l], timers[m]) then m = l end
    if r <= n and earlier(timers[r], timers[m]) then m = r end
    if m == i then break end
    timers[i], timers[m] = timers[m], timers[i]
    i = m
  end
  return top
end

-- ---- promises ---------------------------------------------------------------

local function new_promise()
  return setmetatable({ state = "pending", observers = {} }, Promise)
end

local function mark_observed(p)
  if not p.observed then
    p.observed = true
    if unobserved[p] then
      unobserved[p] = nil
      unobserved_n = unobserved_n - 1
    elseif p.past_cap then
      p.past_cap = nil
      unobserved_more = unobserved_more - 1
    end
  end
end

-- settle(p, state, packed): the first settlement wins; observers run from the
-- ready queue.
local function settle(p, state, value)
  if p.state ~= "pending" then return end
  p.state, p.value = state, value
  local obs = p.observers
  p.observers = nil
  if state == "rejected" and not p.observed then
    if unobserved_n < UNOBSERVED_KEPT then
      unobserved_seq = unobserved_seq + 1
      unobserved[p] = unobserved_seq
      unobserved_n = unobserved_n + 1
    else
      p.past_cap = true -- counted in unobserved_more, not held
      unobserved_more = unobserved_more + 1
    end
  end
  for i = 1, #obs do enqueue(obs[i], p) end
end

-- observe(p, fn): fn(p) once p is settled (at once when it already is).
local function observe(p, fn)
  mark_observed(p)
  if p.state == "pending" then
    p.observers[#p.observers + 1] = fn
  else
    fn(p)
  end
end

local function results(p)
  if p.state == "rejected" then error(p.value[1], 0) end
  return unpack(p.value, 1, p.value.n)
end

-- ---- tasks ------------------------------------------------------------------

local function current_task()
  local co, main = running()
  if main then return nil end
  return task_of[co]
end

-- step(task, ...): resumes the task with ... until it yields or ends. A
-- task settled meanwhile (cancelled) is not resumed: a timer or an observer
-- it left behind may still call.
local function step(task, ...)
  if task.state ~= "pending" then return end
  local co = task.co
  local r = pack(resume(co, ...))
  if not r[1] then
    live = live - 1
    task_of[co] = nil
    settle(task, "rejected", pack(r[2]))
    -- a Ctrl-C that landed in the task ends the loop, as it would have had it
    -- landed here
    if qos.is_interrupt(r[2]) then
      mark_observed(task)
      error(r[2], 0)
    end
  elseif costatus(co) == "dead" then
    live = live - 1
    task_of[co] = nil
    settle(task, "fulfilled", pack(unpack(r, 2, r.n)))
  elseif r[2] ~= YIELD then
    live = live - 1
    task_of[co] = nil
    settle(task, "rejected",
      pack("async: a task yielded outside quan.async (use async.request, async.sleep, :wait)"))
  end
end

local function start(fn, ...)
  local task = new_promise()
  local co = create(fn)
  task.co = co
  task_of[co] = task
  live = live + 1
  step(task, ...)
  return task
end

-- await(p) inside a task: yields until p is settled, then its results.
local function await(task, p)
  mark_observed(p)
  if p.state == "pending" then
    p.observers[#p.observers + 1] = function() step(task) end
    yield(YIELD)
  end
  return results(p)
end

-- ---- the loop ---------------------------------------------------------------

local function deliver(c)
  local w = waiting[c.id]
  waiting[c.id] = nil
  if w == nil then return end
  if w.co then
    w.request = nil
    if c.res then step(w, c.res) else step(w, nil, c.err, c.code) end
  elseif c.res then
    w[1], w.n = c.res, 1
  else
    w[1], w[2], w[3], w.n = nil, c.err, c.code, 3
  end
end

-- poll(): one turn: due timers, then network activity or a sleep until the
-- next timer. false when there is nothing left that could make progress.
local function poll()
  local t = now()
  local fired = false
  while timers[1] and timers[1].at <= t do
    local e = timer_pop()
    if e.task then
      fired = true
      step(e.task)
    elseif e.waiter then
      fired = true
      e.waiter.done = true
    end -- else: the sleep of a cancelled task
  end
  while timers[1] and not (timers[1].task or timers[1].waiter) do timer_pop() end
  -- when a timer fired or a callback is ready, what the loop is driven for
  -- may be over: the network is looked at without waiting, then back
  local busy = fired or ready_head <= ready_tail
  local pending = multi and multi:pending() or 0
  if pending > 0 then
    local wait = 0
    if not busy then wait = timers[1] and math.max(0, timers[1].at - now()) or nil end
    local done = multi:perform(wait)
    for i = 1, #done do deliver(done[i]) end
    return true
  end
  if busy then return true end
  if timers[1] then
    qos.sleep(math.max(0, timers[1].at - now()))
    return true
  end
  return false
end

-- drive(done[, x]): runs the loop until done(x) is true.
local function drive(done, x)
  while true do
    run_ready()
    if done(x) then return end
    if not poll() then
      run_ready()
      if done(x) then return end
      error("async: deadlock: nothing left that could finish the wait", 3)
    end
  end
end

-- ---- public API -------------------------------------------------------------

-- in_task() -> true when called from inside a task
function M.in_task()
  return current_task() ~= nil
end

-- spawn(fn, ...) -> task: runs fn(...) in a new task, at once, until it
-- first yields.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    local mt = getmetatable(fn)
    if not (mt and mt.__call) then argerror("spawn", 1, "function", fn) end
    local callable = fn
    fn = function(...) return callable(...) end
  end
  return start(fn, ...)
end

-- answered(w), woken(w): whether what a wait outside a task waits for has
-- come (drive's done, without a closure per wait)
local function answered(w) return w.n ~= nil end
local function woken(w) return w.done end

-- request(req) -> res | nil, message, code: quan.http's request; yields
-- inside a task, drives the loop outside one.
function M.request(req)
  if type(req) ~= "table" then argerror("request", 1, "table", req) end
  multi = multi or http.multi()
  local ok, id = pcall(multi.add, multi, req)
  if not ok and qos.is_interrupt(id) then error(id, 0) end
  if not ok then error((tostring(id):gsub("^[^\n]-:%d+: ", "")), 2) end
  local task = current_task()
  if task then
    waiting[id] = task
    task.request = id -- what p:cancel() cancels
    return yield(YIELD)
  end
  local w = {}
  waiting[id] = w
  local ok, err = pcall(drive, answered, w)
  if not ok then
    -- an error unwinds the wait (Ctrl-C): the request is abandoned, so it
    -- must not go on in the background the next time the loop runs
    waiting[id] = nil
    multi:cancel(id)
    error(err, 0)
  end
  return unpack(w, 1, w.n)
end

-- sleep(seconds): yields inside a task; outside, drives the loop meanwhile.
-- NaN and infinite durations raise (a timer that never fires, or never
-- compares, would stall the loop)
function M.sleep(s)
  if type(s) ~= "number" then argerror("sleep", 1, "number", s) end
  if s ~= s then error("bad argument #1 to 'sleep' (NaN is not a duration)", 2) end
  if s < 0 then error("bad argument #1 to 'sleep' (negative duration)", 2) end
  if s == math.huge then error("bad argument #1 to 'sleep' (infinite duration)", 2) end
  local task = current_task()
  if task then
    local e = { at = now() + s, task = task }
    timer_push(e)
    task.timer = e -- what p:cancel() forgets
    yield(YIELD)
    task.timer = nil
    return
  end
  local w = {}
  timer_push({ at = now() + s, waiter = w })
  drive(woken, w)
end

-- run(): drives the loop until every task has finished; then re-raises the
-- first rejection that nothing observed.
function M.run()
  drive(function() return live == 0 end)
  local first, seq
  for p, n in pairs(unobserved) do
    if not seq or n < seq then first, seq = p, n end
  end
  if first then
    mark_observed(first)
    error(first.value[1], 0)
  end
end

-- promise(executor) -> p: executor(resolve, reject) runs at once; resolving
-- with a promise adopts its outcome; an error in executor rejects p.
function M.promise(executor)
  if type(executor) ~= "function" then argerror("promise", 1, "function", executor) end
  local p = new_promise()
  local function resolve(...)
    local v = ...
    if is_promise(v) then
      observe(v, function(q) settle(p, q.state, q.value) end)
    else
      settle(p, "fulfilled", pack(...))
    end
  end
  local function reject(err)
    settle(p, "rejected", pack(err))
  end
  local ok, err = pcall(executor, resolve, reject)
  if not ok then reject(err) end
  return p
end

-- resolved(...) / rejected(err) -> an already settled promise
function M.resolved(...)
  local p = new_promise()
  settle(p, "fulfilled", pack(...))
  return p
end

function M.rejected(err)
  local p = new_promise()
  settle(p, "rejected", pack(err))
  return p
end

-- all(list) -> p: fulfilled with the array of each entry's first value once
-- all are fulfilled (plain values count as fulfilled); rejected with the
-- first rejection.
function M.all(list)
  if type(list) ~= "table" then argerror("all", 1, "table", list) end
  local p = new_promise()
  p.sources = list -- what it waits for (the REPL cancels them with it)
  local n = #list
  local out, left = {}, n
  for i = 1, n do
    local v = list[i]
    if is_promise(v) then
      observe(v, function(q)
        if q.state == "fulfilled" then
          out[i] = q.value[1]
          left = left - 1
          if left == 0 then settle(p, "fulfilled", pack(out)) end
        else
          settle(p, "rejected", q.value)
        end
      end)
    else
      out[i] = v
      left = left - 1
    end
  end
  if left == 0 then settle(p, "fulfilled", pack(out)) end
  return p
end

M.is_promise = is_promise

-- p:next([on_ok [, on_err]]) -> task: on_ok(values...) or on_err(err) runs in
-- a task once p is settled; its results (or its error) settle the task. A
-- promise returned by a callback is waited for.
function Promise:next(on_ok, on_err)
  if not is_promise(self) then argerror("next", 0, "promise", self) end
  if on_ok ~= nil and type(on_ok) ~= "function" then argerror("next", 1, "function or nil", on_ok) end
  if on_err ~= nil and type(on_err) ~= "function" then argerror("next", 2, "function or nil", on_err) end
  local p = self
  local t = start(function()
    local task = current_task()
    mark_observed(p)
    if p.state == "pending" then
      p.observers[#p.observers + 1] = function() step(task) end
      yield(YIELD)
    end
    local r
    if p.state == "fulfilled" then
      if not on_ok then return unpack(p.value, 1, p.value.n) end
      r = pack(on_ok(unpack(p.value, 1, p.value.n)))
    else
      if not on_err then error(p.value[1], 0) end
      r = pack(on_err(p.value[1]))
    end
    if is_promise(r[1]) then return await(task, r[1]) end
    return unpack(r, 1, r.n)
  end)
  t.source = p -- what it waits for first (the REPL cancels a chain whole)
  return t
end

-- p:catch(on_err) -> task: p:next(nil, on_err)
function Promise:catch(on_err)
  if type(on_err) ~= "function" then argerror("catch", 1, "function", on_err) end
  return self:next(nil, on_err)
end

-- p:wait() -> p's values; raises p's error. Yields inside a task, drives the
-- loop outside one.
function Promise:wait()
  if not is_promise(self) then argerror("wait", 0, "promise", self) end
  local task = current_task()
  if task then return await(task, self) end
  mark_observed(self)
  drive(function() return self.state ~= "pending" end)
  return results(self)
end

-- p:cancel([reason]) -> true when p was pending: p is rejected with reason
-- (default "async: cancelled"; an error a to-be-closed variable raises while
-- closing, if any), counted as observed. A task also stops: its coroutine is
-- closed, the request it waits for is cancelled (never sent, or its answer
-- dropped), its sleep or wait is forgotten. Only p: what p waits for goes on
-- (other promises may wait for it too). false when p had already settled. A
-- task cannot cancel itself, nor a task whose coroutine is running.
function Promise:cancel(reason)
  if not is_promise(self) then argerror("cancel", 0, "promise", self) end
  if self.state ~= "pending" then return false end
  local co = self.co
  if co then
    if costatus(co) ~= "suspended" then error("async: a task cannot be cancelled while it runs", 2) end
    local id = self.request
    if id then
      self.request = nil
      waiting[id] = nil
      multi:cancel(id)
    end
    if self.timer then
      self.timer.task = nil -- stays in the heap, inert
      self.timer = nil
    end
    live = live - 1
    task_of[co] = nil
    local closed, err = coroutine.close(co)
    -- an error raised while closing a to-be-closed variable is not lost
    if not closed then reason = err end
  end
  mark_observed(self)
  settle(self, "rejected", pack(reason == nil and "async: cancelled" or reason))
  return true
end

-- p:status() -> "pending" | "fulfilled" | "rejected"
function Promise:status()
  return self.state
end

function Promise:__tostring()
  return ("quan.async.promise (%s)"):format(self.state)
end

return M
