-- quan.campaign: a campaign declaration — the stocks that should exist, each
-- under a stable key, with the state it should be in — as a campaign file
-- returns it, and how quan plan / apply / check read it. See docs/campaigns.md.
--
-- In a campaign file, the plain form (always accepted, so tools can write it):
--   return { name = "double12", stocks = { tier10 = { state = "running", json = {...create-stock body...} } } }
-- or the builder, which also records the line of each stock:
--   local c = require("quan.campaign").new "double12"
--   c:stock("tier10", body [, { state = "paused" }])
--   return c
--
-- For the tools:
--   campaign.load(path)                 -> declaration | nil, problems
--   campaign.declaration(value, path)   -> declaration | nil, problems  (value: what the file returned)
--   campaign.is_declaration(value)      -> true when value looks like one (a table with `stocks`)
--   campaign.request_no(name, key)      -> the stock's out_request_no
--   campaign.format_problems(problems)  -> text, one problem a line
--
-- A declaration is { name, file, stocks = { entry... } (in declared order),
-- by_key = { key -> entry }, sends = { ... }, notifications = {...} | nil };
-- an entry is { key, state, json (a plain copy), stock_id | nil, line | nil,
-- where = "file:line" }. A problem is { where = "file:line" | nil, key = | nil,
-- message = } (no where: the message names its place, as Lua's errors do).
local M = {}

local json = require "wechatpay.json"

local type, pairs, ipairs, tostring, getmetatable = type, pairs, ipairs, tostring, getmetatable
local sformat = string.format

M.STATES = { running = true, paused = true }
M.TOP = { name = true, stocks = true, sends = true, notifications = true }
M.ENTRY = { state = true, json = true, stock_id = true }
M.SEND = { stock = true, users = true, key = true }  -- quan apply runs them (quan.campaign.sends)
M.NOTIFICATIONS = { handler = true }                 -- quan serve fills in the rest

-- request_no(name, key) -> "QC-" followed by the first 32 hex digits of
-- SHA-256("quan campaign stock v1" NUL name NUL key): the create request's
-- out_request_no of a stock declared without one. Only the campaign's name
-- and the stock's key go in, so editing any other field keeps the number.
function M.request_no(name, key)
  if type(name) ~= "string" or name == "" then error("campaign.request_no: name must be a non-empty string", 2) end
  if type(key) ~= "string" or key == "" then error("campaign.request_no: key must be a non-empty string", 2) end
  local digest = require("quan.crypto").sha256("quan campaign stock v1\0" .. name .. "\0" .. key)
  return "QC-" .. digest:sub(1, 32)
end

-- ---------------------------------------------------------------------------
-- the builder

local Campaign = {}
Campaign.__index = Campaign
Campaign.__name = "quan.campaign"

-- declared lines: entry table -> { source =, line =, seq = } (the builder's
-- call, and how many calls came before it: a loop's calls share a line)
local lines = setmetatable({}, { __mode = "k" })
local calls = 0

local function check_name(name, level)
  if type(name) ~= "string" or name == "" then
    error("campaign.new: the campaign's name must be a non-empty string", level + 1)
  end
end

-- new(name | {name = }) -> a campaign to declare stocks in; return it from the file
function M.new(spec)
  local name = type(spec) == "table" and spec.name or spec
  check_name(name, 2)
  if type(spec) == "table" then
    for k in pairs(spec) do
      if k ~= "name" then error("campaign.new: unknown field '" .. tostring(k) .. "' (name)", 2) end
    end
  end
  return setmetatable({ name = name, stocks = {} }, Campaign)
end

-- c:stock(key, body [, {state = "running" | "paused", stock_id = }]) -> c
-- body: the create-stock table (literal, or built with wechatpay.favor)
function Campaign:stock(key, body, opts)
  if getmetatable(self) ~= Campaign then error("campaign: call it as c:stock(key, body)", 2) end
  if type(key) ~= "string" or key == "" then error("c:stock: the key must be a non-empty string", 2) end
  if self.stocks[key] ~= nil then error("c:stock: stock '" .. key .. "' is declared twice", 2) end
  if type(body) ~= "table" then error("c:stock: stock '" .. key .. "': the body must be a table, got " .. type(body), 2) end
  if opts ~= nil and type(opts) ~= "table" then error("c:stock: options must be a table", 2) end
  local entry = { json = body }
  for k, v in pairs(opts or {}) do
    if k ~= "state" and k ~= "stock_id" then
      error("c:stock: unknown option '" .. tostring(k) .. "' (state, stock_id)", 2)
    end
    entry[k] = v
  end
  local info = debug.getinfo(2, "Sl")
  calls = calls + 1
  lines[entry] = { source = info.source, line = info.currentline, seq = calls }
  self.stocks[key] = entry
  return self
end

-- c:send(name, stock_key, users_file [, {key = column}]) -> c: a send of
-- the stock's coupons to the users of a CSV file (relative to the campaign
-- file's folder), which quan apply runs once the stock runs
function Campaign:send(name, stock, users, opts)
  if getmetatable(self) ~= Campaign then error("campaign: call it as c:send(name, stock, users)", 2) end
  if type(name) ~= "string" or name == "" then error("c:send: the name must be a non-empty string", 2) end
  self.sends = self.sends or {}
  if self.sends[name] ~= nil then error("c:send: send '" .. name .. "' is declared twice", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("c:send: options must be a table", 2) end
  local entry = { stock = stock, users = users }
  for k, v in pairs(opts or {}) do
    if k ~= "key" then error("c:send: unknown option '" .. tostring(k) .. "' (key)", 2) end
    entry[k] = v
  end
  self.sends[name] = entry
  return self
end

-- c:handler(fn) -> c: the notification handler (`notifications.handler`)
-- quan serve CAMPAIGN.lua runs on each COUPON.USE event it stores
function Campaign:handler(handler)
  if getmetatable(self) ~= Campaign then error("campaign: call it as c:handler(fn)", 2) end
  if type(handler) ~= "function" then error("c:handler: the handler must be a function", 2) end
  self.notifications = { handler = handler }
  return self
end

-- ---------------------------------------------------------------------------
-- reading a declaration

-- is_declaration(v) -> true for what a campaign file returns: a campaign,
-- or a table with `stocks` or a string `name` (then its problems, a
-- misspelt field too, are the campaign's to report)
function M.is_declaration(v)
  return type(v) == "table" and (getmetatable(v) == Campaign or v.stocks ~= nil or type(v.name) == "string")
end

-- plain(v, seen) -> a deep copy without metatables (a favor.stock keeps its
-- methods in one); nil and a message for a cycle
local function plain(v, path, open)
  if type(v) ~= "table" then return v end
  open = open or {}
  if open[v] then return nil, path .. " refers back to itself" end
  open[v] = true
  local r = {}
  for k, x in pairs(v) do
    local c, why = plain(x, path .. "." .. tostring(k), open)
    if why then return nil, why end
    r[k] = c
  end
  open[v] = nil
  return r
end

-- key_lines(text) -> function(key) -> the line of `key =` / `["key"] =`
-- inside the file's `stocks` table, nil when not written literally
local function key_lines(text)
  if not text then return function() return nil end end
  local list, from = {}, nil
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    list[n] = line
    if not from and line:find("stocks%s*=") then from = n end
  end
  return function(key)
    local escaped = key:gsub("%p", "%%%0")
    local bare = "^%s*" .. escaped .. "%s*="
    local quoted = "%[%s*[\"']" .. escaped .. "[\"']%s*%]%s*="
    for i = from or 1, n do
      local l = list[i]
      if l:find(quoted) or (key:find("^[%a_][%w_]*$") and l:find(bare)) then return i end
    end
    return nil
  end
end

local read_text = require("quan.path").read

local function display(path)
  return (path:gsub("^%./", ""))
end

-- shown(k) -> 'k' for a message: control characters, and the bytes of text
-- that is not UTF-8, as Lua escapes (\10, \255)
local function shown(k)
  local bytes = utf8.len(k) and "%c" or "[%c\128-\255]"
  return "'" .. k:gsub(bytes, function(c) return "\\" .. c:byte() end) .. "'"
end

-- valid_key(k) -> true | nil, why (naming the key)
local function valid_key(k)
  if type(k) ~= "string" then return nil, "a stock's key must be a string, got " .. type(k) .. " " .. tostring(k) end
  if k == "" then return nil, "a stock's key must not be empty" end
  if #k > 64 then return nil, sformat("a stock's key is at most 64 bytes, got %d: %s", #k, shown(k)) end
  if not utf8.len(k) or k:find("[%c%s]") then return nil, "a stock's key must be UTF-8 text without spaces, got " .. shown(k) end
  return true
end

local function did_you_mean(word, known)
  local names = {}
  for k in pairs(known) do names[#names + 1] = k end
  table.sort(names)
  local best = require("quan.suggest").closest(word, names)
  if best then return " (did you mean '" .. best .. "'?)" end
  return ""
end

local function names_of(set)
  local t = {}
  for k in pairs(set) do t[#t + 1] = k end
  table.sort(t)
  return table.concat(t, ", ")
end

-- declaration(value, path) -> declaration | nil, problems
-- value: what the campaign file returned; path: the file (for lines and messages)
function M.declaration(value, path)
  local file = display(path)
  local problems = {}
  local function problem(where, key, fmt, ...)
    problems[#problems + 1] = { where = where or file, key = key, message = sformat(fmt, ...) }
  end
  if type(value) ~= "table" then
    problem(nil, nil, "a campaign file returns a table { name = ..., stocks = { ... } }, this one returned %s",
      value == nil and "nothing" or type(value))
    return nil, problems
  end
  for k in pairs(value) do
    if not M.TOP[k] then
      problem(nil, nil, "unknown field '%s' in the campaign%s (fields: %s)", tostring(k),
        type(k) == "string" and did_you_mean(k, M.TOP) or "", names_of(M.TOP))
    end
  end
  local name = value.name
  if type(name) ~= "string" or name == "" then
    problem(nil, nil, "the campaign's name must be a non-empty string, got %s", tostring(name))
  elseif #name > 64 or not utf8.len(name) or name:find("%c") then
    problem(nil, nil, "the campaign's name must be UTF-8 text of at most 64 bytes without control characters")
  end
  if type(value.stocks) ~= "table" then
    problem(nil, nil, "'stocks' must be a table { key = { state = ..., json = {...} } }, got %s", type(value.stocks))
    return nil, problems
  end
  local line_of = key_lines(read_text(path))
  local decl = { name = name, file = file, path = path, stocks = {}, by_key = {}, sends = {} }
  for key, e in pairs(value.stocks) do
    local ok, why = valid_key(key)
    if not ok then
      problem(nil, nil, "%s", why)
    else
      local recorded = type(e) == "table" and lines[e]
      local line = recorded and recorded.line or line_of(key)
      local where = line and (file .. ":" .. line) or file
      local entry = { key = key, line = line, where = where, seq = recorded and recorded.seq }
      if type(e) ~= "table" then
        problem(where, key, "must be a table { state = \"running\", json = {...} }, got %s", type(e))
      else
        local body = e.json
        if body == nil and (e.stock_name ~= nil or getmetatable(e) ~= nil) then
          body, e = e, {}                       -- the create-stock table itself: state running
        end
        for k in pairs(e) do
          if not M.ENTRY[k] then
            problem(where, key, "unknown field '%s'%s (fields: %s)", tostring(k),
              type(k) == "string" and did_you_mean(k, M.ENTRY) or "", names_of(M.ENTRY))
          end
        end
        local state = e.state == nil and "running" or e.state
        if not M.STATES[state] then
          problem(where, key, "state must be \"running\" or \"paused\", got %s", tostring(state))
        end
        if e.stock_id ~= nil and (type(e.stock_id) ~= "string" or not e.stock_id:find("^%d+$")) then
          problem(where, key, "stock_id must be a stock id (digits, as a string), got %s", tostring(e.stock_id))
        end
        if type(body) ~= "table" then
          problem(where, key, "json must be the create-stock table, got %s", type(body))
        else
          local copy, cycle = plain(body, "json")
          if not copy then
            problem(where, key, "%s", cycle)
          else
            local eok, eerr = pcall(json.encode, copy)
            if not eok then
              problem(where, key, "json: %s", tostring(eerr):gsub("^.-json: ", ""))
            else
              entry.json, entry.state, entry.stock_id = copy, state, e.stock_id
              decl.stocks[#decl.stocks + 1] = entry
              decl.by_key[key] = entry
            end
          end
        end
      end
    end
  end
  -- declared order: by line where known, then (a loop's c:stock calls
  -- share a line) by the order of the calls, then by key
  table.sort(decl.stocks, function(a, b)
    if (a.line or math.huge) ~= (b.line or math.huge) then return (a.line or math.huge) < (b.line or math.huge) end
    if (a.seq or 0) ~= (b.seq or 0) then return (a.seq or 0) < (b.seq or 0) end
    return a.key < b.key
  end)
  -- places for what later commands do with a campaign: sends and the handler
  if value.sends ~= nil then
    if type(value.sends) ~= "table" then
      problem(nil, nil, "'sends' must be a table { name = { stock = KEY, users = FILE } }, got %s", type(value.sends))
    else
      for sname, s in pairs(value.sends) do
        local line = line_of(tostring(sname))
        local where = line and (file .. ":" .. line) or file
        if type(sname) ~= "string" or sname == "" then
          problem(where, nil, "a send's name must be a non-empty string")
        elseif type(s) ~= "table" then
          problem(where, nil, "send '%s' must be a table { stock = KEY, users = FILE }", sname)
        else
          for k in pairs(s) do
            if not M.SEND[k] then problem(where, nil, "send '%s': unknown field '%s' (%s)", sname, tostring(k), names_of(M.SEND)) end
          end
          if type(s.stock) ~= "string" or not (value.stocks[s.stock] ~= nil) then
            problem(where, nil, "send '%s': stock must name a declared stock's key, got %s", sname, tostring(s.stock))
          end
          if type(s.users) ~= "string" or s.users == "" then
            problem(where, nil, "send '%s': users must be the path of the users' file", sname)
          end
          if s.key ~= nil and (type(s.key) ~= "string" or s.key == "") then
            problem(where, nil, "send '%s': key must be the name of the users' file column", sname)
          end
          decl.sends[#decl.sends + 1] = { name = sname, stock = s.stock, users = s.users, key = s.key, where = where }
        end
      end
      table.sort(decl.sends, function(a, b) return a.name < b.name end)
    end
  end
  if value.notifications ~= nil then
    local n = value.notifications
    if type(n) ~= "table" then
      problem(nil, nil, "'notifications' must be a table { handler = function(event) ... end }, got %s", type(n))
    else
      for k in pairs(n) do
        if not M.NOTIFICATIONS[k] then
          problem(nil, nil, "notifications: unknown field '%s' (%s)", tostring(k), names_of(M.NOTIFICATIONS))
        end
      end
      if n.handler ~= nil and type(n.handler) ~= "function" then
        problem(nil, nil, "notifications.handler must be a function, got %s", type(n.handler))
      end
      decl.notifications = { handler = n.handler }
    end
  end
  if #problems > 0 then
    local function rank(p) return tonumber((p.where or ""):match(":(%d+)$")) or 0, p.key or "", p.message end
    table.sort(problems, function(a, b)
      local la, ka, ma = rank(a)
      local lb, kb, mb = rank(b)
      if la ~= lb then return la < lb end
      if ka ~= kb then return ka < kb end
      return ma < mb
    end)
    return nil, problems
  end
  return decl
end

-- load(path) -> declaration | nil, problems: runs the campaign file (a Lua
-- chunk with the usual globals; it may require modules) and reads what it
-- returns. A file that fails to load or raises is one problem, its message
-- naming the line.
function M.load(path)
  if type(path) ~= "string" then error("campaign.load: path must be a string", 2) end
  local chunk, lerr = loadfile(path, "t")
  if not chunk then -- "path:line: ..." already, but for a binary chunk (luac's output), which 't' refuses
    lerr = tostring(lerr)
    if not lerr:find(path, 1, true) then lerr = display(path) .. ": " .. lerr .. " (a campaign file is Lua text)" end
    return nil, { { message = lerr } }
  end
  local qos = require "quan.os"
  -- os.exit while the file runs would end the command with the file's code
  -- (plan's 0: "nothing to do") before anything was read: it raises instead
  local exit = os.exit
  local restore <close> = setmetatable({}, { __close = function() os.exit = exit end })
  os.exit = function(code)
    error(sformat("os.exit(%s) while the campaign file ran: a campaign file returns its declaration",
      code == nil and "" or tostring(code)), 2)
  end
  local ok, value = xpcall(chunk, function(e)
    if qos.is_interrupt(e) then return e end -- a Ctrl-C goes on as itself
    if type(e) == "table" and getmetatable(e) and getmetatable(e).__tostring then e = tostring(e) end
    return tostring(e)
  end)
  if not ok and qos.is_interrupt(value) then error(value, 0) end
  if not ok then
    -- an error raised at a line of the file names it; any other is the file's
    if not value:find("^" .. path:gsub("%p", "%%%0") .. ":%d+:") then value = display(path) .. ": " .. value end
    return nil, { { message = value } }
  end
  return M.declaration(value, path)
end

-- format_problems(problems) -> "file:line: stock 'key': message" lines
function M.format_problems(problems)
  local out = {}
  for _, p in ipairs(problems) do
    out[#out + 1] = (p.where and p.where .. ": " or "") .. (p.key and ("stock '" .. p.key .. "': ") or "") .. p.message
  end
  return table.concat(out, "\n")
end

return M
