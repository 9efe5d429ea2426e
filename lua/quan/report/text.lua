-- quan.report.text: a report (quan.report's document) as text for a
-- terminal: ¥ amounts, Beijing dates, columns aligned by display width (a
-- Chinese character takes two columns, as the REPL's printer counts).
--
--   text.render(doc) -> text
--   text.columns(header, rows, align) -> lines of a table
--   text.percent(rate) -> "60.0%"
local M = {}

local format = require "quan.format"
local width = require("quan.text").width
local time = require "quan.time"

local concat, rep, ipairs, type = table.concat, string.rep, ipairs, type

local DASH = "–"

local function yuan(v) return type(v) == "number" and format.yuan(v) or DASH end
local function count(v) return type(v) == "number" and format.count(v) or DASH end

-- percent(rate) -> "60.0%" | "–"
function M.percent(rate)
  if type(rate) ~= "number" then return DASH end
  return ("%.1f%%"):format(rate * 100)
end

-- when(rfc) -> "2027-12-01 10:00 Wed" | "–"
local function when(s)
  local t = s and time.parse(s)
  return t and format.beijing(t) or DASH
end

-- date(day) -> "2027-12-01 Wed"
local function date(day)
  return format.date(time.parse(day .. "T00:00:00+08:00"))
end

-- columns(header, rows, align) -> lines: every cell padded to its column's
-- display width; align[i] "r" right-aligns column i (numbers)
function M.columns(header, rows, align)
  local widths = {}
  for _, row in ipairs({ header, table.unpack(rows) }) do
    for i, cell in ipairs(row) do
      local w = width(cell)
      if not widths[i] or w > widths[i] then widths[i] = w end
    end
  end
  local lines = {}
  for _, row in ipairs({ header, table.unpack(rows) }) do
    local cells = {}
    for i, cell in ipairs(row) do
      local gap = rep(" ", widths[i] - width(cell))
      if align[i] == "r" then cells[i] = gap .. cell
      elseif i == #row then cells[i] = cell
      else cells[i] = cell .. gap end
    end
    lines[#lines + 1] = concat(cells, "  ")
  end
  return lines
end

local CLOCKS = { sandbox = "the sandbox's business clock", ["local"] = "this machine's clock", given = "--now" }

-- marks(doc) -> source id -> "[n]", in the order the sources were read
local function marks(doc)
  local m = {}
  for i, s in ipairs(doc.sources) do m[s.id] = "[" .. i .. "]" end
  return m
end

local function cite(m, source)
  if type(source) == "table" then
    local out = {}
    for _, id in ipairs(source) do out[#out + 1] = m[id] or id end
    return concat(out)
  end
  return source and (m[source] or source) or ""
end

-- run_out(s) -> what the run-out column says
local function run_out(s)
  local r = s.run_out
  if s.ended_at then return "ended " .. when(s.ended_at):sub(1, 10) end
  if not r then return s.status and s.status ~= "running" and s.status or DASH end
  if r.at then return when(r.at) end
  if r.after_end then return "outlasts window" end
  return DASH
end

-- render(doc) -> text
function M.render(doc)
  local out = {}
  local function line(s) out[#out + 1] = s or "" end
  local m = marks(doc)
  local head = { }
  if doc.campaign then head[#head + 1] = "campaign " .. doc.campaign end
  if doc.mchid then head[#head + 1] = "merchant " .. doc.mchid end
  if doc.state then head[#head + 1] = "state " .. doc.state end
  line("report: " .. (#head > 0 and concat(head, " · ") or "stocks " .. #doc.stocks))
  line(("as of %s (Beijing time, %s)"):format(when(doc.now), CLOCKS[doc.clock] or doc.clock))
  line()
  -- the stocks, and the campaign's total
  local rows = {}
  for _, s in ipairs(doc.stocks) do
    rows[#rows + 1] = { s.key, s.stock_id, s.stock_name or DASH, s.status or DASH, yuan(s.face_value), yuan(s.budget),
      count(s.sent.value), count(s.used.value), M.percent(s.redemption_rate), count(s.refunded.value),
      yuan(s.spend and s.spend.net), yuan(s.remaining and s.remaining.budget), run_out(s) }
  end
  local t = doc.totals
  if #doc.stocks > 1 then
    rows[#rows + 1] = { "total", "", "", "", "", yuan(t.budget), count(t.sent.value), count(t.used.value),
      M.percent(t.redemption_rate), count(t.refunded.value), yuan(t.spend.net), yuan(t.remaining.budget), "" }
  end
  for _, l in ipairs(M.columns({ "stock", "stock_id", "name", "status", "面额", "预算", "sent", "used", "rate",
      "refunded", "spend (net)", "budget left", "runs out" }, rows,
      { "l", "l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "l" })) do
    line(l)
  end
  -- per day
  if #t.days > 0 then
    line()
    local drows = {}
    for _, d in ipairs(t.days) do
      drows[#drows + 1] = { date(d.date), count(d.sent), count(d.used), count(d.refunded), yuan(d.budget_left) }
    end
    for _, l in ipairs(M.columns({ "day (Beijing time)", "sent", "used", "refunded", "budget left" }, drows,
        { "l", "r", "r", "r", "r" })) do
      line(l)
    end
  end
  -- merchants
  if #t.merchants > 0 then
    line()
    local mrows = {}
    for i, x in ipairs(t.merchants) do mrows[i] = { x.mchid, count(x.used), yuan(x.amount) } end
    local title = ("merchant (top %d of %d)"):format(#t.merchants, t.merchant_count)
    for _, l in ipairs(M.columns({ title, "used", "coupons ¥" }, mrows, { "l", "r", "r" })) do line(l) end
  end
  -- each stock: its figures with their sources
  for _, s in ipairs(doc.stocks) do
    line()
    line(("stock %s (%s) %s"):format(s.key, s.stock_id, s.stock_name or ""))
    if s.face_value then
      line(("  面额 %s · 门槛 %s · 预算 %s = %s × %s %s"):format(yuan(s.face_value), yuan(s.threshold), yuan(s.budget),
        count(s.max_coupons), yuan(s.face_value), cite(m, s.terms_source)))
    end
    if s.available_begin_time then
      line(("  window %s → %s"):format(when(s.available_begin_time), when(s.available_end_time)))
    end
    local sent = ("  sent %s"):format(count(s.sent.value))
    if s.sent.api then sent = sent .. (" (API distributed_coupons %s)"):format(cite(m, s.sent.source)) end
    if s.sent.journals then
      sent = sent .. ("; journals %s %s"):format(count(s.sent.journals), cite(m, s.sent.journal_sources))
    end
    line(sent)
    if s.sent.difference and s.sent.difference ~= 0 then
      line(("    difference: the API counts %s %s than the journals read (%s)"):format(
        count(math.abs(s.sent.difference)), s.sent.difference > 0 and "more" or "fewer",
        s.sent.difference > 0 and "sends outside them" or "a journal of another stock, or sends refused later"))
    end
    local used = ("  used %s"):format(count(s.used.value))
    if s.used.source then used = used .. (" (%s %s)"):format(s.used.flow and "use-flow" or "store", cite(m, s.used.source)) end
    if s.used.flow and s.used.store then used = used .. ("; store %s"):format(count(s.used.store)) end
    used = used .. "; rate " .. M.percent(s.redemption_rate)
    line(used)
    local d = s.used.differences
    if d then
      if d.only_in_flow.count + d.only_in_store.count + d.mismatched.count == 0 then
        line("    the use-flow file and the store agree, coupon by coupon")
      end
      for _, k in ipairs { { "only_in_flow", "in the use-flow file, not in the store" },
          { "only_in_store", "in the store, not in the use-flow file" },
          { "mismatched", "in both, with other fields" } } do
        local x = d[k[1]]
        if x.count > 0 then
          line(("    difference: %s coupon(s) %s: %s%s"):format(count(x.count), k[2], concat(x.coupons, ", "),
            x.count > #x.coupons and ", …" or ""))
        end
      end
    end
    if s.refunded.value then
      line(("  refunded %s (%s of coupons, orders %s) %s"):format(count(s.refunded.value), yuan(s.refunded.amount),
        yuan(s.refunded.orders), cite(m, s.refunded.source)))
    elseif s.flows and s.flows.note then
      line("  refunded: not known yet (" .. s.flows.note .. ")")
    end
    if s.spend then
      local orders = s.orders and (" · orders " .. yuan(s.orders.value)) or ""
      if s.spend.refunded then
        line(("  spend %s of coupons used − %s refunded = %s net%s"):format(yuan(s.spend.used), yuan(s.spend.refunded),
          yuan(s.spend.net), orders))
      else
        line(("  spend %s of coupons used (refunds not known yet)%s"):format(yuan(s.spend.used), orders))
      end
    end
    if s.remaining then
      line(("  budget left %s (%s coupons) %s"):format(yuan(s.remaining.budget), count(s.remaining.coupons),
        cite(m, s.remaining.source)))
    end
    if s.pace and not s.ended_at then
      line(("  pace %s coupons in the last 24 hours %s"):format(count(s.pace.per_day), cite(m, s.pace.source)))
    end
    if s.run_out then
      if s.run_out.at then line("  the budget runs out " .. when(s.run_out.at) .. (s.run_out.note and (": " .. s.run_out.note) or ""))
      elseif s.run_out.after_end then
        line(("  %s: %s coupons left at its end"):format(s.run_out.note, count(s.run_out.left_at_end)))
      elseif s.run_out.note then line("  runs out: " .. s.run_out.note) end
    end
    if s.flows and s.flows.note and s.refunded.value then line("  " .. s.flows.note) end
    for _, n in ipairs(s.notes) do line("  note: " .. n) end
  end
  -- sources
  line()
  line("sources (read at, this machine's clock)")
  for i, src in ipairs(doc.sources) do
    local what = src.what or src.path or src.id
    if src.kind == "journal" then what = ("journal %s (batch %s)"):format(src.path, src.batch_id)
    elseif src.kind == "store" then what = ("store %s (%s events)"):format(src.path, count(src.events))
    elseif src.kind == "state" then what = "state " .. src.path
    elseif src.kind == "use-flow" or src.kind == "refund-flow" then
      what = ("%s%s"):format(what, src.sha1 and (", SHA1 " .. src.sha1) or (src.note and (", " .. src.note) or ""))
    end
    line(("  [%d] %s, read %s"):format(i, what, when(src.read_at)))
  end
  for _, n in ipairs(doc.notes) do line("note: " .. n) end
  for _, p in ipairs(doc.problems) do line("problem: " .. p) end
  return concat(out, "\n") .. "\n"
end

return M
