-- quan.campaign.apply: `quan apply CAMPAIGN.lua`, which carries out the plan
-- (quan.campaign.plan): records stocks found by reading, creates what is
-- missing, then starts, pauses and restarts, in that order, one step at a
-- time. Each step is written to the state before its call and after its
-- answer, so a kill at any moment and another apply converge: a create whose
-- answer was lost is found again by reading (or sent again with the same
-- out_request_no), a transition whose answer was lost is settled by reading
-- the stock's status. Calls are retried (network, 429, 5xx) as the client's
-- `retry` option does. Then the campaign's sends run, each once its stock
-- runs (quan.campaign.sends); apply's exit code is then the worst of
-- theirs. See docs/campaigns.md.
--
--   apply.main(args) -> exit status
--   apply.hooks.step(n, key, action, phase): called around each step, phase
--       "before" (recorded as started, before the call), "after" (answered,
--       not yet recorded) and "done"; the specs kill apply there
local M = {}

local json = require "wechatpay.json"
local plan_ = require "quan.campaign.plan"
local command = require "quan.campaign.command"
local format = require "quan.format"

local EXIT = command.EXIT

M.hooks = {}

-- what a stock is after a transition
local AFTER = { start = "running", pause = "paused", restart = "running" }

-- a state that writes nothing: what a dry run records into
local Nothing = {}
Nothing.__index = function() return function() return 0 end end

local function hook(n, key, action, phase)
  local h = M.hooks.step
  if h then h(n, key, action, phase) end
end

-- schedule(plan) -> { {item, action}... }: records, then creates, then
-- the transitions, each key's in its order
local function schedule(plan)
  local list = {}
  for _, pass in ipairs { { record = true }, { create = true }, { start = true, pause = true, restart = true } } do
    for _, it in ipairs(plan.stocks) do
      for _, action in ipairs(it.steps) do
        if pass[action] then list[#list + 1] = { item = it, action = action } end
      end
    end
  end
  return list
end

local Run = {}
Run.__index = Run

-- one line of progress
function Run:say(fmt, ...)
  io.stdout:write("  ", fmt:format(...), "\n")
  io.stdout:flush()
end

-- tries(x) -> " (after N tries)" when a call was retried
local function tries(x)
  local n = type(x) == "table" and x.attempts
  if n and n > 1 then return " (after " .. n .. " tries)" end
  return ""
end

-- record(it): a stock found by reading (or pinned by stock_id) becomes the key's
function Run:record(it, n)
  local st = self.state
  local id = st:begin_step(it.key, "record", { stock_id = it.stock_id })
  hook(n, it.key, "record", "before")
  hook(n, it.key, "record", "after")
  st:end_step(id, "done", it.origin == "found" and ("found by reading: " .. it.match .. " match") or "declared stock_id",
    { key = it.key, out_request_no = it.out_request_no, stock_id = it.stock_id, status = it.status,
      origin = it.origin })
  hook(n, it.key, "record", "done")
  self:say("%s: recorded stock %s (%s)", it.key, it.stock_id,
    it.origin == "found" and "found by reading the merchant's stocks" or "stock_id declared")
  return true
end

function Run:create(it, n)
  local st, s = self.state, self.session
  local body = json.encode(it.json)
  local id = st:begin_step(it.key, "create", { out_request_no = it.out_request_no, request = body })
  hook(n, it.key, "create", "before")
  local res, err = s.wx.v3.marketing.favor.couponStocks:post { json = it.json, retry = s.retry }
  hook(n, it.key, "create", "after")
  if res and type(res.json) == "table" and res.json.stock_id ~= nil then
    local sid = tostring(res.json.stock_id)
    st:end_step(id, "done", res.body, { key = it.key, stock_id = sid, status = "unactivated", origin = "created" })
    it.stock_id, it.status = sid, "unactivated"
    hook(n, it.key, "create", "done")
    self:say("%s: created stock %s%s", it.key, sid, tries(res))
    return true
  end
  if res then err = "the answer carries no stock_id: " .. tostring(res.body) end
  -- the number was taken by another request (the declaration changed after
  -- a create whose answer was lost): the stock is found by reading
  if type(err) == "table" and err.kind == "http" and err.code == "INVALID_REQUEST" then
    it.refused = true
    local ok = plan_.find(self.ctx, { it }, self.taken)
    if ok and it.stock then
      st:end_step(id, "done", "out_request_no in use: found by reading, " .. it.match .. " match",
        { key = it.key, stock_id = it.stock_id, status = it.status, origin = "found" })
      hook(n, it.key, "create", "done")
      self:say("%s: out_request_no %s was in use: recorded stock %s, found by reading (%s match)", it.key,
        it.out_request_no, it.stock_id, it.match)
      return true
    end
  end
  local why = tostring(err)
  if type(err) == "table" and err.kind == "http" and err.code == "INVALID_REQUEST" then
    why = why .. "; if a stock was created under this key before its declaration changed (out_request_no "
      .. it.out_request_no .. "), no stock of the merchant matches its stock_name: find its id and pin it: "
      .. "stock_id = \"...\" beside the key's state"
  end
  st:end_step(id, "failed", why)
  self:say("%s: stock '%s': create failed%s: %s", it.where, it.key, tries(err), why)
  return false
end

function Run:transition(it, action, n)
  local st, s = self.state, self.session
  local target = AFTER[action]
  local body = { stock_creator_mchid = s.mchid }
  local id = st:begin_step(it.key, action, { stock_id = it.stock_id, request = json.encode(body) })
  hook(n, it.key, action, "before")
  local res, err = s.wx.v3.marketing.favor.stocks._stock_id_[action]:post {
    stock_id = it.stock_id, json = body, retry = s.retry,
  }
  hook(n, it.key, action, "after")
  local settled
  if not res then
    -- an earlier try may have taken effect with its answer lost (a repeated
    -- transition is refused, or not, as the API pleases): the status says
    local stock = plan_.get_stock(self.ctx, it.stock_id)
    if stock and stock.status == target then settled = true end
  end
  if res or settled then
    st:end_step(id, "done", res and res.body or ("refused (" .. tostring(err) .. "), and the stock is " .. target),
      { key = it.key, status = target })
    it.status = target
    hook(n, it.key, action, "done")
    self:say("%s: %s stock %s: %s%s", it.key, action == "start" and "started" or action == "pause" and "paused"
      or "restarted", it.stock_id, target, settled and " (it already was: an earlier answer was lost)" or tries(res))
    return true
  end
  st:end_step(id, "failed", tostring(err))
  self:say("%s: stock '%s': %s failed%s: %s", it.where, it.key, action, tries(err), tostring(err))
  return false
end

-- run(steps) -> done count, failed step | nil
function Run:steps(list)
  for n, step in ipairs(list) do
    local it, action = step.item, step.action
    local ok
    if action == "record" then ok = self:record(it, n)
    elseif action == "create" then ok = self:create(it, n)
    elseif it.stock_id then ok = self:transition(it, action, n)
    else
      self:say("%s: %s skipped: the stock was not created", it.key, action)
      ok = false
    end
    if not ok then return n - 1, step end
    if it.stock_id then self.taken[it.stock_id] = it.key end
  end
  return #list
end

-- confirm(s, plan) -> true when the person at the terminal typed yes
local function confirm(s, n)
  io.stdout:write(("apply %s to merchant %s at %s? Type yes to go on: "):format(
    n == 1 and "this step" or ("these " .. n .. " steps"), s.mchid, s.base_url))
  io.stdout:flush()
  local line = io.stdin:read("l")
  return line ~= nil and line:match("^%s*(.-)%s*$") == "yes"
end

-- main(o, arguments) -> exit status: `quan apply` (its options: quan.cli's
-- table; o.yes, o.dry_run, o.state, o.profile; arguments = { file })
function M.main(o, arguments)
  o.file = arguments[1]
  local dry = o.dry_run or (os.getenv("QUAN_DRY_RUN") or "") ~= "" and os.getenv("QUAN_DRY_RUN") ~= "0"
  local qos = require "quan.os"
  local decl, failed = command.load(o.file, "quan apply")
  if not decl then return failed end
  if not dry and not o.yes and not qos.isatty(0) then
    io.stderr:write("quan apply: stdin is not a terminal, so nobody can confirm: give --yes to apply without asking\n")
    return EXIT.usage
  end
  local s, serr, scode = command.session(decl, o)
  if not s then
    io.stderr:write("quan apply: ", serr, "\n")
    return scode
  end
  local statemod = require "quan.campaign.state"
  local expect = { campaign = decl.name, mchid = s.mchid, api = s.api }
  local st, err, code
  if dry then
    st, err, code = statemod.read(s.state_path, expect)
  else
    st, err, code = statemod.open(s.state_path, expect)
  end
  if st == nil then
    io.stderr:write("quan apply: ", err, "\n")
    return code == "busy" and EXIT.busy or EXIT.failed
  end
  local records = st and st:records() or {}
  local ctx = { wx = s.wx, mchid = s.mchid, now = s.now, records = records, retry = s.retry }
  local plan, perr = plan_.build(decl, ctx)
  local function finish(exit_code)
    if st then st:close() end
    return exit_code
  end
  if not plan then
    io.stderr:write("quan apply: ", tostring(perr), "\n")
    return finish(EXIT.failed)
  end
  local render = require "quan.campaign.render"
  io.stdout:write(render.text(plan, command.head(decl, s, s.state_path, s.state_note)))
  if plan.problems > 0 then
    io.stdout:write("apply: nothing done: ", plan.problems == 1 and "a stock has" or (plan.problems .. " stocks have"),
      " errors (above)\n")
    return finish(EXIT.failed)
  end
  local list = schedule(plan)
  local sends = require "quan.campaign.sends"
  if #list == 0 then
    io.stdout:write("apply: nothing to do\n")
    return finish(sends.run(decl, plan, s, st, dry))
  end
  local state = st
  if dry then
    state = setmetatable({}, Nothing)
    command.print_writes() -- reads go out (the plan needs what exists)
  elseif not o.yes then
    local writes = plan.changes
    if writes > 0 and not confirm(s, #list) then
      io.stdout:write("apply: cancelled; nothing done\n")
      return finish(EXIT.failed)
    end
  end
  io.stdout:write(dry and "apply --dry-run: the write requests, as they would go out:\n" or "apply:\n")
  if not dry then state:begin_run("apply") end
  local taken = {} -- stock ids recorded or pinned for a key, never found for another
  for key, r in pairs(records) do if r.stock_id then taken[r.stock_id] = key end end
  for _, e in ipairs(decl.stocks) do if e.stock_id then taken[e.stock_id] = taken[e.stock_id] or e.key end end
  local run = setmetatable({ session = s, state = state, ctx = ctx, taken = taken }, Run)
  local ok, done, failed = pcall(Run.steps, run, list)
  if not ok then
    if not dry then pcall(state.end_run, state, EXIT.failed, nil) end
    finish(nil)
    if qos.is_interrupt(done) then error(done, 0) end -- a Ctrl-C: what was recorded stays; apply again
    -- the state could not be written (a full disk, a damaged file): stop
    -- here; the step in hand is recorded as started, so the next apply
    -- settles it by reading
    io.stderr:write("quan apply: ", tostring(done), "\n")
    return EXIT.failed
  end
  local counts = {}
  for i = 1, done do counts[list[i].action] = (counts[list[i].action] or 0) + 1 end
  local words = {}
  for _, a in ipairs { "record", "create", "start", "pause", "restart" } do
    if counts[a] then
      local past = { record = "recorded", create = "created", start = "started", pause = "paused", restart = "restarted" }
      words[#words + 1] = format.count(counts[a]) .. " " .. past[a]
    end
  end
  local summary = json.encode { steps = #list, done = done, counts = counts }
  if dry then
    sends.run(decl, plan, s, state, true)
    io.stdout:write("apply --dry-run: nothing was sent, the state was not written (ids of stocks not yet created "
      .. "are placeholders)\n")
    return finish(EXIT.ok)
  end
  if failed then
    state:end_run(EXIT.failed, summary)
    io.stdout:write(("apply: stopped at a failed step (%s: %s): %d of %d steps done%s; apply again to go on (what "
      .. "is done is not done twice)\n"):format(failed.item.key, failed.action, done, #list,
      #words > 0 and (", " .. table.concat(words, ", ")) or ""))
    if #decl.sends > 0 then io.stdout:write("apply: the sends wait for the steps: none was run\n") end
    return finish(EXIT.failed)
  end
  state:end_run(EXIT.ok, summary)
  io.stdout:write(("apply: done: %s; state %s\n"):format(table.concat(words, ", "), s.state_path))
  return finish(sends.run(decl, plan, s, state, false))
end

return M
