-- quan.campaign.plan: the difference between a campaign declaration and
-- what exists, as steps (create / start / pause / restart / record /
-- nothing), drift, findings and warnings. Reading only: the API is asked
-- with GETs (each recorded stock by its id; the merchant's stocks listed
-- for a key without a record), never with a write call.
--
--   plan.build(decl, ctx) -> plan | nil, err
--     ctx = { wx = client | nil (offline: the state alone), mchid =, now = epoch,
--             records = { key -> state record }, retry = policy | nil }
--   plan.MATCHED, plan.DRIFT: the fields compared (documented in docs/campaigns.md)
--
-- plan = { stocks = { item... }, orphans = {...}, totals = {...}, changes = n,
--          records = n, problems = n, warnings = n, notes = {...} }
-- item = { key, where, line, state (declared), json (the body a create sends),
--          out_request_no, stock_id, status, origin ("state" | "found" | "declared"),
--          match ("exact" | "name"), steps = {...}, drift = {...},
--          findings = {...}, warnings = {...}, notes = {...}, error = msg | nil }
local M = {}

local schema = require "wechatpay.favor.schema"
local json = require "wechatpay.json"
local campaign = require "quan.campaign"
local format = require "quan.format"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local mtype, sformat = math.type, string.format

local BODY = schema.by_id.create_stock.body
local CREATE_PATH = "/v3/marketing/favor/coupon-stocks"
local DAY = 86400

local time = require "quan.time"

-- the validator: where the schema's rules are judged
local function validator()
  return require "wechatpay.favor.validate"
end

local function epoch(s)
  return time.parse(s)
end

-- get(t, "a.b.c") -> the value at a dotted path, nil on the way
local function get(t, path)
  for part in path:gmatch("[^.]+") do
    if type(t) ~= "table" then return nil end
    t = t[part]
  end
  return t
end

-- desc(path) -> the field's name in the docs (面额) | nil
local function desc(path)
  local node = schema.field(BODY, path)
  return node and node.desc
end
M.desc = desc

-- ---------------------------------------------------------------------------
-- comparing a declaration with a stock

-- what a stock object (GET .../stocks/{id}, and each of the list) carries of
-- the create request: {declared path, path in the stock object, kind}
M.MATCHED = {
  { "stock_name", "stock_name" },
  { "available_begin_time", "available_begin_time", "time" },
  { "available_end_time", "available_end_time", "time" },
  { "stock_use_rule.max_coupons", "stock_use_rule.max_coupons" },
  { "stock_use_rule.max_amount", "stock_use_rule.max_amount", "money" },
  { "stock_use_rule.max_coupons_per_user", "stock_use_rule.max_coupons_per_user" },
  { "coupon_use_rule.fixed_normal_coupon.coupon_amount", "stock_use_rule.fixed_normal_coupon.coupon_amount", "money" },
  { "coupon_use_rule.fixed_normal_coupon.transaction_minimum", "stock_use_rule.fixed_normal_coupon.transaction_minimum",
    "money" },
  { "no_cash", "no_cash" },
}

-- carried too, compared for drift only when both sides have a value (the
-- API fills some with defaults: max_amount_by_day = max_amount)
M.DRIFT = {
  { "stock_use_rule.max_amount_by_day", "stock_use_rule.max_amount_by_day", "money" },
  { "stock_use_rule.natural_person_limit", "stock_use_rule.natural_person_limit" },
  { "stock_use_rule.prevent_api_abuse", "stock_use_rule.prevent_api_abuse" },
  { "stock_type", "stock_type" },
  { "pattern_info.description", "description" },
  { "coupon_use_rule.goods_tag", "stock_use_rule.goods_tag", "set" },
  { "coupon_use_rule.trade_type", "stock_use_rule.trade_type", "set" },
  { "coupon_use_rule.combine_use", "stock_use_rule.combine_use" },
}

local MONEY = {}
for _, list in ipairs { M.MATCHED, M.DRIFT } do
  for _, f in ipairs(list) do if f[3] == "money" then MONEY[f[1]] = true end end
end

-- same(a, b, kind) -> true when the two values mean the same
local function same(a, b, kind)
  if kind == "time" and type(a) == "string" and type(b) == "string" then
    local x, y = epoch(a), epoch(b)
    if x and y then return x == y end
    return a == b
  end
  if kind == "set" and type(a) == "table" and type(b) == "table" then
    local sa, sb = {}, {}
    for i, v in ipairs(a) do sa[i] = tostring(v) end
    for i, v in ipairs(b) do sb[i] = tostring(v) end
    table.sort(sa)
    table.sort(sb)
    return table.concat(sa, "\0") == table.concat(sb, "\0")
  end
  if type(a) == "table" and type(b) == "table" then return json.encode(a) == json.encode(b) end
  return a == b
end

-- matches(body, stock) -> true when every field of MATCHED agrees
local function matches(body, stock)
  for _, f in ipairs(M.MATCHED) do
    if not same(get(body, f[1]), get(stock, f[2]), f[3]) then return false end
  end
  return true
end

-- show(path, v) -> a value for a person: ¥ for money, Beijing time for times
local function show(path, v)
  if v == nil then return "(none)" end
  if MONEY[path] and mtype(v) == "integer" then
    return sformat("%s (%s 分)", format.yuan(v), format.count(v))
  end
  if type(v) == "string" and path:find("time$") and epoch(v) then return format.beijing(epoch(v)) end
  if type(v) == "table" then return json.encode(v) end
  if type(v) == "string" then return sformat("%q", v) end
  return tostring(v)
end
M.show = show

-- flatten(t, prefix, out) -> { "a.b" = leaf }: arrays are leaves
local function flatten(t, prefix, out)
  out = out or {}
  for k, v in pairs(t) do
    local p = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    if type(v) == "table" and v[1] == nil and next(v) ~= nil then
      flatten(v, p, out)
    else
      out[p] = v
    end
  end
  return out
end

-- drift(item, stock, recorded) -> list of {field, desc, declared, actual, source}
-- source "api": the stock as the API shows it; "state": the request the
-- state recorded as sent (for fields the stock object does not carry)
local function drift(body, stock, recorded)
  local out, seen = {}, {}
  if stock then
    for _, list in ipairs { M.MATCHED, M.DRIFT } do
      for _, f in ipairs(list) do
        local d, a = get(body, f[1]), get(stock, f[2])
        seen[f[1]] = true
        local compared = list == M.MATCHED or (d ~= nil and a ~= nil)
        if compared and not same(d, a, f[3]) then
          out[#out + 1] = { field = f[1], desc = desc(f[1]), declared = d, actual = a, source = "api" }
        end
      end
    end
  end
  if recorded then
    local was = json.decode(recorded)
    if type(was) == "table" then
      local now_flat, was_flat = flatten(body), flatten(was)
      local paths = {}
      for p in pairs(now_flat) do paths[p] = true end
      for p in pairs(was_flat) do paths[p] = true end
      local sorted = {}
      for p in pairs(paths) do sorted[#sorted + 1] = p end
      table.sort(sorted)
      for _, p in ipairs(sorted) do
        if not seen[p] and not same(now_flat[p], was_flat[p], p:find("time$") and "time" or nil) then
          out[#out + 1] = { field = p, desc = desc(p), declared = now_flat[p], actual = was_flat[p], source = "state" }
        end
      end
    end
  end
  return out
end
M.drift = drift

-- ---------------------------------------------------------------------------
-- warnings: what is valid but probably a mistake

local function days_spanned(begin, stop)
  -- Beijing calendar days from begin's day to stop's day, both counted
  local b = (begin + time.BEIJING) // DAY
  local s = (stop + time.BEIJING) // DAY
  return s - b + 1
end

-- warnings(body, now, exists, status) -> list of {code, message}
function M.warnings(body, now, exists, status)
  local w = {}
  local function warn(code, fmt, ...) w[#w + 1] = { code = code, message = sformat(fmt, ...) } end
  local su = type(body.stock_use_rule) == "table" and body.stock_use_rule or {}
  local cur = type(body.coupon_use_rule) == "table" and body.coupon_use_rule or {}
  local fnc = type(cur.fixed_normal_coupon) == "table" and cur.fixed_normal_coupon or {}
  local amount, minimum = fnc.coupon_amount, fnc.transaction_minimum
  local count, by_day = su.max_coupons, su.max_amount_by_day
  -- (an amount of 0 分 or less is an error of the schema, not a unit typed wrong)
  if mtype(amount) == "integer" and amount > 0 and amount < 100 then
    warn("yuan_as_fen", "面额 coupon_amount is %d 分 = %s, under ¥1: 元 typed as 分? ¥%d is %d 分 (favor.yuan(%d))",
      amount, format.yuan(amount), amount, amount * 100, amount)
  end
  if mtype(minimum) == "integer" and minimum > 0 and minimum < 200 then
    warn("yuan_as_fen", "门槛 transaction_minimum is %d 分 = %s, under ¥2: 元 typed as 分? ¥%d is %d 分 (favor.yuan(%d))",
      minimum, format.yuan(minimum), minimum, minimum * 100, minimum)
  end
  local begin, stop = epoch(body.available_begin_time), epoch(body.available_end_time)
  if mtype(by_day) == "integer" and mtype(amount) == "integer" and amount > 0 then
    if by_day < amount then
      warn("daily_budget_below_face", "单天发放上限金额 max_amount_by_day %s cannot pay for one coupon of %s: "
        .. "no coupon can be sent", format.yuan(by_day), format.yuan(amount))
    elseif mtype(count) == "integer" and begin and stop and stop > begin then
      local per_day, days = by_day // amount, days_spanned(begin, stop)
      if per_day * days < count then
        warn("daily_budget_short", "单天发放上限金额 %s allows %s coupons a day, %s over the %d days of the window: "
          .. "fewer than max_coupons %s", format.yuan(by_day), format.count(per_day), format.count(per_day * days),
          days, format.count(count))
      end
    end
  end
  if begin and stop then
    -- a begin further in the past is a finding of the schema (the create
    -- is refused): warned of here is the minute a request may take
    if not exists and begin < now and begin >= now - validator().TRAVEL then
      warn("window_begun", "the window began %s ago (%s): a create that arrives later than a minute after "
        .. "its begin time is refused", format.duration(now - begin), format.beijing(begin))
    end
    if stop <= begin then
      warn("window_inverted", "the window ends (%s) before it begins (%s)", format.beijing(stop), format.beijing(begin))
    elseif stop < now and (not exists or status ~= "stoped") then
      warn("window_ended", "the window ended %s (%s ago): no coupon can be sent", format.beijing(stop),
        format.duration(now - stop))
    elseif exists and begin < now and status == "unactivated" then
      warn("window_open_not_started", "the window opened %s ago and the stock is not started yet",
        format.duration(now - begin))
    end
    local cat = type(cur.coupon_available_time) == "table" and cur.coupon_available_time or {}
    local usable_end = epoch(cat.available_end_time)
    if usable_end and usable_end < stop then
      warn("usage_ends_early", "coupons can be used until %s but are sent until %s: a coupon sent after %s can "
        .. "never be used", format.beijing(usable_end), format.beijing(stop), format.beijing(usable_end))
    end
    local usable_begin = epoch(cat.available_begin_time)
    if usable_begin and usable_end and usable_end <= usable_begin then
      warn("usage_window_inverted", "the coupons' usage window ends (%s) before it begins (%s)",
        format.beijing(usable_end), format.beijing(usable_begin))
    end
    local fix = type(cat.fix_available_time) == "table" and cat.fix_available_time or nil
    local week = fix and type(fix.available_week_day) == "table" and fix.available_week_day
    if week and week[1] ~= nil and stop > begin and stop - begin < 7 * DAY then
      local on = {}
      for _, d in ipairs(week) do on[d] = true end
      local any = false
      -- the Beijing calendar days of the window; day 0 (1970-01-01) was a Thursday
      for day = (begin + time.BEIJING) // DAY, (stop + time.BEIJING) // DAY do
        if on[(day + 4) % 7] then any = true end
      end
      if not any then
        warn("usage_never", "coupons are usable on %s only, and no such day falls between %s and %s",
          format.weekdays(week), format.date(begin), format.date(stop))
      end
    end
  end
  return w
end

-- ---------------------------------------------------------------------------
-- a summary for a person

-- summary(body) -> { name, amount, minimum, count, budget, by_day, per_user,
-- begin, stop, usable = text, flags = {...} } (nil for what is missing)
function M.summary(body)
  local su = type(body.stock_use_rule) == "table" and body.stock_use_rule or {}
  local cur = type(body.coupon_use_rule) == "table" and body.coupon_use_rule or {}
  local fnc = type(cur.fixed_normal_coupon) == "table" and cur.fixed_normal_coupon or {}
  local cat = type(cur.coupon_available_time) == "table" and cur.coupon_available_time or {}
  local s = {
    name = body.stock_name, type = body.stock_type, no_cash = body.no_cash,
    amount = fnc.coupon_amount, minimum = fnc.transaction_minimum,
    count = su.max_coupons, budget = su.max_amount, by_day = su.max_amount_by_day,
    per_user = su.max_coupons_per_user, natural_person = su.natural_person_limit, abuse = su.prevent_api_abuse,
    begin = epoch(body.available_begin_time), stop = epoch(body.available_end_time),
  }
  local usable = {}
  local fix = type(cat.fix_available_time) == "table" and cat.fix_available_time
  if fix then
    local days = type(fix.available_week_day) == "table" and fix.available_week_day[1] ~= nil
      and format.weekdays(fix.available_week_day) or "every day"
    local from = mtype(fix.begin_time) == "integer" and fix.begin_time or 0
    local to = mtype(fix.end_time) == "integer" and fix.end_time or 86399
    usable[#usable + 1] = sformat("%s %s–%s", days, format.clock(from), format.clock(to))
  end
  if mtype(cat.available_time_after_receive) == "integer" and cat.available_time_after_receive > 0 then
    usable[#usable + 1] = sformat("for %s after receipt", format.duration(cat.available_time_after_receive * 60))
  end
  if cat.second_day_available then usable[#usable + 1] = "from the day after receipt" end
  local cb, ce = epoch(cat.available_begin_time), epoch(cat.available_end_time)
  if cb or ce then
    usable[#usable + 1] = sformat("%s → %s", cb and format.beijing(cb) or "…", ce and format.beijing(ce) or "…")
  end
  s.usable = #usable > 0 and table.concat(usable, " · ") or nil
  return s
end

-- ---------------------------------------------------------------------------
-- steps

-- steps(status, wanted) -> list of actions, a note | nil
-- status nil: no stock yet. A paused stock is reached from running only;
-- one declared paused that was never started stays unactivated (it sends
-- nothing either).
function M.steps(status, wanted)
  if status == nil then
    if wanted == "running" then return { "create", "start" } end
    return { "create" }, "created unactivated: a stock is paused only after it ran; unactivated, it sends nothing"
  end
  if status == "unactivated" then
    if wanted == "running" then return { "start" } end
    return {}, "unactivated (never started): it sends nothing, as paused"
  elseif status == "running" then
    if wanted == "paused" then return { "pause" } end
    return {}
  elseif status == "paused" then
    if wanted == "running" then return { "restart" } end
    return {}
  elseif status == "audit" then
    return {}, "under review (audit) at WeChat Pay: apply again once it is not"
  elseif status == "stoped" then
    if wanted == "running" then
      return {}, "stopped (stoped): a stopped stock cannot run again; declare a new stock under a new key"
    end
    return {}, "stopped (stoped): it sends nothing, as paused"
  end
  return {}, "status " .. tostring(status) .. " is not one quan knows: nothing done"
end

-- ---------------------------------------------------------------------------
-- the reads

-- get_stock(ctx, id) -> stock | nil, err
local function get_stock(ctx, id)
  local res, err = ctx.wx.v3.marketing.favor.stocks._stock_id_:get {
    stock_id = id, query = { stock_creator_mchid = ctx.mchid }, retry = ctx.retry,
  }
  if not res then return nil, err end
  if type(res.json) ~= "table" then return nil, "GET stock " .. id .. ": the answer is not a stock" end
  return res.json
end
M.get_stock = get_stock

M.PAGE, M.MAX_PAGES = 10, 1000

-- list(ctx, from, consider) -> pages read | nil, err: the merchant's stocks
-- created since `from` (RFC 3339, or nil), newest first, each given to
-- consider(stock); stops when consider returns true (everything found)
local function list(ctx, from, consider)
  local page = 0
  while true do
    local res, err = ctx.wx.v3.marketing.favor.stocks:get {
      query = { offset = page, limit = M.PAGE, stock_creator_mchid = ctx.mchid, create_start_time = from },
      retry = ctx.retry,
    }
    if not res then return nil, err end
    local data = type(res.json) == "table" and type(res.json.data) == "table" and res.json.data or {}
    for _, s in ipairs(data) do
      if type(s) == "table" and consider(s) then return page + 1 end
    end
    page = page + 1
    local total = type(res.json) == "table" and mtype(res.json.total_count) == "integer" and res.json.total_count
    if #data < M.PAGE or (total and page * M.PAGE >= total) then return page end
    if page >= M.MAX_PAGES then return page, "stopped listing after " .. format.count(page * M.PAGE) .. " stocks" end
  end
end
M.list = list

-- find(ctx, items, taken) -> true | nil, err: matches each item without a
-- stock to one of the merchant's stocks, by reading them. An exact match (every
-- field of MATCHED) is taken; a stock with the same stock_name only when the
-- key's create was sent and its answer not recorded (the rest is drift), or
-- when the API refused the key's out_request_no for another body (apply sets
-- item.refused). taken: stock ids recorded for other keys,
-- never matched again.
local function find(ctx, items, taken)
  if #items == 0 then return true end
  local bound
  for _, it in ipairs(items) do
    local b = epoch(it.json.available_begin_time)
    if not b then bound = nil break end
    bound = math.min(bound or math.huge, b, ctx.now)
  end
  -- a stock is created at most 365 days before its window begins
  local from = bound and time.beijing(math.floor(bound) - 365 * DAY) or nil
  local exact, named = {}, {}
  local pending = #items
  local pages, warn = list(ctx, from, function(s)
    local id = tostring(s.stock_id)
    if taken[id] then return false end
    for _, it in ipairs(items) do
      if matches(it.json, s) then
        exact[it] = exact[it] or {}
        table.insert(exact[it], s)
        if #exact[it] == 1 then pending = pending - 1 end
      elseif s.stock_name == it.json.stock_name then
        named[it] = named[it] or {}
        table.insert(named[it], s)
      end
    end
    return pending == 0
  end)
  if not pages then return nil, warn end
  ctx.pages = (ctx.pages or 0) + pages
  if warn then ctx.notes[#ctx.notes + 1] = warn end
  local used = {}
  local function assign(it, list_, how)
    local free = {}
    for _, s in ipairs(list_) do if not used[tostring(s.stock_id)] then free[#free + 1] = s end end
    if #free == 1 then
      used[tostring(free[1].stock_id)] = true
      it.stock, it.stock_id, it.status, it.origin, it.match = free[1], tostring(free[1].stock_id), free[1].status,
        "found", how
    elseif #free > 1 then
      local ids = {}
      for i, s in ipairs(free) do ids[i] = tostring(s.stock_id) end
      it.error = sformat("%d of the merchant's stocks match it (%s): pin the right one with stock_id = \"...\" "
        .. "in its declaration", #free, table.concat(ids, ", "))
    end
  end
  for _, it in ipairs(items) do if exact[it] then assign(it, exact[it], "exact") end end
  for _, it in ipairs(items) do
    if not it.stock and not it.error and named[it] then
      if (it.record and not it.record.stock_id) or it.refused then
        -- a create of this key was sent and its answer lost: a stock of its
        -- name is that create's, made before the declaration was edited
        assign(it, named[it], "name")
      else
        -- another campaign's stock may well share a name: not taken on a
        -- name alone; apply still never creates twice (the API refuses the
        -- key's out_request_no for another body, and apply then records it)
        local ids = {}
        for i, x in ipairs(named[it]) do ids[i] = tostring(x.stock_id) end
        it.notes[#it.notes + 1] = ("stock %s has this stock_name, other fields differ: if it is this key's "
          .. "(the declaration edited after it was created, and its record lost), apply records it when the API "
          .. "refuses the out_request_no; else apply creates this one"):format(table.concat(ids, ", "))
      end
    end
  end
  return true
end
M.find = find

-- ---------------------------------------------------------------------------
-- the plan

local function copy(t)
  if type(t) ~= "table" then return t end
  local r = {}
  for k, v in pairs(t) do r[k] = copy(v) end
  return r
end

-- what stands for the profile's merchant in belong_merchant when no profile
-- is read (quan check without a state)
M.NO_MCHID = "PROFILE-MCHID"

-- body(entry, ctx) -> the create request of a declared stock: the declared
-- table, with belong_merchant (the profile's merchant) and out_request_no
-- (campaign.request_no) filled in where the file leaves them out
function M.body(decl, entry, mchid)
  local b = copy(entry.json)
  if b.belong_merchant == nil then b.belong_merchant = mchid end
  if b.out_request_no == nil then b.out_request_no = campaign.request_no(decl.name, entry.key) end
  return b
end

-- build(decl, ctx) -> plan | nil, err (a read that failed after its retries)
function M.build(decl, ctx)
  ctx.notes = ctx.notes or {}
  local records = ctx.records or {}
  local items, by_stock = {}, {}
  local taken = {}                -- stock id -> the key it is recorded or pinned for
  for key, r in pairs(records) do
    if r.stock_id then taken[r.stock_id] = key end
  end
  for _, e in ipairs(decl.stocks) do
    if e.stock_id and not taken[e.stock_id] then taken[e.stock_id] = e.key end
  end
  -- what exists: recorded stocks read by id, pinned ones too
  local unknown = {}
  for _, e in ipairs(decl.stocks) do
    local it = {
      key = e.key, where = e.where, line = e.line, state = e.state, json = M.body(decl, e, ctx.mchid or M.NO_MCHID),
      steps = {}, drift = {}, findings = {}, warnings = {}, notes = {},
    }
    it.out_request_no = it.json.out_request_no
    items[#items + 1] = it
    local r = records[e.key]
    it.record = r
    local id = e.stock_id or (r and r.stock_id)
    if e.stock_id and r and r.stock_id and r.stock_id ~= e.stock_id then
      it.error = sformat("declared stock_id %s, but the state records stock %s for this key", e.stock_id, r.stock_id)
    elseif e.stock_id and taken[e.stock_id] and taken[e.stock_id] ~= e.key then
      it.error = sformat("stock %s is recorded for key '%s' already", e.stock_id, taken[e.stock_id])
    elseif id then
      it.stock_id = id
      it.origin = e.stock_id and not (r and r.stock_id) and "declared" or "state"
      if ctx.wx then
        local s, err = get_stock(ctx, id)
        if s then
          it.stock, it.status = s, s.status
        elseif type(err) == "table" and err.kind == "http" and err.status == 404 then
          it.error = sformat("stock %s (%s for this key) does not exist at this API", id,
            e.stock_id and "declared" or "recorded")
        else
          return nil, sformat("%s: stock '%s': %s", it.where, it.key, tostring(err))
        end
      else
        it.status = r and r.status -- offline: as last recorded
        it.offline = true
      end
    elseif ctx.wx then
      unknown[#unknown + 1] = it
    else
      it.offline = true
    end
  end
  if ctx.wx and #unknown > 0 then
    local ok, err = find(ctx, unknown, taken)
    if not ok then return nil, err end
  end
  -- steps, drift, findings and warnings of each stock
  local plan = { stocks = items, orphans = {}, notes = ctx.notes, changes = 0, records = 0, problems = 0,
    warnings = 0, totals = { stocks = #items, coupons = 0, budget = 0, create = 0, create_budget = 0 } }
  local validate = validator()
  for _, it in ipairs(items) do
    local exists = it.stock ~= nil or (it.offline and it.stock_id ~= nil)
    local status = it.status
    if it.offline and it.stock_id and not status then status = "unactivated" end
    if not it.error then
      local note
      if exists then
        it.steps, note = M.steps(status, it.state)
      else
        it.steps, note = M.steps(nil, it.state)
      end
      if note then it.notes[#it.notes + 1] = note end
      if it.origin == "found" or it.origin == "declared" then table.insert(it.steps, 1, "record") end
      -- a stock that did not start in its window never will: no start
      local stop = epoch(it.json.available_end_time)
      if exists and status == "unactivated" and stop and stop < ctx.now and it.steps[1] == "start" then
        it.steps = {}
        it.notes[#it.notes + 1] = "not started, and its window has ended: it can no longer be started"
      end
      if ctx.wx and it.record and not it.record.stock_id and not exists then
        it.notes[#it.notes + 1] = "an earlier create's answer was not recorded; no such stock was found: created "
          .. "again with the same out_request_no " .. it.out_request_no
      end
    end
    -- the declaration is checked as a create request: as of now for a stock
    -- to create, as of its creation for one that exists
    local as_of = ctx.now
    if exists then
      as_of = it.stock and epoch(it.stock.create_time) or epoch(it.json.available_begin_time) or ctx.now
    end
    local good, findings = validate.request("POST", CREATE_PATH, it.json, { now = math.floor(as_of) })
    if not good then it.findings = findings end
    if it.json.belong_merchant ~= ctx.mchid and ctx.mchid then
      table.insert(it.findings, { path = "belong_merchant", desc = desc("belong_merchant"),
        rule = "must be the merchant of the profile, " .. ctx.mchid, value = it.json.belong_merchant })
    end
    if exists then
      -- the request the state recorded as sent for this very stock: its
      -- own, or an unanswered create's that the stock matches exactly
      local r = it.record
      local sent = r and (r.stock_id == it.stock_id or (r.stock_id == nil and it.match == "exact")) and r.request or nil
      it.drift = drift(it.json, it.stock, sent)
    end
    it.warnings = M.warnings(it.json, ctx.now, exists, status)
    it.summary = M.summary(it.json)
    local s = it.summary
    if mtype(s.count) == "integer" then plan.totals.coupons = plan.totals.coupons + s.count end
    if mtype(s.budget) == "integer" then plan.totals.budget = plan.totals.budget + s.budget end
    for _, step in ipairs(it.steps) do
      if step == "record" then plan.records = plan.records + 1 else plan.changes = plan.changes + 1 end
      if step == "create" then
        plan.totals.create = plan.totals.create + 1
        if mtype(s.budget) == "integer" then plan.totals.create_budget = plan.totals.create_budget + s.budget end
      end
    end
    -- a stock with steps must be valid; one that exists is reported, not blocked
    if it.error or (#it.findings > 0 and not exists) then plan.problems = plan.problems + 1 end
    plan.warnings = plan.warnings + #it.warnings
    it.blocked = it.error ~= nil or (#it.findings > 0 and not exists)
  end
  -- what later commands do with the campaign: declared, not run here
  if #decl.sends > 0 then
    plan.notes[#plan.notes + 1] = ("%d send%s declared (%s): apply runs each once its stock runs"):format(#decl.sends,
      #decl.sends == 1 and "" or "s", (function()
        local names = {}
        for i, sd in ipairs(decl.sends) do names[i] = sd.name .. " → " .. sd.stock end
        return table.concat(names, ", ")
      end)())
  end
  if decl.notifications and decl.notifications.handler then
    plan.notes[#plan.notes + 1] = "a notification handler declared: quan serve runs it, apply does not"
  end
  -- recorded keys no longer declared: left as they are
  for key, r in pairs(records) do
    if not decl.by_key[key] then
      plan.orphans[#plan.orphans + 1] = { key = key, stock_id = r.stock_id, status = r.status }
    end
  end
  table.sort(plan.orphans, function(a, b) return a.key < b.key end)
  return plan
end

-- ---------------------------------------------------------------------------
-- `quan check CAMPAIGN.lua`: the same plan without reading the API

-- check(path, value, opts) -> exit status (0 valid, 1 errors): value is what
-- the campaign file returned; the state beside it (if any) stands for what
-- exists, as last recorded; opts.now (epoch), opts.json
function M.check(path, value, opts)
  opts = opts or {}
  local decl, problems = campaign.declaration(value, path)
  if not decl then
    io.stderr:write((campaign.format_problems(problems):gsub("[^\n]+", "quan check: %0")), "\n")
    return 1
  end
  local state_path = opts.state or (path .. ".state")
  local st, err = require("quan.campaign.state").read(state_path, { campaign = decl.name })
  if st == nil then
    io.stderr:write("quan check: ", err, "\n")
    return 1
  end
  local records, mchid = {}, nil
  if st then
    records, mchid = st:records(), st.meta.mchid
    st:close()
  end
  local now = opts.now or require("quan.os").time()
  local plan = assert(M.build(decl, { mchid = mchid, now = now, records = records }))
  local render = require "quan.campaign.render"
  local head = { campaign = decl.name, file = decl.file, mchid = mchid, state = state_path,
    state_note = not st and "none yet" or nil, now = now, clock = opts.now and "given" or "local", offline = true }
  if opts.json then
    io.stdout:write(render.json(plan, head), "\n")
  else
    io.stdout:write(render.text(plan, head))
  end
  return plan.problems > 0 and 1 or 0
end

-- ---------------------------------------------------------------------------
-- `quan plan`

-- main(o, arguments) -> exit status: `quan plan` (its options: quan.cli's
-- table; o.state, o.json, o.now (epoch seconds), o.profile; arguments = { file })
function M.main(o, arguments)
  local command = require "quan.campaign.command"
  local EXIT = command.EXIT
  o.file = arguments[1]
  local decl, failed = command.load(o.file, "quan plan")
  if not decl then return failed end
  local s, serr, scode = command.session(decl, o)
  if not s then
    io.stderr:write("quan plan: ", serr, "\n")
    return scode
  end
  local st, rerr = require("quan.campaign.state").read(s.state_path,
    { campaign = decl.name, mchid = s.mchid, api = s.api })
  if st == nil then
    io.stderr:write("quan plan: ", rerr, "\n")
    return EXIT.failed
  end
  local records = st and st:records() or {}
  if st then st.db:close() end
  local plan, perr = M.build(decl, { wx = s.wx, mchid = s.mchid, now = s.now, records = records, retry = s.retry })
  if not plan then
    io.stderr:write("quan plan: ", tostring(perr), "\n")
    return EXIT.failed
  end
  local render = require "quan.campaign.render"
  local head = command.head(decl, s, s.state_path, s.state_note or (not st and "none yet" or nil))
  if o.json then
    io.stdout:write(render.json(plan, head), "\n")
  else
    io.stdout:write(render.text(plan, head))
  end
  if plan.problems > 0 then return EXIT.failed end
  if plan.changes > 0 then return EXIT.changes end
  return EXIT.ok
end

return M
