-- quan.sandbox: `quan sandbox`, a local emulator of the WeChat Pay cash-coupon
-- API (v3/marketing/favor) on loopback HTTPS, and start{}, which runs one as
-- a child process for a script or a test. See docs/sandbox.md.
local M = {}

local qos = require "quan.os"
local files = require "quan.sandbox.files"
local util = require "quan.sandbox.util"

-- mkdir_p(path) -> true | nil, message, made: makes path and its missing
-- parents (0700); `made` lists the folders this call made, outermost
-- first, also when it fails half-way
local function mkdir_p(path)
  local made, acc = {}, path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    acc = acc .. "/" .. part
    if not qos.stat(acc) then -- (a file there fails at the next part, or below)
      local ok, err = qos.mkdir(acc, 448)
      if not ok then return nil, err, made end
      made[#made + 1] = acc
    end
  end
  local ok, err = qos.mkdir(path, 448) -- the path itself must be a folder
  if not ok then return nil, err, made end
  return true, nil, made
end

-- remove_tree(path) -> true | nil, message: removes path and, for a
-- directory, everything under it. os.remove takes a file, a symbolic link
-- (never what it points to) or an empty directory; a directory it cannot
-- take is emptied first.
local function remove_tree(path)
  local ok, err = os.remove(path)
  if ok then return true end
  local names = qos.list(path) -- a directory os.remove could not take: not empty
  if not names then
    if not qos.stat(path) then return true end -- not there (any more)
    return nil, err
  end
  for _, name in ipairs(names) do remove_tree(path .. "/" .. name) end
  return os.remove(path)
end

-- holds_only(dir, names) -> true when every entry of dir is in names
local function holds_only(dir, names)
  local entries = qos.list(dir)
  if not entries then return false end
  for _, name in ipairs(entries) do
    if not names[name] then return false end
  end
  return true
end

local qpath = require "quan.path"
local abspath = qpath.absolute

-- default_state() -> $QUAN_SANDBOX_STATE, else $XDG_DATA_HOME/quan/sandbox,
-- else ~/.local/share/quan/sandbox
function M.default_state()
  local env = os.getenv("QUAN_SANDBOX_STATE")
  if env and env ~= "" then return env end
  local xdg = os.getenv("XDG_DATA_HOME")
  if xdg and xdg ~= "" then return xdg .. "/quan/sandbox" end
  return (os.getenv("HOME") or ".") .. "/.local/share/quan/sandbox"
end

-- loopback(listen) -> host, port | nil, message: "127.x.y.z:port", each
-- part 0..255 in plain decimal (no leading zero, which some parsers read
-- as octal: what inet_pton takes), the port 0..65535 (0: any free port)
local function loopback(listen)
  local host, port = listen:match("^(%d+%.%d+%.%d+%.%d+):(%d+)$")
  if not host or not host:match("^127%.") then
    return nil, "--listen wants a loopback address and port, like 127.0.0.1:0, got '" .. listen .. "'"
  end
  for part in host:gmatch("%d+") do
    if #part > 3 or tonumber(part) > 255 or (#part > 1 and part:sub(1, 1) == "0") then
      return nil, "--listen: " .. host .. " is not an IPv4 address (each part 0..255, without leading zeros)"
    end
  end
  local digits = port:gsub("^0+(%d)", "%1")
  if #digits > 5 or tonumber(digits) > 65535 then
    return nil, "--listen: port " .. port .. " is out of range (0..65535)"
  end
  return host, tonumber(digits)
end

-- writable_dir_of(file) -> true | nil, message: whether a file can be
-- written next to `file` (files.write makes a temporary file there first)
local function writable_dir_of(file)
  local probe = ("%s.tmp.%d.probe"):format(file, qos.getpid())
  local f, err = io.open(probe, "wb")
  if not f then
    if err:sub(1, #probe + 2) == probe .. ": " then err = err:sub(#probe + 3) end -- the reason alone
    return nil, err
  end
  f:close()
  os.remove(probe)
  return true
end

-- Trace of what one start makes in the state directory, so that a start
-- that fails before serving can take it back.
local Made = {}
Made.__index = Made

-- Made.before(dir) -> the entries of dir now (none: it does not exist)
function Made.before(dir)
  local set = {}
  for _, name in ipairs(qos.list(dir) or {}) do set[name] = true end
  return setmetatable({dir = dir, existed = qos.stat(dir) ~= nil, entries = set, folders = {}}, Made)
end

-- made:undo(): removes the entries of dir that were not there before and,
-- when this start made dir, dir and the parents it made
function Made:undo()
  for _, name in ipairs(qos.list(self.dir) or {}) do
    if not self.entries[name] then remove_tree(self.dir .. "/" .. name) end
  end
  for i = #self.folders, 1, -1 do os.remove(self.folders[i]) end
end

-- check(o) -> checked values | nil, message, usage: every argument of
-- `quan sandbox`, checked before anything is made
local function check(o)
  local host, port = loopback(o.listen)
  if not host then return nil, port, true end
  local faults, ferr = util.parse_faults(o.faults)
  if not faults then return nil, ferr end
  local dir = abspath(o.state or M.default_state())
  local st = qos.stat(dir)
  -- --temporary removes the state at stop: only a new, empty directory
  -- named by --state (what start{} makes; its log may be there already)
  if o.temporary and not (o.state and (not st or holds_only(dir, {["sandbox.log"] = true}))) then
    return nil, "--temporary wants --state naming a new, empty directory (it is removed at stop); "
      .. dir .. " is not one"
  end
  if o.ready_file then
    local ok, rerr = qpath.replaceable(o.ready_file)
    if not ok then return nil, "--ready-file " .. rerr end
    ok, rerr = writable_dir_of(o.ready_file)
    if not ok then return nil, "--ready-file " .. o.ready_file .. " cannot be written (" .. tostring(rerr) .. ")" end
  end
  return {host = host, port = port, faults = faults, dir = dir}
end

-- prepare(dir, faults, key_mode) -> fresh: the identity files (made on
-- first start) and the schema, and the faults and key mode of this run (a
-- restart clears old faults; the business clock offset persists with the
-- state, a value out of its bounds put back). Raises on failure.
local function prepare(dir, faults, key_mode)
  local fresh = files.setup(dir)
  files.platform_certificate(dir) -- before the handlers read it
  local sqlite = require "quan.sqlite"
  local store = require "quan.sandbox.store"
  local cjson = require "cjson"
  local db, err = sqlite.open(dir .. "/sandbox.db")
  if not db then error(err, 0) end -- the file's fault: its message, not this line
  store.migrate(db)
  sqlite.check(db:transaction(function()
    local cur = cjson.decode(store.get_control(db))
    cur.faults = faults
    cur.key_mode = key_mode or files.DEFAULT_KEY_MODE
    for _, note in ipairs(require("quan.sandbox.control").repair(cur)) do
      io.stderr:write("quan sandbox: state ", dir, ": ", note, "\n")
    end
    store.set_control(db, cur)
  end))
  db:close()
  return fresh
end

-- main(o, arguments) -> exit status; the `quan sandbox` command (its options,
-- parsed: quan.cli's table; o.listen, o.state, o.faults, o.key_mode,
-- o.ready_file, o.temporary). `quan sandbox clock [TIME]`: arguments =
-- { "clock", TIME }.
-- Serves until SIGINT/SIGTERM or until the parent process dies. Every
-- argument is checked before anything is made: a bad address or fault
-- spec, and a --state or --ready-file that cannot be used, exit 2 with
-- nothing made. A sandbox that cannot start otherwise exits 1 (130 for a
-- Ctrl-C); a start that fails after making its state (a port in use) takes
-- back what it made when the state was new or --temporary.
function M.main(o, arguments)
  if arguments and arguments[1] ~= nil then -- `quan sandbox clock ...`: the business clock of a running one
    return require("quan.sandbox.clock").main(o, table.move(arguments, 2, #arguments, 1, {}), arguments[1])
  end
  local parent = qos.getppid() -- now: a parent that dies while we start still counts
  local c, why, usage = check(o)
  if not c then
    io.stderr:write("quan sandbox: ", why, "\n", usage and require("quan.cli").usage("sandbox") or "")
    return 2
  end
  local dir = c.dir
  local made = Made.before(dir)
  local ok, merr, folders = mkdir_p(dir)
  made.folders = folders
  if not ok then
    made:undo()
    io.stderr:write("quan sandbox: state directory ", dir, " cannot be made (", tostring(merr), ")\n")
    return o.state and 2 or 1 -- a state dir named by the user is a usage error
  end
  local lock, lerr, lcode = qos.lock(dir .. "/lock")
  if not lock then
    made:undo()
    io.stderr:write("quan sandbox: state ", dir, lcode == "busy" and " is in use by another sandbox (" or
      " cannot be used (", tostring(lerr), ")\n")
    return (lcode ~= "busy" and o.state) and 2 or 1
  end
  -- from here on, a failure before serving takes back what this start made
  -- in a new or temporary state
  local function take_back()
    lock:close()
    if o.temporary or not made.existed or next(made.entries) == nil then made:undo() end
  end
  local function fail(message)
    io.stderr:write("quan sandbox: ", message, "\n")
    take_back()
    return 1
  end
  local prepared, fresh = pcall(prepare, dir, c.faults, o.key_mode)
  if not prepared and qos.is_interrupt(fresh) then -- a Ctrl-C while the keys are made
    io.stderr:write("quan sandbox: interrupted before it served\n")
    take_back()
    return 130
  end
  if not prepared then return fail("state " .. dir .. " cannot be set up: " .. tostring(fresh)) end
  -- between waits, retry the notifications that are due (a failure there is
  -- logged, never fatal: the API goes on answering)
  local outbox = require("quan.sandbox.handler").outbox(dir)
  local server = require "quan.server"
  local srv, serr = server.start {handler = "quan.sandbox.handler", arg = dir, host = c.host, port = c.port,
    cert = "file://" .. dir .. "/server.pem", key = "file://" .. dir .. "/server.key.pem",
    workers = 32} -- a latency fault holds its worker: 32 keep a batch at concurrency 32 unthrottled
  if not srv then return fail(tostring(serr)) end
  local base_url = ("https://%s:%d"):format(c.host, srv:port())
  files.write(dir .. "/config.lua", files.config_text(dir, base_url, o.key_mode), 420)
  io.stdout:write(base_url, "\n")
  io.stdout:flush()
  io.stderr:write(("quan sandbox: %s state %s%s; config %s/config.lua; key mode %s%s\n"):format(base_url, dir,
    fresh and " (new)" or "", dir, o.key_mode or files.DEFAULT_KEY_MODE, o.faults and (", faults " .. o.faults) or ""))
  if o.ready_file then
    local written, werr = pcall(files.write, o.ready_file, base_url .. "\n")
    if not written then -- checked before starting, so only a change since then
      io.stderr:write("quan sandbox: --ready-file ", o.ready_file, " cannot be written (", tostring(werr), ")\n")
      srv:stop()
      lock:close()
      if o.temporary then remove_tree(dir) end
      return 2
    end
  end
  local why_stopped, detail = srv:wait {parent = parent, every = 0.1, tick = function()
    local tick_ok, err = pcall(outbox)
    if not tick_ok then io.stderr:write("quan sandbox: notification retries: ", tostring(err), "\n") end
  end}
  srv:stop()
  if o.ready_file then os.remove(o.ready_file) end
  lock:close()
  -- a temporary state (start{} without a state dir) goes with the sandbox,
  -- even when the process that started it was killed and cannot remove it
  if o.temporary then remove_tree(dir) end
  io.stderr:write("quan sandbox: stopped (", why_stopped, detail and (" " .. detail) or "", ")\n")
  return 0
end

-- ---- the embedded default: a sandbox in a child process ----

local Handle = {}
Handle.__index = Handle

-- handle:stop() -> stops the child (SIGTERM, then SIGKILL after 10 s) and
-- removes a temporary state dir. Idempotent.
function Handle:stop()
  if self.pid then
    qos.kill(self.pid, "TERM")
    local deadline = qos.now() + 10 -- a notification retry in progress may take 5 s
    while not qos.wait(self.pid, true) do
      if qos.now() > deadline then
        qos.kill(self.pid, "KILL")
        qos.wait(self.pid)
        break
      end
      qos.sleep(0.02)
    end
    self.pid = nil
  end
  if self.temporary and self.state then
    remove_tree(self.state)
    self.temporary = false
  end
end
Handle.__close = Handle.stop
Handle.__gc = Handle.stop

-- start{state = dir|nil, faults = spec|nil, key_mode = "public_key"|
-- "certificate"|"switching"|nil, timeout = 30}
--   -> handle {base_url, state, config_path, profile = "sandbox", pid, mchid,
--      appid, serial, key_id, key_mode} | nil, message
-- state nil: a fresh temporary dir, removed by handle:stop().
local START_OPTIONS = {state = true, faults = true, key_mode = true, timeout = true}
function M.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("quan.sandbox.start: options table expected", 2) end
  for k in pairs(opts) do
    if not START_OPTIONS[k] then
      error("quan.sandbox.start: unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  local mode = opts.key_mode or files.DEFAULT_KEY_MODE
  local known_mode = false
  for _, m in ipairs(files.KEY_MODES) do known_mode = known_mode or m == mode end
  if not known_mode then
    error("quan.sandbox.start: key_mode must be " .. table.concat(files.KEY_MODES, ", ") .. " (got "
      .. tostring(mode) .. ")", 2)
  end
  local dir, temporary = opts.state, false
  if dir == nil then
    dir = assert(qos.mkdtemp("/tmp/quan-sandbox-"))
    temporary = true
  else
    dir = abspath(dir)
    mkdir_p(dir) -- where the log goes; the sandbox reports a folder it cannot make
  end
  local ready = dir .. "/ready." .. qos.getpid()
  os.remove(ready)
  local argv = {qos.exe(), "sandbox", "--state", dir, "--listen", "127.0.0.1:0", "--ready-file", ready}
  if opts.faults then
    argv[#argv + 1] = "--faults"
    argv[#argv + 1] = opts.faults
  end
  argv[#argv + 1] = "--key-mode"
  argv[#argv + 1] = mode
  if temporary then argv[#argv + 1] = "--temporary" end
  local pid, err = qos.spawn(argv, {stdout = "/dev/null", stderr = dir .. "/sandbox.log", detach = true})
  if not pid then
    if temporary then remove_tree(dir) end
    return nil, "sandbox: cannot start: " .. tostring(err)
  end
  local h = setmetatable({pid = pid, state = dir, temporary = temporary, profile = "sandbox",
    config_path = dir .. "/config.lua", key_mode = mode}, Handle)
  local deadline = qos.now() + (opts.timeout or 30)
  while true do
    local f = io.open(ready, "rb")
    local url = f and f:read("l")
    if f then f:close() end
    if url and url:match("^https://") then
      h.base_url = url
      break
    end
    local how, code = qos.wait(pid, true)
    if how then
      h.pid = nil
      local text = require("quan.path").read(dir .. "/sandbox.log") or ""
      h:stop()
      return nil, ("sandbox: exited (%s %s) before it was ready: %s"):format(how, tostring(code), text)
    end
    if qos.now() > deadline then
      h:stop()
      return nil, "sandbox: not ready after " .. (opts.timeout or 30) .. " s"
    end
    qos.sleep(0.02)
  end
  local id = files.identity(dir)
  h.mchid, h.appid, h.serial, h.key_id = id.mchid, id.appid, id.serial, id.key_id
  return h
end

return M
