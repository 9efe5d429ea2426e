-- quan.report.html: a report (quan.report's document) as one self-contained
-- HTML page: the styles inline, the charts inline SVG, no script, no font,
-- no image and no address outside the page (it opens offline, and prints).
-- Every chart and table says which source its figures come from and when
-- that was read (docs/report.md, "The page").
--
--   html.page(doc) -> the page's text
--   html.escape(s) -> s with & < > " ' as entities
--
-- The charts carry their numbers twice: as text a person reads, and as
-- data-* attributes of each bar and point (data-date, data-series,
-- data-value) that a test or a tool reads from the DOM.
local M = {}

local format = require "quan.format"
local time = require "quan.time"
local percent = require("quan.report.text").percent

local concat, ipairs, type, floor, max = table.concat, ipairs, type, math.floor, math.max
local sformat = string.format

local ENTITIES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

-- escape(s) -> s with & < > " ' as entities (text and attribute values)
function M.escape(s)
  return (tostring(s):gsub("[&<>\"']", ENTITIES))
end
local esc = M.escape

local DASH = "–"
local function yuan(v) return type(v) == "number" and format.yuan(v) or DASH end
local function count(v) return type(v) == "number" and format.count(v) or DASH end
local function when(s)
  local t = s and time.parse(s)
  return t and format.beijing(t) or DASH
end
local function short_date(day) return day:sub(6) end -- "12-01"

local COLORS = { sent = "#4e79a7", used = "#59a14f", refunded = "#e15759", budget = "#f28e2b", grid = "#d9d9d9",
  projection = "#9c755f" }
local SERIES_NAMES = { sent = "sent", used = "used", refunded = "refunded" }
local LINE_COLORS = { "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac" }

-- nice_max(v) -> a round number at or above v, and its tick step (1, 2 or
-- 5 times a power of ten; 4 or 5 ticks)
local function nice_max(v)
  if v <= 0 then return 1, 1 end
  local raw = v / 4
  local magnitude = 10 ^ floor(math.log(raw, 10))
  local step
  for _, m in ipairs { 1, 2, 5, 10 } do
    step = m * magnitude
    if step >= raw then break end
  end
  step = max(1, floor(step + 0.5))
  local top = math.ceil(v / step) * step
  return top, step
end

-- sources_of(doc) -> id -> {n = "[n]", source}
local function index_sources(doc)
  local by_id = {}
  for i, s in ipairs(doc.sources) do by_id[s.id] = { n = i, source = s } end
  return by_id
end

-- cite(index, source) -> "[2][3]" linking to the sources list (fragments only)
local function cite(index, source)
  if source == nil then return "" end
  local ids = type(source) == "table" and source or { source }
  local out = {}
  for _, id in ipairs(ids) do
    local s = index[id]
    if s then out[#out + 1] = sformat('<a class="cite" href="#source-%d">[%d]</a>', s.n, s.n) end
  end
  return concat(out)
end

-- short_name(s) -> a few words naming a source
local function short_name(s)
  local base = s.path and s.path:match("([^/]*)$")
  if s.kind == "journal" then return "journal " .. base end
  if s.kind == "store" then return "notifications " .. base end
  if s.kind == "state" then return "state " .. base end
  if s.kind == "api" then return "API stock " .. tostring(s.stock_id) end
  return s.kind .. " " .. tostring(s.stock_id)
end

-- caption(index, ids) -> "Sources: [n] what (read T), ..." for a figure
-- (the list of sources at the end says more of each)
local function caption(index, ids)
  local parts, seen = {}, {}
  table.sort(ids, function(a, b) return (index[a] and index[a].n or 0) < (index[b] and index[b].n or 0) end)
  for _, id in ipairs(ids) do
    local s = index[id]
    if s and not seen[id] then
      seen[id] = true
      parts[#parts + 1] = sformat('<span class="source" data-source="%s"><a class="ref" href="#source-%d">[%d]</a> %s '
        .. '(read %s)</span>', esc(id), s.n, s.n, esc(short_name(s.source)), esc(when(s.source.read_at)))
    end
  end
  if #parts == 0 then return "Sources: none read." end
  return "Sources: " .. concat(parts, ", ") .. "."
end

-- source_name(s) -> a short description of a source
function M.source_name(s)
  if s.kind == "journal" then return sformat("journal %s (batch %s)", s.path, s.batch_id) end
  if s.kind == "store" then return sformat("notification store %s (%s events)", s.path, count(s.events)) end
  if s.kind == "state" then return "campaign state " .. s.path end
  if s.kind == "api" then return "the API: " .. (s.what or s.id) end
  if s.kind == "use-flow" or s.kind == "refund-flow" then
    return sformat("the API's %s file of stock %s%s", s.kind, s.stock_id,
      s.sha1 and (", SHA1 " .. s.sha1) or (s.note and (" (" .. s.note .. ")") or ""))
  end
  return s.id
end

-- flatten(list...) -> one array of the source ids given (strings or arrays)
local function ids_of(...)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "string" then out[#out + 1] = v
    elseif type(v) == "table" then for _, x in ipairs(v) do out[#out + 1] = x end end
  end
  return out
end

-- ---- charts -----------------------------------------------------------------

local W, H = 400, 220              -- the charts' viewBox: about a phone's width, so 11px text reads as 11px
local LEFT, RIGHT, TOP, BOTTOM = 46, 8, 16, 34

-- axis(out, top, step, to_y, format_value): horizontal grid lines and
-- their labels
local function axis(out, top, step, y_of, label)
  local v = 0
  while v <= top do
    local y = y_of(v)
    out[#out + 1] = sformat('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="0.5"/>', LEFT, y,
      W - RIGHT, y, COLORS.grid)
    out[#out + 1] = sformat('<text x="%d" y="%.1f" class="tick" text-anchor="end">%s</text>', LEFT - 3, y + 3,
      esc(label(v)))
    v = v + step
  end
end

-- legend(out, names, y) -> colour keys in a row
local function legend(out, names, colors, y)
  local x = LEFT
  for i, name in ipairs(names) do
    out[#out + 1] = sformat('<rect x="%d" y="%d" width="8" height="8" fill="%s"/>', x, y - 7, colors[i])
    out[#out + 1] = sformat('<text x="%d" y="%d" class="tick">%s</text>', x + 11, y, esc(name))
    x = x + 14 + 7 * #name
  end
end

-- daily(days, label) -> an SVG of the days' sends, uses and refunds,
-- grouped bars per day
function M.daily_chart(days, title)
  local out = {}
  local series = { "sent", "used", "refunded" }
  local top = 0
  for _, d in ipairs(days) do top = max(top, d.sent, d.used, d.refunded) end
  local step
  top, step = nice_max(top)
  local plot_h = H - TOP - BOTTOM
  local function y_of(v) return TOP + plot_h * (1 - v / top) end
  out[#out + 1] = sformat('<svg viewBox="0 0 %d %d" role="img" aria-label="%s">', W, H, esc(title))
  axis(out, top, step, y_of, format.count)
  local n = #days
  local slot = (W - LEFT - RIGHT) / max(n, 1)
  local bar = math.min(14, slot / 3.6)
  local label_every = math.ceil(n / 10)
  for i, d in ipairs(days) do
    local x0 = LEFT + slot * (i - 1) + (slot - bar * 3) / 2
    for k, name in ipairs(series) do
      local v = d[name]
      local y = y_of(v)
      local x = x0 + bar * (k - 1)
      out[#out + 1] = sformat('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" data-date="%s" '
        .. 'data-series="%s" data-value="%d"><title>%s: %s %s</title></rect>', x, y, bar * 0.9, TOP + plot_h - y,
        COLORS[name], d.date, name, v, d.date, SERIES_NAMES[name], format.count(v))
      if v > 0 and n <= 16 then
        out[#out + 1] = sformat('<text x="%.1f" y="%.1f" class="value" text-anchor="middle">%s</text>',
          x + bar * 0.45, y - 2, format.count(v))
      end
    end
    if (i - 1) % label_every == 0 then
      out[#out + 1] = sformat('<text x="%.1f" y="%d" class="tick" text-anchor="middle">%s</text>',
        LEFT + slot * (i - 0.5), H - BOTTOM + 11, short_date(d.date))
    end
  end
  legend(out, { "sent", "used", "refunded" }, { COLORS.sent, COLORS.used, COLORS.refunded }, H - 4)
  out[#out + 1] = "</svg>"
  return concat(out, "\n")
end

-- funnel(rows) -> an SVG of sent → used → kept (used less refunded), one
-- group of bars per row ({label, sent, used, refunded}), widths relative
-- to the row's sent
function M.funnel_chart(rows)
  local out = {}
  local row_h, gap = 16, 10
  local h = TOP + #rows * (3 * row_h + gap) + 4
  out[#out + 1] = sformat('<svg viewBox="0 0 %d %d" role="img" aria-label="sent, used, kept">', W, h)
  local label_w = 110
  local span = W - label_w - RIGHT - 60
  local y = TOP
  for _, r in ipairs(rows) do
    local steps = {
      { "sent", r.sent, COLORS.sent },
      { "used", r.used, COLORS.used },
      { "kept", r.used and r.refunded and r.used - r.refunded or nil, "#8cd17d" },
    }
    out[#out + 1] = sformat('<text x="0" y="%.1f" class="label">%s</text>', y + row_h * 1.6, esc(r.label))
    for k, s in ipairs(steps) do
      local v = s[2]
      local width = (r.sent and r.sent > 0 and v) and span * v / r.sent or 0
      local yy = y + (k - 1) * row_h
      out[#out + 1] = sformat('<rect x="%d" y="%.1f" width="%.1f" height="%d" fill="%s" data-stock="%s" '
        .. 'data-series="%s" data-value="%s"><title>%s: %s</title></rect>', label_w, yy, width, row_h - 3, s[3],
        esc(r.stock or "total"), s[1], v and tostring(v) or "", s[1], v and format.count(v) or DASH)
      local share = (k > 1 and v and r.sent and r.sent > 0) and (" (" .. percent(v / r.sent) .. ")") or ""
      out[#out + 1] = sformat('<text x="%.1f" y="%.1f" class="value">%s %s%s</text>', label_w + width + 3,
        yy + row_h - 6, s[1], v and format.count(v) or (k == 3 and "(refunds not known yet)" or DASH), share)
    end
    y = y + 3 * row_h + gap
  end
  out[#out + 1] = "</svg>"
  return concat(out, "\n")
end

-- burndown(lines, until_day) -> an SVG of the budget left after each day:
-- lines = {{label, stock, budget, points = {{date, left}}, projection =
-- {date, left} | nil}}
function M.burndown_chart(lines)
  local out = {}
  local top, first, last = 0, nil, nil
  for _, l in ipairs(lines) do
    top = max(top, l.budget or 0)
    for _, p in ipairs(l.points) do
      if not first or p.date < first then first = p.date end
      if not last or p.date > last then last = p.date end
    end
    if l.projection and (not last or l.projection.date > last) then last = l.projection.date end
  end
  local step
  top, step = nice_max(top)
  local t0 = first and time.parse(first .. "T00:00:00+08:00") or 0
  local t1 = last and time.parse(last .. "T00:00:00+08:00") or t0
  local days = max(1, (t1 - t0) // 86400)
  local plot_h = H - TOP - BOTTOM
  local function x_of(date) return LEFT + (W - LEFT - RIGHT - 40) * ((time.parse(date .. "T00:00:00+08:00") - t0)
    // 86400) / days end
  local function y_of(v) return TOP + plot_h * (1 - v / top) end
  out[#out + 1] = sformat('<svg viewBox="0 0 %d %d" role="img" aria-label="budget left">', W, H)
  axis(out, top, step, y_of, function(v) return "¥" .. format.count(v // 100) end)
  for i, l in ipairs(lines) do
    local color = LINE_COLORS[(i - 1) % #LINE_COLORS + 1]
    local pts = {}
    for _, p in ipairs(l.points) do pts[#pts + 1] = sformat("%.1f,%.1f", x_of(p.date), y_of(p.left)) end
    if #pts > 0 then
      out[#out + 1] = sformat('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>', color,
        concat(pts, " "))
    end
    for _, p in ipairs(l.points) do
      out[#out + 1] = sformat('<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s" data-stock="%s" data-date="%s" '
        .. 'data-series="budget_left" data-value="%d"><title>%s %s: %s left</title></circle>', x_of(p.date),
        y_of(p.left), color, esc(l.stock or "total"), p.date, p.left, esc(l.label), p.date, format.yuan(p.left))
    end
    local final = l.points[#l.points]
    if l.projection and final then
      out[#out + 1] = sformat('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5" '
        .. 'stroke-dasharray="4 3" data-stock="%s" data-series="projection" data-date="%s"/>', x_of(final.date),
        y_of(final.left), x_of(l.projection.date), y_of(l.projection.left), color, esc(l.stock or "total"),
        l.projection.date)
    end
    if final then
      out[#out + 1] = sformat('<text x="%.1f" y="%.1f" class="value">%s</text>', x_of(final.date) + 4,
        y_of(final.left) - 3, format.yuan(final.left))
    end
  end
  if first then
    out[#out + 1] = sformat('<text x="%d" y="%d" class="tick">%s</text>', LEFT, H - BOTTOM + 11, short_date(first))
    if last ~= first then
      out[#out + 1] = sformat('<text x="%.1f" y="%d" class="tick" text-anchor="middle">%s</text>', x_of(last),
        H - BOTTOM + 11, short_date(last))
    end
  end
  local names, colors = {}, {}
  for i, l in ipairs(lines) do
    names[i], colors[i] = l.label, LINE_COLORS[(i - 1) % #LINE_COLORS + 1]
  end
  legend(out, names, colors, H - 4)
  out[#out + 1] = "</svg>"
  return concat(out, "\n")
end

-- ---- the page ---------------------------------------------------------------

local STYLE = [[
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", "PingFang SC", sans-serif;
  margin: 0 auto; max-width: 60rem; padding: 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; }
.meta, figcaption, .note { color: #555; font-size: .85rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr)); gap: .6rem; margin: 1rem 0; }
.card { border: 1px solid #ddd; border-radius: .4rem; padding: .5rem .7rem; }
.card .v { font-size: 1.3rem; font-weight: 600; }
.card .k { font-size: .8rem; color: #555; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; width: 100%; }
th, td { padding: .25rem .45rem; border-bottom: 1px solid #eee; white-space: nowrap; }
th { text-align: left; background: #f6f6f6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: .8rem 0 1.2rem; break-inside: avoid; }
svg { width: 100%; max-width: 40rem; height: auto; display: block; }
svg text { font-family: inherit; }
svg .tick { font-size: 11px; fill: #555; }
svg .value { font-size: 11px; fill: #222; }
svg .label { font-size: 12px; fill: #222; }
a.cite { color: #4e79a7; text-decoration: none; font-size: .8em; vertical-align: super; }
a.ref { color: #4e79a7; text-decoration: none; }
.problem { color: #b00020; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr)); gap: 0 1.2rem; }
ol.sources li { font-size: .85rem; word-break: break-all; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  a.cite, a.ref { color: #000; }
  h2 { break-after: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
]]

local CLOCKS = { sandbox = "the sandbox's business clock", ["local"] = "this machine's clock", given = "the time given (--now)" }

-- page(doc) -> the page's text
function M.page(doc)
  local index = index_sources(doc)
  local out = {}
  local function w(...) for i = 1, select("#", ...) do out[#out + 1] = select(i, ...) end end
  local title = doc.campaign and ("campaign " .. doc.campaign) or ("stocks " .. #doc.stocks)
  w('<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n',
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
    "<title>quan report · ", esc(title), "</title>\n<style>", STYLE, "</style>\n</head>\n<body>\n")
  w("<header><h1>", esc(title), "</h1>\n<p class=\"meta\">as of <strong>", esc(when(doc.now)), "</strong> Beijing time (",
    esc(CLOCKS[doc.clock] or doc.clock), ")")
  if doc.mchid then w(" · merchant ", esc(doc.mchid)) end
  if doc.state then w(" · state ", esc(doc.state)) end
  w(" · made ", esc(when(doc.generated_at)), " by quan report</p></header>\n")
  -- the campaign at a glance
  local t = doc.totals
  local all_stock_sources, used_sources = {}, {}
  for _, s in ipairs(doc.stocks) do
    for _, id in ipairs(ids_of(s.sent.source, s.used.source, s.refunded.source, s.remaining and s.remaining.source)) do
      all_stock_sources[#all_stock_sources + 1] = id
    end
    for _, id in ipairs(ids_of(s.used.source)) do used_sources[#used_sources + 1] = id end
  end
  w('<section class="cards" id="summary">\n')
  for _, c in ipairs {
    { "sent", count(t.sent.value), "data-figure=\"sent\" data-value=\"" .. tostring(t.sent.value or "") .. "\"" },
    { "used", count(t.used.value), "data-figure=\"used\" data-value=\"" .. tostring(t.used.value or "") .. "\"" },
    { "redemption rate", percent(t.redemption_rate), "data-figure=\"rate\"" },
    { "refunded", count(t.refunded.value), "data-figure=\"refunded\" data-value=\"" .. tostring(t.refunded.value or "") .. "\"" },
    { "spend (net)", yuan(t.spend.net), "data-figure=\"spend\" data-value=\"" .. tostring(t.spend.net or "") .. "\"" },
    { "budget left", yuan(t.remaining.budget), "data-figure=\"budget_left\" data-value=\"" .. tostring(t.remaining.budget or "") .. "\"" },
  } do
    w('<div class="card" ', c[3], '><div class="v">', esc(c[2]), '</div><div class="k">', esc(c[1]), "</div></div>\n")
  end
  w("</section>\n")
  -- the stocks
  w('<h2 id="stocks">Stocks</h2>\n<div class="scroll"><table>\n<thead><tr><th>stock</th><th>stock_id</th><th>name</th>',
    "<th>status</th><th>面额</th><th>预算</th><th>sent</th><th>used</th><th>rate</th><th>refunded</th>",
    "<th>spend (net)</th><th>budget left</th><th>runs out</th></tr></thead>\n<tbody>\n")
  for _, s in ipairs(doc.stocks) do
    local run = DASH
    if s.ended_at then run = "ended " .. when(s.ended_at):sub(1, 10)
    elseif s.run_out and s.run_out.at then run = when(s.run_out.at)
    elseif s.run_out and s.run_out.after_end then run = "outlasts the window"
    elseif s.run_out and s.run_out.note then run = s.run_out.note end
    w('<tr data-stock="', esc(s.stock_id), '"><td>', esc(s.key), "</td><td>", esc(s.stock_id), "</td><td>",
      esc(s.stock_name or DASH), "</td><td>", esc(s.status or DASH), '</td><td class="n">', yuan(s.face_value),
      cite(index, s.terms_source), '</td><td class="n">', yuan(s.budget), '</td><td class="n" data-figure="sent">',
      count(s.sent.value), cite(index, s.sent.source), '</td><td class="n" data-figure="used">', count(s.used.value),
      cite(index, s.used.source), '</td><td class="n">', percent(s.redemption_rate),
      '</td><td class="n" data-figure="refunded">', count(s.refunded.value), cite(index, s.refunded.source),
      '</td><td class="n">', yuan(s.spend and s.spend.net), '</td><td class="n">',
      yuan(s.remaining and s.remaining.budget), cite(index, s.remaining and s.remaining.source), "</td><td>",
      esc(run), "</td></tr>\n")
  end
  if #doc.stocks > 1 then
    w('<tr data-stock="total"><th>total</th><td></td><td></td><td></td><td></td><td class="n">', yuan(t.budget),
      '</td><td class="n">', count(t.sent.value), '</td><td class="n">', count(t.used.value), '</td><td class="n">',
      percent(t.redemption_rate), '</td><td class="n">', count(t.refunded.value), '</td><td class="n">',
      yuan(t.spend.net), '</td><td class="n">', yuan(t.remaining.budget), "</td><td></td></tr>\n")
  end
  w("</tbody></table></div>\n")
  w('<p class="note">Amounts are summed in 分 and shown in ¥; days are Beijing-time days of the API\'s own times ',
    "(a send's answer, a coupon's consume time, a refund's time). Sent: the API's distributed_coupons; used: ",
    "the use-flow file once a stock has ended, else the notifications stored; refunded: the refund-flow file.</p>\n")
  -- daily charts
  w('<h2 id="daily">Sends and uses per day</h2>\n<div class="grid2">\n')
  if #doc.stocks > 1 and #t.days > 0 then
    w('<figure data-chart="daily" data-stock="total">\n', M.daily_chart(t.days, "the campaign, per day"),
      "\n<figcaption><strong>The campaign</strong>: coupons sent, used and refunded per day. ",
      caption(index, all_stock_sources), "</figcaption></figure>\n")
  end
  for _, s in ipairs(doc.stocks) do
    w('<figure data-chart="daily" data-stock="', esc(s.stock_id), '">\n')
    if #s.days > 0 then
      w(M.daily_chart(s.days, s.key .. ", per day"))
    else
      w('<p class="note">no send, use or refund with a day yet</p>')
    end
    w("\n<figcaption><strong>", esc(s.key), "</strong> (", esc(s.stock_id), ") ", esc(s.stock_name or ""),
      ": per day. ", caption(index, ids_of(s.sent.journal_sources, s.used.source, s.refunded.source)))
    if s.sent.untimed and s.sent.untimed > 0 then
      w(" ", count(s.sent.untimed), " sent rows have no time of the API's answer and are under no day.")
    end
    w("</figcaption></figure>\n")
  end
  w("</div>\n")
  -- the funnel
  local rows = {}
  for _, s in ipairs(doc.stocks) do
    rows[#rows + 1] = { label = s.key, stock = s.stock_id, sent = s.sent.value, used = s.used.value,
      refunded = s.refunded.value }
  end
  if #doc.stocks > 1 then
    -- the campaign's kept only when every stock's refunds are known
    local known = true
    for _, s in ipairs(doc.stocks) do if s.refunded.value == nil then known = false end end
    rows[#rows + 1] = { label = "total", sent = t.sent.value, used = t.used.value,
      refunded = known and t.refunded.value or nil }
  end
  w('<h2 id="funnel">Sent → used → kept</h2>\n<figure data-chart="funnel">\n', M.funnel_chart(rows),
    "\n<figcaption>Coupons sent, used, and used and not refunded (kept), as shares of those sent. ",
    caption(index, all_stock_sources), "</figcaption></figure>\n")
  -- the burn-down
  local lines = {}
  for _, s in ipairs(doc.stocks) do
    local points = {}
    for _, d in ipairs(s.days) do points[#points + 1] = { date = d.date, left = d.budget_left } end
    if s.budget and #points > 0 then
      -- the budget whole at the start of the first day (the end of the one before)
      local before = time.beijing(time.parse(points[1].date .. "T00:00:00+08:00") - 86400, "%Y-%m-%d")
      table.insert(points, 1, { date = before, left = s.budget })
      local projection
      if s.run_out and s.run_out.at then projection = { date = when(s.run_out.at):sub(1, 10), left = 0 } end
      lines[#lines + 1] = { label = s.key, stock = s.stock_id, budget = s.budget, points = points,
        projection = projection }
    end
  end
  w('<h2 id="burndown">Budget left</h2>\n<figure data-chart="burndown">\n')
  if #lines > 0 then
    w(M.burndown_chart(lines))
  else
    w('<p class="note">no send with a day yet</p>')
  end
  w("\n<figcaption>The budget left after each day's sends (budget − coupons sent × face value), per stock; ",
    "a dashed line runs to when the budget runs out at the pace of the last 24 hours. ",
    caption(index, all_stock_sources), "</figcaption></figure>\n")
  -- merchants
  w('<h2 id="merchants">Merchants by redemptions</h2>\n')
  if #t.merchants > 0 then
    w('<div class="scroll"><table><thead><tr><th>merchant (消耗商户号)</th><th>used</th><th>coupons ¥</th></tr></thead><tbody>\n')
    for _, m in ipairs(t.merchants) do
      w('<tr data-mchid="', esc(m.mchid), '"><td>', esc(m.mchid), '</td><td class="n">', count(m.used),
        '</td><td class="n">', yuan(m.amount), "</td></tr>\n")
    end
    w("</tbody></table></div>\n<p class=\"note\">", sformat("the top %d of %d merchants. ", #t.merchants,
      t.merchant_count or #t.merchants), caption(index, used_sources), "</p>\n")
  else
    w('<p class="note">no redemption yet</p>\n')
  end
  -- each stock's details
  w('<h2 id="details">Per stock</h2>\n')
  for _, s in ipairs(doc.stocks) do
    w('<h3 id="stock-', esc(s.stock_id), '">', esc(s.key), " · ", esc(s.stock_id), " · ", esc(s.stock_name or ""),
      "</h3>\n<ul>\n")
    if s.face_value then
      w("<li>面额 ", yuan(s.face_value), " · 门槛 ", yuan(s.threshold), " · 预算 ", yuan(s.budget), " = ",
        count(s.max_coupons), " × ", yuan(s.face_value), cite(index, s.terms_source), "</li>\n")
    end
    if s.available_begin_time then
      w("<li>window ", esc(when(s.available_begin_time)), " → ", esc(when(s.available_end_time)), "</li>\n")
    end
    w("<li>sent ", count(s.sent.value), cite(index, s.sent.source))
    if s.sent.journals then w("; journals ", count(s.sent.journals), cite(index, s.sent.journal_sources)) end
    if s.sent.difference and s.sent.difference ~= 0 then
      w(sformat(' <span class="problem">(the API counts %s %s than the journals)</span>',
        count(math.abs(s.sent.difference)), s.sent.difference > 0 and "more" or "fewer"))
    end
    w("</li>\n<li>used ", count(s.used.value), cite(index, s.used.source))
    if s.used.flow and s.used.store then w("; store ", count(s.used.store)) end
    w(" · rate ", percent(s.redemption_rate), "</li>\n")
    local d = s.used.differences
    if d then
      local total = d.only_in_flow.count + d.only_in_store.count + d.mismatched.count
      if total == 0 then
        w("<li>the use-flow file and the stored notifications agree, coupon by coupon</li>\n")
      end
      for _, k in ipairs { { "only_in_flow", "in the use-flow file, not in the store" },
          { "only_in_store", "in the store, not in the use-flow file" }, { "mismatched", "in both, with other fields" } } do
        local x = d[k[1]]
        if x.count > 0 then
          w('<li class="problem" data-difference="', k[1], '">', count(x.count), " coupon(s) ", k[2], ": ",
            esc(concat(x.coupons, ", ")), x.count > #x.coupons and ", …" or "", "</li>\n")
        end
      end
    end
    if s.refunded.value then
      w("<li>refunded ", count(s.refunded.value), " (", yuan(s.refunded.amount), " of coupons, orders ",
        yuan(s.refunded.orders), ")", cite(index, s.refunded.source), "</li>\n")
    elseif s.flows and s.flows.note then
      w("<li>refunded: not known yet (", esc(s.flows.note), ")</li>\n")
    end
    if s.spend then
      w("<li>spend ", yuan(s.spend.used), " of coupons used")
      if s.spend.refunded then w(" − ", yuan(s.spend.refunded), " refunded") end
      w(" = ", yuan(s.spend.net), s.orders and (" · orders " .. yuan(s.orders.value)) or "", "</li>\n")
    end
    if s.remaining then
      w("<li>budget left ", yuan(s.remaining.budget), " (", count(s.remaining.coupons), " coupons)",
        cite(index, s.remaining.source), "</li>\n")
    end
    if s.run_out then
      if s.run_out.at then w("<li>the budget runs out ", esc(when(s.run_out.at)), " at the pace of the last 24 hours (",
        count(s.pace and s.pace.per_day), " coupons)</li>\n")
      elseif s.run_out.after_end then
        w("<li>", esc(s.run_out.note), ": ", count(s.run_out.left_at_end), " coupons left at its end</li>\n")
      elseif s.run_out.note then w("<li>runs out: ", esc(s.run_out.note), "</li>\n") end
    end
    for _, n in ipairs(s.notes) do w('<li class="note">', esc(n), "</li>\n") end
    w("</ul>\n")
  end
  -- sources
  w('<h2 id="sources">Sources</h2>\n<ol class="sources">\n')
  for i, s in ipairs(doc.sources) do
    w('<li id="source-', i, '">', esc(M.source_name(s)), ", read ", esc(when(s.read_at)), " (this machine's clock)</li>\n")
  end
  w("</ol>\n")
  for _, n in ipairs(doc.notes) do w('<p class="note">note: ', esc(n), "</p>\n") end
  for _, p in ipairs(doc.problems) do w('<p class="problem">problem: ', esc(p), "</p>\n") end
  w("</body>\n</html>\n")
  return concat(out)
end

return M
