-- quan.repl: the interactive loop, with lua.c's semantics: a line is first
-- tried as `return <line>`, its values printed; `=expr` works; an incomplete
-- chunk continues on the next line; _PROMPT and _PROMPT2 are honoured.
--
-- On a terminal it edits lines with quan.edit (libedit), keeps history in
-- the user's state dir, completes names, API path segments, verbs and body
-- fields on Tab, and pretty-prints values. Off a terminal (piped input) it
-- reads plain lines with io.read, so scripts can drive it.
--
-- The REPL's globals (wx, wechatpay, favor, json, await, help, curl) are
-- made on first use, so startup loads none of the client.
local M = {}

local pretty = require "quan.pretty"
local qos = require "quan.os"

local edit -- quan.edit, only on a terminal

-- ---- paths ---------------------------------------------------------------

-- history_path() -> $XDG_STATE_HOME/quan/history or ~/.local/state/quan/history
function M.history_path()
  local base = os.getenv("XDG_STATE_HOME")
  if not base or base == "" then
    local home = os.getenv("HOME")
    if not home or home == "" then return nil end
    base = home .. "/.local/state"
  end
  return base .. "/quan/history"
end

local function mkdir_p(dir)
  local path = dir:sub(1, 1) == "/" and "" or "."
  for part in dir:gmatch("[^/]+") do
    path = path .. "/" .. part
    qos.mkdir(path, tonumber("700", 8)) -- exists already: fine
  end
end

-- ---- the active profile --------------------------------------------------

-- profile_name() -> the name the prompt shows, without building a client:
-- the profile wechatpay.client() would choose (wechatpay.config's rules:
-- $QUAN_PROFILE, the config file's default, its only profile), "sandbox"
-- with QUAN_SANDBOX=1 or when no profile is configured.
function M.profile_name()
  local client = rawget(_G, "wx")
  if type(client) == "table" then
    local name = rawget(client, "profile_name") -- plain fields only: no API node
    if type(name) == "string" then return name end
  end
  local sb = os.getenv("QUAN_SANDBOX")
  if sb and sb ~= "" and sb ~= "0" then return "sandbox" end
  local ok, name = pcall(function()
    local config = require "wechatpay.config"
    local path = config.find()
    if not path then return nil end
    return config.choose(config.read(path), nil, path)
  end)
  if ok and type(name) == "string" then return name end
  if not ok then
    local p = os.getenv("QUAN_PROFILE") -- a broken config: wx will say why
    if p and p ~= "" then return p end
    return "?"
  end
  return "sandbox"
end

-- ---- promises and errors -------------------------------------------------

-- is_promise(v) -> true for an object with :next and :wait (quan.async)
function M.is_promise(v)
  if type(v) ~= "table" then return false end
  local ok, yes = pcall(function()
    return type(v.wait) == "function" and type(v.next) == "function"
  end)
  return ok and yes
end

-- cancel_all(p): cancels p and what it waits for as typed: the promise a
-- :next or :catch hangs on, the members of async.all (cancel() leaves a
-- settled promise as it is: a rejection stays one)
local function cancel_all(p, seen)
  if type(p) ~= "table" or seen[p] or type(p.cancel) ~= "function" then return end
  seen[p] = true
  pcall(p.cancel, p, "interrupted")
  cancel_all(rawget(p, "source"), seen)
  local list = rawget(p, "sources")
  if type(list) == "table" then
    for i = 1, #list do cancel_all(list[i], seen) end
  end
end

-- wait(p) -> p's values (raises its rejection). An error that ends the wait
-- while p is still pending (Ctrl-C) cancels p and what it waits for: an
-- interrupted postAsync is not sent later, as an interrupted post is not.
local function wait(p)
  local r = table.pack(pcall(p.wait, p))
  if r[1] then return table.unpack(r, 2, r.n) end
  cancel_all(p, {})
  error(r[2], 0)
end

-- await(p) -> p's resolved values (raises its rejection); other values pass
function M.await(p, ...)
  if M.is_promise(p) then return wait(p) end
  return p, ...
end

local function field(t, k)
  local ok, v = pcall(function() return t[k] end)
  if ok then return v end
end

-- describe_error(e [, color]) -> text: an API error shows its code, message,
-- request id and detail; an error table with __tostring prints through it.
-- A validation error's message already lists its findings (its detail), and
-- its code repeats its kind: each is shown once.
function M.describe_error(e, color)
  local red = function(s) return pretty.paint(color, "err", s) end
  if type(e) == "table" and (field(e, "kind") or field(e, "code")) then
    local kind, status = field(e, "kind"), field(e, "status")
    local head = red("error") .. (kind and (" (" .. tostring(kind) .. (status and (" " .. tostring(status)) or "") .. ")") or "")
    local code, msg = field(e, "code"), field(e, "message")
    local parts = {}
    if code and code ~= kind then parts[#parts + 1] = tostring(code) end
    if msg then parts[#parts + 1] = tostring(msg) end
    if #parts == 0 then
      local ok, s = pcall(tostring, e)
      parts[1] = ok and s or "?"
    end
    local lines = { head .. ": " .. table.concat(parts, ": ") }
    local rid = field(e, "request_id")
    if rid then lines[#lines + 1] = "  request id: " .. tostring(rid) end
    local detail = field(e, "detail")
    if detail ~= nil and kind ~= "validation" then
      lines[#lines + 1] = "  detail: " .. pretty.format(detail, { color = color }):gsub("\n", "\n  ")
    end
    return table.concat(lines, "\n")
  end
  if type(e) == "string" then return red("error") .. ": " .. e end
  local ok, s = pcall(tostring, e)
  if ok and type(s) == "string" and not s:match("^table: 0x") then
    return red("error") .. ": " .. s
  end
  return red("error") .. ": " .. pretty.format(e, { color = color })
end

-- ---- compiling -----------------------------------------------------------

local function incomplete(msg)
  return msg ~= nil and msg:sub(-#"<eof>") == "<eof>"
end

-- compile(src) -> function | nil, message, incomplete?
-- A line is first tried as an expression whose values are printed.
function M.compile(src)
  if src:sub(1, 1) == "=" then src = "return " .. src:sub(2) end -- 5.2 style
  local f = load("return " .. src .. ";", "=stdin")
  if f then return f end
  local g, err = load(src, "=stdin")
  if g then return g end
  return nil, err, incomplete(err)
end

-- ---- the REPL's globals --------------------------------------------------

-- Docs of the REPL's own helpers; help() also reads M.docs for any function
-- another module registers: M.docs[fn] = "signature\n\ntext".
M.docs = setmetatable({}, { __mode = "k" })

local lazy = {}

lazy.wechatpay = function() return require "wechatpay" end
lazy.favor = function() return require "wechatpay.favor" end
lazy.json = function() return require "cjson" end
lazy.wx = function()
  local wechatpay = require "wechatpay"
  local client, err = wechatpay.client(os.getenv("QUAN_PROFILE"))
  if not client then error(err, 0) end
  return client
end
lazy.help = function() return function(...) return require("quan.repl.help").help(...) end end
lazy.curl = function() return M.curl end

-- the last result or error printed at the prompt: what curl() copies
local last

-- curl([x, ...]): prints a request as a curl command, signed anew (the
-- client's copy as curl): curl() the last request whose answer or error
-- was printed, curl(res) / curl(err) the request of a result or an error,
-- curl(pager) its last page, curl(node, verb[, opts]) a request not sent
function M.curl(x, ...)
  local client = require "wechatpay.client"
  local text, why
  if x == nil then
    if last == nil then error("curl: no request yet (make one, or give curl a result, an error or a node)", 2) end
    x = last
  end
  if pretty.is_pager(x) then x = rawget(x, "last") or error("curl: the pager has read no page yet", 2) end
  if getmetatable(x) == client.Node then
    text, why = x:curl(...)
  elseif type(x) == "table" then
    text, why = client.copy_of(x)
  else
    error("curl: expected a result, an error, a pager or an API node, got " .. type(x), 2)
  end
  if not text then error(why, 0) end
  io.stdout:write(text)
  io.stdout:flush()
end
-- install_globals(G): wx, wechatpay, favor, json and help appear on first
-- use (through __index on the globals table); await is plain.
function M.install_globals(G)
  rawset(G, "await", M.await)
  M.docs[M.await] = "await(p) -> values\n\nWaits for a promise (an ...Async call) and returns its values; raises its error."
  local mt = getmetatable(G) or {}
  local prev = mt.__index
  mt.__index = function(t, k)
    local make = lazy[k]
    if make then
      local v = make()
      rawset(t, k, v)
      return v
    end
    if type(prev) == "function" then return prev(t, k) end
    if type(prev) == "table" then return prev[k] end
  end
  setmetatable(G, mt)
end

-- is_lazy(G, name) -> true when name is a REPL global not made yet
function M.is_lazy(G, name)
  return lazy[name] ~= nil and rawget(G, name) == nil
end

-- lazy_names() -> names of the globals made on first use
function M.lazy_names()
  local names = {}
  for k in pairs(lazy) do names[#names + 1] = k end
  table.sort(names)
  return names
end

-- ---- printing ------------------------------------------------------------

local color = false

-- an error table (wechatpay's, or any with kind/code and message)
local function is_error(v)
  if type(v) ~= "table" then return false end
  local errs = package.loaded["wechatpay.errors"]
  if type(errs) == "table" and type(errs.is) == "function" and errs.is(v) then return true end
  return rawget(v, "message") ~= nil and (rawget(v, "kind") ~= nil or rawget(v, "code") ~= nil)
end

local print_error

-- remember(v): a result, an error or a pager printed is what curl() copies
local function remember_request(v)
  if pretty.is_response(v) or pretty.is_pager(v) or is_error(v) then last = v end
end

local function print_values(n, ...)
  if n == 0 then return end
  for i = 1, n do remember_request((select(i, ...))) end
  -- `nil, err` from a call that failed prints as the error alone
  if n == 2 and (...) == nil and is_error((select(2, ...))) then
    return print_error((select(2, ...)))
  end
  -- a client result followed by its nil error prints alone
  if n == 2 and (select(2, ...)) == nil and pretty.is_response((...)) then n = 1 end
  local width = pretty.term_width()
  local parts = {}
  for i = 1, n do
    parts[i] = pretty.format((select(i, ...)), { color = color, width = width })
  end
  io.stdout:write(table.concat(parts, "\t"), "\n")
  io.stdout:flush()
end

function print_error(e)
  remember_request(e)
  io.stderr:write(M.describe_error(e, color), "\n")
  io.stderr:flush()
end

local function msgh(e)
  if type(e) == "string" and os.getenv("QUAN_DEBUG") == "1" then
    return debug.traceback(e, 2)
  end
  return e
end

-- a promise among the values is replaced by what it resolves to; a pager
-- reads its first page (printed as its count and first rows)
local function settle(n, ...)
  local vals = table.pack(...)
  for i = 1, n do
    if pretty.is_pager(vals[i]) and rawget(vals[i], "pages") == 0 then
      local ok, err = vals[i]:peek()
      if not ok then error(err, 0) end
    end
    if M.is_promise(vals[i]) then
      local r = table.pack(wait(vals[i]))
      if n == 1 then return r.n, table.unpack(r, 1, r.n) end
      vals[i] = r[1]
    end
  end
  return n, table.unpack(vals, 1, n)
end

-- run(f): the chunk is called by xpcall itself, never from a Lua function
-- here: a line like `favor.yuan "x"` is a tail call, and an error raised at
-- its caller's level then names no file (as in lua.c), never this one.
local function run(f)
  local call = edit and edit.xpcall or require("quan.edit").xpcall
  local res = table.pack(call(f, msgh))
  if res[1] then
    res = table.pack(call(settle, msgh, res.n - 1, table.unpack(res, 2, res.n)))
  end
  if not res[1] then
    print_error(res[2])
  else
    print_values(table.unpack(res, 2, res.n))
  end
end

-- ---- reading -------------------------------------------------------------

local function prompt(first)
  local p = rawget(_G, first and "_PROMPT" or "_PROMPT2")
  if p ~= nil then return tostring(p) end
  if first then return "quan[" .. M.profile_name() .. "]> " end
  return ">> "
end

local history
local function read_line(first)
  if edit then
    local line, why = edit.readline(prompt(first))
    if line == false then return false, why end
    return line
  end
  io.stdout:write(prompt(first))
  io.stdout:flush()
  return io.read("l")
end

local function remember(src)
  if not edit or not src:find("%S") then return end
  -- a chunk typed on several lines is recalled as one when that reads the same
  local joined = src:gsub("\n%s*", " ")
  if joined ~= src and load(joined, "=stdin") == nil and load("return " .. joined, "=stdin") == nil then
    joined = src
  end
  edit.add_history(joined)
  if history then edit.save_history(history) end
end

-- read_chunk() -> function | false (cancelled) | nil (EOF)
local function read_chunk()
  local line, why = read_line(true)
  if line == false then return false, why end
  if line == nil then return nil end
  local src = line
  local f, err, more = M.compile(src)
  while not f and more do
    line, why = read_line(false)
    if line == false then return false, why end
    if line == nil then break end
    src = src .. "\n" .. line
    f, err, more = M.compile(src)
  end
  remember(src)
  if not f then
    print_error(err)
    return false
  end
  return f
end

-- main() -> exit status. Ctrl-C cancels the line or the call in flight;
-- Ctrl-D (EOF) leaves. The `quan repl` command (quan.cli's table: it takes
-- no arguments) and what `quan` alone and `quan -i` start.
function M.main()
  local tty = qos.isatty(0)
  if tty then
    edit = require "quan.edit"
    history = M.history_path()
    if history then
      mkdir_p(history:match("^(.*)/[^/]*$"))
      edit.load_history(history)
    end
    edit.set_completer(function(word, before)
      return require("quan.repl.complete").candidates(word, before, _G)
    end)
  end
  color = tty and pretty.use_color(1)
  M.install_globals(_G)
  local function step()
    local f = read_chunk()
    if f == nil then return "eof" end
    if f then run(f) end
  end
  local function loop()
    while true do
      local ok, r = pcall(step)
      if not ok then
        print_error(r) -- a Ctrl-C between reading and running, or printing
      elseif r == "eof" then
        io.stdout:write("\n")
        io.stdout:flush()
        return 0
      end
    end
  end
  -- the whole loop under quan.edit's SIGINT handling, so that a Ctrl-C
  -- between two calls is an error here, never the default action
  local ok, code = require("quan.edit").xpcall(loop, debug.traceback)
  if not ok then
    io.stderr:write(tostring(code), "\n")
    return 1
  end
  return code
end

return M
