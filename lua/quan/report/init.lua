-- quan.report: `quan report`, how a campaign is doing: coupons sent, used
-- and refunded, the budget spent and left, per stock, per day and per
-- merchant, as a table, JSON or a page with charts (docs/report.md).
--
--   quan report [options] CAMPAIGN.lua | STATE | STOCK_ID...
--
--   report.main(opts, arguments) -> exit status (quan.cli's entry)
--   report.build(target, opts)   -> document | nil, message, exit status
--       the report as --json prints it (a table), from a resolved target
--       (report.target); problems with a source are in document.problems
--   report.target(arguments, opts) -> target | nil, message, exit status
--   report.EXIT = {ok = 0, failed = 1, usage = 2}
--
-- What it reads, all of it read-only: the campaign's state (its stocks, the
-- sends' journals, the receiver's store), the journals, the store, and the
-- API (each stock, and a stock's use-flow and refund-flow files once it has
-- ended). quan.report.sources reads, quan.report.figures counts,
-- quan.report.text and quan.report.html write.
local M = {}

local sources = require "quan.report.sources"
local figures = require "quan.report.figures"
local time = require "quan.time"
local qos = require "quan.os"
local json = require "wechatpay.json"

local type, ipairs, pairs, tostring = type, ipairs, pairs, tostring

M.EXIT = { ok = 0, failed = 1, usage = 2 }
M.FORMAT = "quan report"
M.VERSION = 1

local function rfc(t) return t and time.beijing(t) or nil end

-- is_sqlite(path) -> true when the file starts as an SQLite database does
local function is_sqlite(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local head = f:read(16)
  f:close()
  return head == "SQLite format 3\0"
end

-- split_list(text) -> the comma-separated items of text, blanks dropped
local function split_list(text)
  local list = {}
  for item in tostring(text):gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then list[#list + 1] = item end
  end
  return list
end

-- target(arguments, o) -> {kind = "campaign" | "state" | "stocks", decl,
-- state_path, stock_ids} | nil, message, exit status
function M.target(arguments, o)
  local first = arguments[1]
  if not first then
    return nil, "give a campaign file, its state, or stock ids (quan report --help)", M.EXIT.usage
  end
  if #arguments == 1 and first:find("[./]") and not qos.stat(first) then -- a path to a file that is not there
    return nil, ("campaign file %s cannot be read (no such file)"):format(first), M.EXIT.usage
  end
  if #arguments == 1 and qos.stat(first) then
    if is_sqlite(first) then
      return { kind = "state", state_path = o.state or first }
    end
    local decl, failed = require("quan.campaign.command").load(first, "quan report")
    if not decl then return nil, nil, failed end
    return { kind = "campaign", decl = decl, state_path = o.state or decl.path .. ".state" }
  end
  local ids = {}
  for _, word in ipairs(arguments) do
    for _, id in ipairs(split_list(word)) do
      if not id:find("^%d+$") or #id > 20 then
        return nil, ("%s is neither a campaign file, a campaign's state nor a stock id (digits)"):format(id),
          M.EXIT.usage
      end
      ids[#ids + 1] = id
    end
  end
  if #ids == 0 then return nil, "no stock id given", M.EXIT.usage end
  if o.state then return nil, "--state goes with a campaign file, not with stock ids", M.EXIT.usage end
  return { kind = "stocks", stock_ids = ids }
end

-- Report: the document being built. Fields: doc (what --json prints),
-- problems (strings), sources (by id), now
local Report = {}
Report.__index = Report

local function new_report(now, clock)
  local doc = { format = M.FORMAT, version = M.VERSION, now = rfc(now), clock = clock,
    generated_at = rfc(qos.time()), sources = {}, stocks = {}, problems = {}, notes = {} }
  return setmetatable({ doc = doc, now = now, by_id = {} }, Report)
end

-- report:problem(message): a source that could not be read (exit 1)
function Report:problem(message)
  self.doc.problems[#self.doc.problems + 1] = message
end

-- report:source(id, fields) -> id: a source read (or tried), with when
function Report:source(id, fields)
  if self.by_id[id] then return id end
  fields.id = id
  if type(fields.read_at) == "number" then fields.read_at = rfc(fields.read_at) end
  self.by_id[id] = fields
  self.doc.sources[#self.doc.sources + 1] = fields
  return id
end

-- resolve(base, path) -> path, relative ones taken from base's folder
local function resolve(base, path)
  if path:sub(1, 1) == "/" then return path end
  local dir = base:match("^(.*)/[^/]*$")
  return dir and dir .. "/" .. path or path
end

local function no_state(path)
  return ("no state %s: the campaign has not been applied (quan apply), or give --state"):format(path)
end

-- read_state(target, expect, report) -> {stocks = [{key, stock_id,
-- request}], journals = [{path, send, stock}], store = path | nil} | nil,
-- message
local function read_state(target, expect, rep)
  local statemod = require "quan.campaign.state"
  local st, err = statemod.read(target.state_path, expect)
  if st == false then return nil, no_state(target.state_path) end
  if not st then return nil, err end
  local out = { stocks = {}, journals = {}, meta = st.meta }
  local ok, rerr = pcall(function()
    local records = st:records()
    local order, listed = {}, {}
    for _, entry in ipairs(target.decl and target.decl.stocks or {}) do
      if records[entry.key] then order[#order + 1] = entry.key; listed[entry.key] = true end
    end
    local rest = {}
    for key in pairs(records) do if not listed[key] then rest[#rest + 1] = key end end
    table.sort(rest)
    for _, key in ipairs(rest) do order[#order + 1] = key end
    for _, key in ipairs(order) do
      local r = records[key]
      if r.stock_id then
        out.stocks[#out.stocks + 1] = { key = key, stock_id = r.stock_id, request = sources.json_of(r.request) }
      else
        rep.doc.notes[#rep.doc.notes + 1] = ("stock %s: its create was sent and not answered: no stock id yet"):format(key)
      end
    end
    for r in st.db:rows("SELECT send, stock, path, batch_id FROM journals ORDER BY send") do
      out.journals[#out.journals + 1] = { send = r.send, stock = r.stock, path = resolve(target.state_path, r.path),
        batch_id = r.batch_id }
    end
    -- a send the campaign declares and the state does not record: its
    -- journal where quan send keeps a campaign's, beside the state
    local recorded = {}
    for _, j in ipairs(out.journals) do recorded[j.send] = true end
    for _, send in ipairs(target.decl and target.decl.sends or {}) do
      local path = require("quan.send").journal_beside(target.state_path, send.name)
      if not recorded[send.name] and qos.stat(path) then
        out.journals[#out.journals + 1] = { send = send.name, stock = send.stock, path = path }
      end
    end
    local s = st.db:first("SELECT path FROM stores WHERE name = 'notifications'")
    out.store = s and resolve(target.state_path, s.path) or nil
  end)
  st:close()
  if not ok then
    if qos.is_interrupt(rerr) then error(rerr, 0) end
    return nil, ("state %s: %s"):format(target.state_path, tostring(rerr):gsub("^.-sqlite: ", ""))
  end
  return out
end

-- client(o) -> wx, now, clock | nil, message: the profile's client and the
-- clock figures are read at (--now; a sandbox's business clock; this
-- machine's)
local function client(o)
  require("quan.campaign.command").reads_go_out() -- a report only reads: under --dry-run too
  local ok, wx = pcall(require("wechatpay").client, o.profile)
  if not ok then
    if qos.is_interrupt(wx) then error(wx, 0) end
    return nil, "profile: " .. tostring(wx)
  end
  if o.now then return wx, o.now, "given" end
  local now = require("quan.campaign.command").sandbox_clock(wx)
  if now then return wx, now, "sandbox" end
  return wx, qos.time(), "local"
end

-- read_flows(rep, wx, input): the stock's flow files, once it has ended
-- and they can be had; what was read goes into input
local function read_flows(rep, wx, input)
  local ended = figures.ended_at(figures.terms(input), rep.now)
  if not ended then
    input.flow_note = "the use-flow and refund-flow files come once the stock has ended"
    return
  end
  local from = sources.files_from(ended)
  input.files_from = from
  if rep.now < from then
    input.flow_note = "the flow files can be had from " .. require("quan.format").beijing(from)
    return
  end
  local use, why = sources.flow(wx, "use-flow", input.stock_id)
  if use then
    input.use_flow = use
    rep:source("use-flow:" .. input.stock_id, { kind = "use-flow", stock_id = input.stock_id, read_at = use.read_at,
      sha1 = use.sha1, rows = use.count, what = "GET /v3/marketing/favor/stocks/" .. input.stock_id .. "/use-flow" })
  elseif use == false then
    input.flow_note = "no use-flow file: " .. why
    return
  else
    rep:problem(why)
    return
  end
  local refund
  refund, why = sources.flow(wx, "refund-flow", input.stock_id)
  if refund then
    input.refund_flow = refund
    rep:source("refund-flow:" .. input.stock_id, { kind = "refund-flow", stock_id = input.stock_id,
      read_at = refund.read_at, sha1 = refund.sha1, rows = refund.count,
      what = "GET /v3/marketing/favor/stocks/" .. input.stock_id .. "/refund-flow" })
  elseif refund == false then
    input.refund_flow_absent = true -- the API makes no file without a row: no refund
    rep:source("refund-flow:" .. input.stock_id, { kind = "refund-flow", stock_id = input.stock_id,
      read_at = qos.time(), rows = 0, what = "GET /v3/marketing/favor/stocks/" .. input.stock_id .. "/refund-flow",
      note = "no file: " .. why })
  else
    rep:problem(why)
  end
end

-- array(t) -> t, or json.empty_array for an empty one
local function array(t)
  if next(t) == nil then return json.empty_array end
  return t
end

-- document_stock(f, input, ids) -> the stock's part of the document
local function document_stock(f, input, ids)
  local function src(kind)
    if kind == "api" then return ids.api end
    if kind == "journals" then return array(ids.journals) end
    if kind == "store" then return ids.store end
    if kind == "use-flow" then return ids.use_flow end
    if kind == "refund-flow" then return ids.refund_flow end
    if kind == "state" then return ids.state end
    return nil
  end
  local days = {}
  for i, d in ipairs(f.days) do
    days[i] = { date = d.date, sent = d.sent, used = d.used, refunded = d.refunded, budget_left = d.budget_left }
  end
  local used = { value = f.used.value, source = src(f.used.source), store = f.used.store, flow = f.used.flow,
    difference = f.used.difference, differences = f.used.differences, untimed = f.used.untimed }
  local out = {
    key = f.key, stock_id = f.stock_id, stock_name = f.stock_name, status = f.status,
    terms_source = src(f.terms_from),
    face_value = f.face_value, threshold = f.threshold, budget = f.budget, max_coupons = f.max_coupons,
    daily_budget = f.daily_budget,
    available_begin_time = rfc(f.available_begin_time), available_end_time = rfc(f.available_end_time),
    start_time = rfc(f.start_time), ended_at = rfc(f.ended_at),
    sent = { value = f.sent.value, source = src(f.sent.source), api = f.sent.api, journals = f.sent.journals,
      difference = f.sent.difference, untimed = f.sent.untimed,
      journal_sources = ids.journals[1] and ids.journals or json.empty_array },
    used = used,
    refunded = { value = f.refunded.value, amount = f.refunded.amount, orders = f.refunded.orders,
      source = src(f.refunded.source) },
    orders = f.orders and { value = f.orders.value, source = src(f.orders.source) } or nil,
    redemption_rate = f.redemption_rate,
    spend = f.spend and { used = f.spend.used, refunded = f.spend.refunded, net = f.spend.net,
      source = src(f.spend.source) } or nil,
    remaining = f.remaining and { budget = f.remaining.budget, coupons = f.remaining.coupons,
      source = src("api") } or nil,
    pace = f.pace and { per_day = f.pace.per_day, window_seconds = f.pace.window, source = src("journals") } or nil,
    run_out = f.run_out and { at = rfc(f.run_out.at), note = f.run_out.note, after_end = f.run_out.after_end,
      left_at_end = f.run_out.left_at_end } or nil,
    days = array(days),
    merchants = array(f.merchants), merchant_count = f.merchant_count,
    merchants_source = src(f.used.source),
    flows = { note = input.flow_note, files_from = rfc(input.files_from) },
    notes = array(f.notes),
  }
  return out
end

-- build(target, o) -> document | nil, message, exit status
function M.build(target, o)
  -- a state that is not there is said before a client is made (without a
  -- profile, that starts a private sandbox)
  if target.state_path and require("quan.campaign.state").absent(target.state_path) then
    return nil, no_state(target.state_path), M.EXIT.failed
  end
  local wx, now, clock
  if o.offline then
    now, clock = o.now or qos.time(), o.now and "given" or "local"
  else
    wx, now, clock = client(o)
    if not wx then return nil, now, M.EXIT.failed end
  end
  local rep = new_report(now, clock)
  local doc = rep.doc
  local stocks, journal_list, store_path = {}, {}, o.store
  local state_id
  if target.kind == "stocks" then
    for _, id in ipairs(target.stock_ids) do stocks[#stocks + 1] = { key = id, stock_id = id } end
  else
    local expect = {}
    if target.decl then expect.campaign = target.decl.name end
    if wx then
      expect.mchid = wx.mchid
      expect.api = require("quan.campaign.state").api_of(wx.base_url)
    end
    local st, err = read_state(target, expect, rep)
    if not st then return nil, err, M.EXIT.failed end
    doc.campaign, doc.state = st.meta.campaign, target.state_path
    doc.mchid, doc.api = st.meta.mchid, st.meta.api
    state_id = rep:source("state", { kind = "state", path = target.state_path, read_at = qos.time() })
    stocks = st.stocks
    for _, j in ipairs(st.journals) do journal_list[#journal_list + 1] = j end
    store_path = store_path or st.store
  end
  if target.decl then doc.file = target.decl.file or target.decl.path end
  if wx then doc.mchid, doc.api = doc.mchid or wx.mchid, doc.api or wx.base_url end
  for _, path in ipairs(o.journal and split_list(o.journal) or {}) do
    journal_list[#journal_list + 1] = { path = path }
  end
  if #stocks == 0 then return nil, "no stock to report on: the state records none created yet", M.EXIT.failed end
  local by_stock = {}
  for _, s in ipairs(stocks) do
    s.journals, s.ids = {}, { journals = {}, state = state_id }
    by_stock[s.stock_id] = s
  end
  -- the journals: each belongs to the stock its meta names
  for _, j in ipairs(journal_list) do
    local summary, err = sources.journal(j.path, now)
    if not summary then
      rep:problem(err)
    else
      local s = by_stock[tostring(summary.stock_id)]
      local id = rep:source("journal:" .. summary.batch_id, { kind = "journal", path = j.path, send = j.send,
        batch_id = summary.batch_id, stock_id = summary.stock_id, read_at = summary.read_at, rows = summary.rows,
        sent = summary.sent, states = summary.states, timed = summary.timed })
      if not s then
        doc.notes[#doc.notes + 1] = ("journal %s is of stock %s, not one of this report's: left out"):format(j.path,
          tostring(summary.stock_id))
      else
        s.journals[#s.journals + 1] = summary
        local known = false
        for _, x in ipairs(s.ids.journals) do if x == id then known = true end end
        if not known then s.ids.journals[#s.ids.journals + 1] = id end
        if not summary.timed then
          doc.notes[#doc.notes + 1] = ("journal %s records no time of the API's answers (made before quan recorded "
            .. "them): its %d sent rows count, under no day"):format(j.path, summary.sent)
        end
      end
    end
  end
  -- the receiver's store
  if store_path then
    local wanted = {}
    for id in pairs(by_stock) do wanted[id] = true end
    local store, err = sources.store(store_path, wanted)
    if not store then
      rep:problem(err)
    else
      local id = rep:source("store", { kind = "store", path = store_path, read_at = store.read_at,
        events = store.events })
      for sid, s in pairs(by_stock) do
        s.store, s.ids.store = store.by_stock[sid], id
      end
    end
  end
  -- the API: each stock, then its flow files
  local retry = wx and require("wechatpay.retry").policy { attempts = o.attempts or 5 }
  for _, s in ipairs(stocks) do
    if wx then
      local got, err = sources.stock(wx, s.stock_id, { mchid = wx.mchid, retry = retry })
      if got then
        s.api = got
        s.ids.api = rep:source("api:" .. s.stock_id, { kind = "api", stock_id = s.stock_id, read_at = got.read_at,
          what = "GET /v3/marketing/favor/stocks/" .. s.stock_id, request_id = got.request_id })
        read_flows(rep, wx, s)
        s.ids.use_flow = s.use_flow and "use-flow:" .. s.stock_id or nil
        s.ids.refund_flow = (s.refund_flow or s.refund_flow_absent) and "refund-flow:" .. s.stock_id or nil
      else
        rep:problem(err)
      end
    end
  end
  local figs = {}
  for i, s in ipairs(stocks) do
    figs[i] = figures.stock(s, now)
    doc.stocks[i] = document_stock(figs[i], s, s.ids)
  end
  local t = figures.totals(figs)
  local days = {}
  for i, d in ipairs(t.days) do
    days[i] = { date = d.date, sent = d.sent, used = d.used, refunded = d.refunded, budget_left = d.budget_left }
  end
  t.days = array(days)
  t.merchants = array(t.merchants)
  t.notes = nil
  doc.totals = t
  if next(doc.sources) == nil then -- stock ids --offline without --journal: dashes only, said as a failure
    rep:problem("nothing to report: no source was read" .. (o.offline
      and " (--offline reads the journals and the store only: give --journal)" or ""))
  end
  doc.problems, doc.notes, doc.sources = array(doc.problems), array(doc.notes), array(doc.sources)
  return doc
end

-- main(o, arguments) -> exit status
function M.main(o, arguments)
  -- a report's heap grows to the rows it reads (a million sent rows): Lua's
  -- usual 200 % pause, not the host's 130 % (src/main.c, made for request
  -- loops), spends less time in the collector meanwhile (7 % of the report)
  collectgarbage("incremental", 200)
  collectgarbage("generational")
  local why = o.html and require("quan.path").unwritable(o.html) -- said before any source is read
  if why then
    io.stderr:write("quan report: --html ", o.html, ": ", why, "\n")
    return M.EXIT.usage
  end
  local target, err, code = M.target(arguments, o)
  if not target then
    if err then io.stderr:write("quan report: ", err, "\n") end
    return code
  end
  local doc
  doc, err, code = M.build(target, o)
  if not doc then
    io.stderr:write("quan report: ", err, "\n")
    return code
  end
  if o.html then
    local page = require("quan.report.html").page(doc)
    local f, ferr = io.open(o.html, "wb")
    if not f then
      io.stderr:write("quan report: --html ", tostring(ferr), "\n")
      return M.EXIT.failed
    end
    local wrote, werr = f:write(page)
    local closed, cerr = f:close()
    if not wrote or not closed then -- a full disk
      io.stderr:write("quan report: --html ", o.html, ": ", tostring(werr or cerr), "\n")
      return M.EXIT.failed
    end
  end
  if o.json then
    io.stdout:write(json.encode(doc), "\n")
  elseif not o.html then
    io.stdout:write(require("quan.report.text").render(doc))
  end
  for _, p in ipairs(doc.problems) do io.stderr:write("quan report: ", p, "\n") end
  if o.html and not o.json then
    io.stderr:write(("quan report: wrote %s\n"):format(o.html))
  end
  return #doc.problems > 0 and M.EXIT.failed or M.EXIT.ok
end

return M
