-- quan.campaign.render: a plan written for a person (amounts in ¥, times
-- in Beijing time with weekdays, totals) and for tools (JSON).
--
--   render.text(plan, head) -> text
--   render.json(plan, head) -> JSON text (one line)
--   render.problem_lines(item) -> "file:line: stock 'key': ..." lines of its
--       findings and error; render.warning_lines(item) likewise
--
-- head = { campaign =, file =, mchid =, api =, state = path, state_note =,
--          now = epoch, clock = "local" | "sandbox" | "given", offline = bool }
local M = {}

local format = require "quan.format"
local json = require "wechatpay.json"
local plan_ = require "quan.campaign.plan"

local sformat, concat = string.format, table.concat
local mtype = math.type

local width = require("quan.text").width

local function pad(s, w)
  return s .. string.rep(" ", math.max(0, w - width(s)))
end

local function plural(n, one, many)
  return format.count(n) .. " " .. (n == 1 and one or (many or one .. "s"))
end

local SYMBOL = { create = "+", start = "~", pause = "~", restart = "~", record = "*" }

-- what a stock will be after its steps
local AFTER = { start = "running", restart = "running", pause = "paused", create = "unactivated" }

local function symbol(it)
  if it.blocked then return "x" end
  for _, s in ipairs(it.steps) do
    if s == "create" then return "+" end
  end
  for _, s in ipairs(it.steps) do
    if s ~= "record" then return SYMBOL[s] end
  end
  if #it.steps > 0 then return "*" end
  return "="
end

local function prefix(it)
  return it.where .. ": stock '" .. it.key .. "': "
end

-- problem_lines(item) -> list of lines: the item's error and findings
function M.problem_lines(it)
  local out = {}
  if it.error then out[#out + 1] = prefix(it) .. it.error end
  for _, f in ipairs(it.findings) do
    local v = f.value
    local shown = v == nil and "" or (", got " .. (type(v) == "string" and sformat("%q", v) or
      (type(v) == "table" and json.encode(v) or tostring(v))))
    out[#out + 1] = prefix(it) .. f.path .. (f.desc and (" (" .. f.desc .. ")") or "") .. ": " .. tostring(f.rule) .. shown
  end
  return out
end

function M.warning_lines(it)
  local out = {}
  for _, w in ipairs(it.warnings) do out[#out + 1] = prefix(it) .. w.message end
  return out
end

-- what(it) -> the header's words: the steps and what the stock becomes
local function what(it)
  if it.error then return "cannot plan" end
  local words = {}
  for _, s in ipairs(it.steps) do words[#words + 1] = s end
  local now = it.status
  local after = now
  for _, s in ipairs(it.steps) do after = AFTER[s] or after end
  local id = it.stock_id and ("stock " .. it.stock_id) or nil
  if #words == 0 then
    if not it.stock_id and it.offline then return "create" end
    return "nothing to do · " .. (id or "") .. (now and (" " .. now) or "")
  end
  local s = concat(words, ", ")
  if id and now and after ~= now then
    s = s .. " · " .. id .. " " .. now .. " → " .. after
  elseif id then
    s = s .. " · " .. id .. (now and (" " .. now) or "")
  end
  return s
end

local function amounts(s)
  local parts = {}
  if mtype(s.amount) == "integer" then parts[#parts + 1] = "面额 " .. format.yuan(s.amount) end
  if mtype(s.minimum) == "integer" then parts[#parts + 1] = "门槛 " .. format.yuan(s.minimum) end
  if mtype(s.budget) == "integer" then
    local b = "总预算 " .. format.yuan(s.budget)
    if mtype(s.count) == "integer" and mtype(s.amount) == "integer" then
      b = b .. " = " .. format.count(s.count) .. " × " .. format.yuan(s.amount)
      if s.count * s.amount ~= s.budget then b = b .. " = " .. format.yuan(s.count * s.amount) .. " (!)" end
    end
    parts[#parts + 1] = b
  end
  return concat(parts, " · ")
end

local function limits(s)
  local parts = {}
  if mtype(s.per_user) == "integer" then parts[#parts + 1] = "每人限领 " .. s.per_user .. " 张" end
  if mtype(s.by_day) == "integer" then
    local d = "单天上限 " .. format.yuan(s.by_day)
    if mtype(s.amount) == "integer" and s.amount > 0 then d = d .. " = " .. format.count(s.by_day // s.amount) .. " 张/天" end
    parts[#parts + 1] = d
  end
  if s.natural_person then parts[#parts + 1] = "natural-person limit" end
  if s.abuse then parts[#parts + 1] = "API abuse prevention" end
  return concat(parts, " · ")
end

local function window(s, now)
  if not (s.begin and s.stop) then return nil end
  local days = math.floor((s.stop - s.begin) / 86400 + 0.5)
  local state
  if now < s.begin then state = "opens in " .. format.duration(s.begin - now)
  elseif now <= s.stop then state = "open, " .. format.duration(s.stop - now) .. " left"
  else state = "ended " .. format.duration(now - s.stop) .. " ago" end
  return sformat("window %s → %s, %s (%s)", format.beijing(s.begin), format.beijing(s.stop),
    plural(days, "day"), state)
end

local function headline(s)
  local parts = { s.name and tostring(s.name) or "(no stock_name)" }
  if s.type then parts[#parts + 1] = tostring(s.type) end
  if s.no_cash == false then parts[#parts + 1] = "预充值 (no_cash false: the budget is locked at start)"
  elseif s.no_cash == true then parts[#parts + 1] = "免充值 (no_cash true)" end
  return concat(parts, " · ")
end

local function drift_lines(it, out)
  if #it.drift == 0 then return end
  out[#out + 1] = "    ! drift: the declaration differs from the stock, and a favor stock cannot be edited after creation:"
  for _, d in ipairs(it.drift) do
    local label = d.field .. (d.desc and (" (" .. d.desc .. ")") or "")
    local has = d.source == "api" and "the stock has" or "it was created with"
    out[#out + 1] = sformat("        %s: declared %s, %s %s", label, plan_.show(d.field, d.declared), has,
      plan_.show(d.field, d.actual))
  end
  out[#out + 1] = "      options: declare what the stock has (nothing changes); or declare the new stock under a new"
  out[#out + 1] = "      key (apply creates it) and give this key state = \"paused\" so the old one stops sending"
end

local CLOCKS = { sandbox = "the sandbox's business clock", given = "as given", ["local"] = "this machine's clock" }

-- text(plan, head) -> the plan for a person
function M.text(plan, head)
  local out = {}
  local items = plan.stocks
  out[#out + 1] = sformat("campaign %s · %s · %s", head.campaign, head.file, plural(#items, "stock"))
  if head.offline then
    out[#out + 1] = "offline (quan check): the API is not read; recorded stocks are shown as the state last saw them"
  else
    out[#out + 1] = sformat("merchant %s at %s", tostring(head.mchid), tostring(head.api))
  end
  out[#out + 1] = sformat("state %s%s", head.state or "(none)", head.state_note and (" (" .. head.state_note .. ")") or "")
  out[#out + 1] = sformat("now %s, Beijing time (%s)", format.beijing(head.now), CLOCKS[head.clock] or head.clock)
  out[#out + 1] = ""
  local kw = 0
  for _, it in ipairs(items) do kw = math.max(kw, width(it.key)) end
  for _, it in ipairs(items) do
    out[#out + 1] = sformat("%s %s  %s  (%s)", symbol(it), pad(it.key, kw), what(it), it.where)
    local s = it.summary
    local creating = false
    for _, st in ipairs(it.steps) do if st == "create" then creating = true end end
    if not it.stock_id and it.offline and not it.error then creating = true end
    if creating then
      out[#out + 1] = "    " .. headline(s)
      out[#out + 1] = "    " .. amounts(s)
      local l = limits(s)
      if l ~= "" then out[#out + 1] = "    " .. l end
      local w = window(s, head.now)
      if w then out[#out + 1] = "    " .. w end
      if s.usable then out[#out + 1] = "    usable " .. s.usable end
      out[#out + 1] = "    out_request_no " .. tostring(it.out_request_no)
    else
      local a = amounts(s)
      if a ~= "" then out[#out + 1] = "    " .. (s.name and (tostring(s.name) .. " · ") or "") .. a end
      local w = window(s, head.now)
      if w then out[#out + 1] = "    " .. w end
    end
    if it.origin == "found" then
      out[#out + 1] = sformat("    found by reading the merchant's stocks (no record in the state): %s",
        it.match == "exact" and "stock_name, window, amounts, limits and no_cash match"
          or "stock_name matches; the other fields differ (drift below)")
    elseif it.origin == "declared" then
      out[#out + 1] = "    stock_id declared in the file; recorded in the state by apply"
    end
    for _, n in ipairs(it.notes) do out[#out + 1] = "    note: " .. n end
    drift_lines(it, out)
    for _, l in ipairs(M.problem_lines(it)) do out[#out + 1] = "    error: " .. l end
    for _, l in ipairs(M.warning_lines(it)) do out[#out + 1] = "    warning: " .. l end
  end
  for _, o in ipairs(plan.orphans) do
    out[#out + 1] = sformat("? %s  stock %s%s: recorded in the state, no longer declared: left as it is",
      o.key, tostring(o.stock_id), o.status and (" (" .. o.status .. ")") or "")
  end
  for _, n in ipairs(plan.notes or {}) do out[#out + 1] = "note: " .. n end
  out[#out + 1] = ""
  local t = plan.totals
  out[#out + 1] = sformat("campaign: %s · %s · 总预算 %s", plural(t.stocks, "stock"), plural(t.coupons, "coupon"),
    format.yuan(t.budget))
  local counts, order = {}, { "create", "start", "pause", "restart", "record" }
  for _, it in ipairs(items) do
    if not it.blocked then
      for _, st in ipairs(it.steps) do counts[st] = (counts[st] or 0) + 1 end
    end
  end
  local parts = {}
  for _, st in ipairs(order) do
    if counts[st] then
      local p = format.count(counts[st]) .. " to " .. st
      if st == "create" then p = p .. " (" .. format.yuan(t.create_budget) .. ")" end
      parts[#parts + 1] = p
    end
  end
  local unchanged = 0
  for _, it in ipairs(items) do if #it.steps == 0 and not it.blocked then unchanged = unchanged + 1 end end
  local tail = {}
  if unchanged > 0 then tail[#tail + 1] = format.count(unchanged) .. " as declared" end
  local drifted = 0
  for _, it in ipairs(items) do if #it.drift > 0 then drifted = drifted + 1 end end
  if drifted > 0 then tail[#tail + 1] = plural(drifted, "drifted stock") end
  if plan.warnings > 0 then tail[#tail + 1] = plural(plan.warnings, "warning") end
  if plan.problems > 0 then tail[#tail + 1] = plural(plan.problems, "stock") .. " with errors" end
  if #parts == 0 and plan.problems > 0 then -- errors block the steps: nothing can be done until they are fixed
    out[#out + 1] = "plan: " .. concat(tail, " · ")
  elseif #parts == 0 then
    out[#out + 1] = "plan: nothing to do" .. (#tail > 0 and (" · " .. concat(tail, " · ")) or "")
  else
    out[#out + 1] = "plan: " .. concat(parts, ", ") .. (#tail > 0 and (" · " .. concat(tail, " · ")) or "")
  end
  return concat(out, "\n") .. "\n"
end

-- array(t) -> t, or json.empty_array (an empty table is written {}: a list
-- of nothing must still read as a list)
local function array(t)
  if next(t) == nil then return json.empty_array end
  return t
end

local function iso(t)
  return t and require("quan.time").beijing(t) or nil
end

-- json(plan, head) -> the plan for tools: amounts in 分 as the API has them,
-- times in RFC 3339 (+08:00)
function M.json(plan, head)
  local stocks = {}
  for i, it in ipairs(plan.stocks) do
    local s = it.summary
    local drift = {}
    for j, d in ipairs(it.drift) do
      drift[j] = { field = d.field, desc = d.desc, declared = d.declared, actual = d.actual, source = d.source }
    end
    local findings = {}
    for j, f in ipairs(it.findings) do findings[j] = { path = f.path, desc = f.desc, rule = f.rule, value = f.value } end
    stocks[i] = {
      key = it.key, where = it.where, line = it.line, declared_state = it.state,
      stock_id = it.stock_id, status = it.status, origin = it.origin, match = it.match,
      steps = array(it.steps), out_request_no = it.out_request_no, blocked = it.blocked,
      drift = array(drift), findings = array(findings), warnings = array(it.warnings), notes = array(it.notes),
      error = it.error,
      summary = {
        stock_name = s.name, coupon_amount = s.amount, transaction_minimum = s.minimum, max_coupons = s.count,
        max_amount = s.budget, max_amount_by_day = s.by_day, max_coupons_per_user = s.per_user,
        available_begin_time = iso(s.begin), available_end_time = iso(s.stop), usable = s.usable,
      },
    }
  end
  local orphans = {}
  for i, o in ipairs(plan.orphans) do orphans[i] = { key = o.key, stock_id = o.stock_id, status = o.status } end
  return json.encode {
    campaign = head.campaign, file = head.file, merchant = head.mchid, api = head.api,
    state = head.state, offline = head.offline or false, now = iso(head.now), clock = head.clock,
    stocks = array(stocks), orphans = array(orphans), notes = array(plan.notes or {}),
    totals = {
      stocks = plan.totals.stocks, coupons = plan.totals.coupons, max_amount = plan.totals.budget,
      create = plan.totals.create, create_max_amount = plan.totals.create_budget,
    },
    changes = plan.changes, records = plan.records, problems = plan.problems, warnings = plan.warnings,
  }
end

return M
