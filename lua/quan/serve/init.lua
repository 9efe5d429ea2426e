-- quan.serve: `quan serve`, the receiver of WeChat Pay's notifications
-- (docs/notifications.md).
--
--   quan serve [options] [CAMPAIGN.lua]       receive: verify, store, handle
--   quan serve list [options] [CAMPAIGN.lua]  the pending (or --all) events
--   quan serve replay [options] [CAMPAIGN.lua] [EVENT_ID...]
--                                             make events due for the handler now
--
-- The receiver: quan.server answers on its workers (quan.serve.receiver:
-- verify, then store before the 200); the main thread runs the handler on
-- the stored events (quan.serve.dispatch) between its waits, and stops on
-- SIGTERM or SIGINT: it stops accepting, answers what is under way, lets a
-- running handler call finish, and exits 0. Exit status: 0 stopped, 1 could
-- not start, 2 usage, 6 another receiver holds the store.
local M = {}

local qos = require "quan.os"
local cjson = require "cjson"
local storemod = require "quan.serve.store"

M.EXIT = { ok = 0, failed = 1, usage = 2, busy = 6 }
M.DEFAULT_LISTEN = "127.0.0.1:8080"
M.DEFAULT_WORKERS = 8
M.STORE_NAME = "notifications" -- its name in the campaign state's stores

local PROGRAM = "quan serve"

local function say(program, ...)
  io.stderr:write(program, ": ", ...)
  io.stderr:write("\n")
  io.stderr:flush()
end

-- usage(message[, program]) -> 2, after the message and the command's usage
local function usage(message, program)
  program = program or PROGRAM
  io.stderr:write(program, ": ", message, "\n", require("quan.cli").usage((program:gsub("^quan ", ""))))
  io.stderr:flush()
  return M.EXIT.usage
end

local qpath = require "quan.path"
local abspath = qpath.absolute

local function readable(path)
  local f, err = io.open(path, "rb")
  if f then f:close() return true end
  return nil, err
end

-- listen_address(text, allow_remote) -> host, port | nil, message: an IPv4
-- address (a loopback one, 127.x.y.z, unless allow_remote) and a port
-- (0: any free one); "localhost" is 127.0.0.1
function M.listen_address(text, allow_remote)
  local host, port = text:match("^([%w%.]+):(%d+)$")
  if host == "localhost" then host = "127.0.0.1" end
  if not host or not host:match("^%d+%.%d+%.%d+%.%d+$") then
    return nil, "--listen wants an IPv4 address and a port, like 127.0.0.1:8080, got '" .. text .. "'"
  end
  for octet in host:gmatch("%d+") do
    if tonumber(octet) > 255 then return nil, "--listen: " .. host .. " is not an IPv4 address (each part 0..255)" end
  end
  port = tonumber(port)
  if port > 65535 then return nil, "--listen: port " .. port .. " is out of range (0..65535)" end
  if not host:match("^127%.") and not allow_remote then
    return nil, "--listen " .. text .. " is not a loopback address: the receiver listens on loopback behind a "
      .. "reverse proxy; give --allow-remote to listen on " .. host
  end
  return host, port
end

-- store_path(o, campaign) -> path | nil, message: --store, else beside
-- the campaign file
local function store_path(o, campaign)
  if o.store then return o.store end
  if campaign then return campaign .. ".events" end
  return nil, "no store: give --store PATH, or a campaign file (its store is CAMPAIGN.lua.events)"
end

-- ---- the handler: a campaign's, or a script's ----

-- load_script(path) -> handler | nil, message: a Lua file returning
-- function(event), or a table with one as `handler`
local function load_script(path)
  local chunk, err = loadfile(path, "t")
  if not chunk then return nil, tostring(err) end
  local ok, value = xpcall(chunk, function(e)
    if qos.is_interrupt(e) then return e end
    return debug.traceback(tostring(e), 2)
  end)
  if not ok then
    if qos.is_interrupt(value) then error(value, 0) end
    return nil, value
  end
  if type(value) == "table" then value = value.handler end
  if type(value) ~= "function" then
    return nil, path .. ": a handler script returns function(event) ... end (or a table with one as `handler`), this "
      .. "one returned " .. type(value)
  end
  return value
end

-- ---- the profile ----

-- profile_client(name) -> client, name, nil, options of wechatpay.new |
-- nil, message, exit: the client of a
-- profile of the config file, which must hold apiv3_key and the platform's
-- keys (certs). Never a private sandbox: no one could reach it.
local function profile_client(name)
  local config = require "wechatpay.config"
  local truthy = os.getenv("QUAN_SANDBOX")
  if truthy and truthy ~= "" and truthy ~= "0" then
    return nil, "--sandbox starts a private sandbox, which delivers to no one; give the profile of a running "
      .. "sandbox instead (QUAN_CONFIG=DIR/config.lua, docs/notifications.md)", M.EXIT.usage
  end
  local ok, profile, chosen = pcall(config.load, name)
  if ok and not profile then
    local _, searched = config.find()
    return nil, "no profile configured (searched " .. table.concat(searched or {}, ", ") .. "): the receiver "
      .. "verifies and decrypts with a profile's certs and apiv3_key (docs/client.md, Profiles)", M.EXIT.failed
  end
  if not ok then return nil, tostring(profile), M.EXIT.failed end
  if profile.apiv3_key == nil then
    return nil, ("profile '%s' has no apiv3_key: notifications cannot be decrypted"):format(chosen), M.EXIT.failed
  end
  if type(profile.certs) ~= "table" or next(profile.certs) == nil then
    return nil, ("profile '%s' has no certs (the WeChat Pay public key or platform certificates): notifications "
      .. "cannot be verified"):format(chosen), M.EXIT.failed
  end
  local built, wx = pcall(require("wechatpay").client, chosen)
  if not built then
    if qos.is_interrupt(wx) then error(wx, 0) end
    return nil, tostring(wx), M.EXIT.failed
  end
  -- what the workers build their clients from: this profile as read here
  -- (secrets as file:// paths, as a config file gives them), so that they
  -- neither read the config file again nor announce it in the log
  local opts = {}
  for k in pairs(require("wechatpay.client").NEW_KEYS) do opts[k] = profile[k] end
  return wx, chosen, nil, opts
end

-- record_store(decl, o, wx, path, log): the store's path in the campaign's
-- state (stores), for quan report; a state busy with an apply is retried
-- for a few seconds. Not recording is a warning: receiving goes on.
local function record_store(decl, o, wx, path, log)
  local statemod = require "quan.campaign.state"
  local state_path = o.state or decl.path .. ".state"
  local expect = { campaign = decl.name, mchid = wx.mchid, api = statemod.api_of(wx.base_url) }
  local deadline = qos.now() + 5
  while true do
    local st, err, code = statemod.open(state_path, expect)
    if st then
      local ok, werr = pcall(st.record_store, st, M.STORE_NAME, path)
      st:close()
      if not ok then log("warning", { message = "the store is not recorded in " .. state_path .. ": " .. tostring(werr) }) end
      return
    end
    if code ~= "busy" or qos.now() > deadline then
      log("warning", { message = "the store is not recorded in the campaign's state: " .. tostring(err) })
      return
    end
    qos.sleep(0.2)
  end
end

-- ---- quan serve ----

local function receive(o, campaign_path)
  local logmod = require "quan.serve.log"
  local log = logmod.new(logmod.format(os.getenv("QUAN_LOG_FORMAT"), qos.isatty(2)))
  local host, port = M.listen_address(o.listen, o.allow_remote)
  if not host then return usage(port) end
  if (o.tls_cert == nil) ~= (o.tls_key == nil) then
    return usage("--tls-cert and --tls-key go together (the certificate chain and its private key)")
  end
  for _, k in ipairs { "tls_cert", "tls_key", "handler" } do
    if o[k] then
      local ok, err = readable(o[k])
      if not ok then return usage(("--%s %s cannot be read (%s)"):format(k:gsub("_", "-"), o[k], tostring(err))) end
    end
  end
  if o.tls_cert then -- checked here: the server's own refusal names no file
    local crypto = require "quan.crypto"
    local cert, cerr = crypto.certificate("file://" .. o.tls_cert)
    if not cert then return usage(("--tls-cert %s is not a PEM certificate (%s)"):format(o.tls_cert, tostring(cerr))) end
    local key, kerr = crypto.private_key("file://" .. o.tls_key)
    if not key then return usage(("--tls-key %s is not a PEM private key (%s)"):format(o.tls_key, tostring(kerr))) end
    if cert:public_key():pem_public() ~= key:pem_public() then
      return usage(("--tls-key %s is not the key of --tls-cert %s"):format(o.tls_key, o.tls_cert))
    end
  end
  if campaign_path and o.handler then
    return usage("a campaign file brings its handler (notifications.handler): give either, not both")
  end
  if campaign_path then
    local ok, err = readable(campaign_path)
    if not ok then return usage(("campaign file %s cannot be read (%s)"):format(campaign_path, tostring(err))) end
  end
  local path, perr = store_path(o, campaign_path)
  if not path then return usage(perr) end
  path = abspath(path)
  if o.ready_file then
    local ok, err = qpath.replaceable(o.ready_file)
    if not ok then return usage("--ready-file " .. err) end
    ok, err = qpath.write(o.ready_file, "")
    if not ok then return usage(("--ready-file %s cannot be written (%s)"):format(o.ready_file, tostring(err))) end
    os.remove(o.ready_file)
  end

  -- the handler
  local handler, decl, source
  if campaign_path then
    local problems
    decl, problems = require("quan.campaign").load(campaign_path)
    if not decl then
      say(PROGRAM, (require("quan.campaign").format_problems(problems):gsub("\n", "\n" .. PROGRAM .. ": ")))
      return M.EXIT.failed
    end
    handler = decl.notifications and decl.notifications.handler
    source = handler and ("campaign " .. decl.name) or nil -- (none declared: the start says null, as the warning does)
  elseif o.handler then
    local err
    handler, err = load_script(o.handler)
    if not handler then
      say(PROGRAM, "handler ", o.handler, ": ", err)
      return M.EXIT.failed
    end
    source = o.handler
  end

  local wx, chosen, exit, client_opts = profile_client(o.profile)
  if not wx then
    say(PROGRAM, chosen)
    return exit
  end
  local store, serr, scode = storemod.open(path, { mchid = wx.mchid })
  if not store then
    say(PROGRAM, serr)
    if scode == "busy" then return M.EXIT.busy end
    -- a --store named that cannot be used is the command line's mistake
    return o.store and M.EXIT.usage or M.EXIT.failed
  end
  if decl then record_store(decl, o, wx, path, log) end
  local resumed = store:resume(qos.time())

  local server = require "quan.server"
  local srv, err, code = server.start {
    handler = "quan.serve.receiver",
    arg = cjson.encode { store = path, client = client_opts, log_format = logmod.format(os.getenv("QUAN_LOG_FORMAT"),
      qos.isatty(2)) },
    host = host, port = port, workers = o.workers or M.DEFAULT_WORKERS,
    cert = o.tls_cert and ("file://" .. o.tls_cert), key = o.tls_key and ("file://" .. o.tls_key),
    max_body = require("quan.serve.receiver").MAX_BODY,
  }
  if not srv then
    store:close()
    say(PROGRAM, tostring(err))
    return code == "tls" and M.EXIT.usage or M.EXIT.failed
  end
  local url = ("%s://%s:%d"):format(o.tls_cert and "https" or "http", host, srv:port())
  io.stdout:write(url, "\n")
  io.stdout:flush()
  local counts = store:counts()
  log("start", { url = url, store = path, handler = source or cjson.null, profile = chosen, mchid = wx.mchid,
    workers = o.workers or M.DEFAULT_WORKERS, events = counts.events, pending = counts.pending, resumed = resumed,
    pid = qos.getpid() })
  if not handler then
    log("warning", { message = (decl and ("campaign " .. decl.name .. " declares no handler (notifications.handler, "
      .. "c:handler): ") or "no handler: ") .. "events are stored and stay pending until a receiver with a handler runs" })
  end
  if o.ready_file then
    local ok, werr = qpath.write(o.ready_file, url .. "\n")
    if not ok then
      srv:stop()
      store:close()
      say(PROGRAM, "--ready-file ", o.ready_file, " cannot be written (", tostring(werr), ")")
      return M.EXIT.usage
    end
  end

  local dispatcher = require("quan.serve.dispatch").new { store = store, handler = handler, log = log,
    retry_max = o.retry_max, timeout = o.handler_timeout }
  local last_checkpoint = qos.now()
  local why, detail = srv:wait { every = 0.05, tick = function()
    local ok, terr = pcall(function()
      dispatcher:run(0.25, function() return srv:signalled() ~= nil end) -- on SIGTERM, after the call under way
      if qos.now() - last_checkpoint >= 1 then
        store:checkpoint()
        last_checkpoint = qos.now()
      end
    end)
    if not ok then log("error", { message = tostring(terr) }) end
  end }
  log("stopping", { reason = why, signal = detail })
  srv:stop() -- answers what is under way; queued requests get 503
  counts = store:counts()
  store:checkpoint()
  store:close()
  if o.ready_file then os.remove(o.ready_file) end
  log("stopped", { events = counts.events, pending = counts.pending })
  return M.EXIT.ok
end

-- ---- quan serve list | replay ----

-- open_existing(o, campaign, program) -> store | nil, exit: the store of
-- --store or of the campaign file, which must exist
local function open_existing(o, campaign, program)
  local path, perr = store_path(o, campaign)
  if not path then return nil, usage(perr, program) end
  local store, err, code = storemod.read(path)
  if not store then
    say(program, err, code == "noent" and " (no receiver has stored anything there yet)" or "")
    return nil, M.EXIT.failed
  end
  return store
end

-- the row of `quan serve list` as JSON
local function listed(row)
  return {
    seq = row.seq, id = row.id, event_type = row.event_type, create_time = row.create_time, summary = row.summary,
    data = cjson.decode(row.data), received = row.received, deliveries = row.deliveries, attempts = row.attempts,
    handled = row.handled, next_at = row.next_at, last_error = row.last_error,
    state = row.handled and "handled" or "pending",
  }
end

local function when(t)
  if not t then return "-" end
  return require("quan.time").beijing(t, "%Y-%m-%d %H:%M:%S")
end

-- list(o, arguments) -> exit status: `quan serve list` (its options:
-- quan.cli's table)
function M.list(o, arguments)
  local program = PROGRAM .. " list"
  local store, exit = open_existing(o, arguments[1], program)
  if not store then return exit end
  local rows = store:list { all = o.all }
  store:close()
  if o.json then
    for _, row in ipairs(rows) do io.stdout:write(cjson.encode(listed(row)), "\n") end
    return M.EXIT.ok
  end
  local now = qos.time()
  for _, row in ipairs(rows) do
    local data = cjson.decode(row.data) or {}
    local state
    if row.handled then
      state = ("handled %s"):format(when(row.handled))
    elseif row.attempts == 0 then
      state = "pending, not called yet"
    elseif not row.last_error then -- a call under way, or one a killed receiver left
      state = ("pending, call %d under way or interrupted"):format(row.attempts)
    else
      state = ("pending after %d call%s, next in %ds: %s"):format(row.attempts, row.attempts == 1 and "" or "s",
        math.max(0, math.ceil((row.next_at or now) - now)), (row.last_error:gsub("\n.*", "")))
    end
    io.stdout:write(("%s  %s  %s  coupon %s  stock %s  %s\n"):format(row.id, when(row.received), row.event_type or "?",
      tostring(data.coupon_id or "-"), tostring(data.stock_id or "-"), state))
  end
  io.stdout:write(("%d %s\n"):format(#rows, not o.all and "pending" or #rows == 1 and "event" or "events"))
  return M.EXIT.ok
end

-- replay(o, arguments) -> exit status: `quan serve replay [CAMPAIGN.lua]
-- [EVENT_ID...]` (a first word ending in .lua is the campaign file)
function M.replay(o, arguments)
  local program = PROGRAM .. " replay"
  local words = table.move(arguments, 1, #arguments, 1, {})
  local campaign
  if words[1] and words[1]:find("%.lua$") then campaign = table.remove(words, 1) end
  local store, exit = open_existing(o, campaign, program)
  if not store then return exit end
  local n, unknown = store:replay(#words > 0 and words or nil, qos.time())
  store:close()
  for _, id in ipairs(unknown) do say(program, "no event ", id, " in the store") end
  if n > 0 or #unknown == 0 then -- (none due because none named was there: the refusal says it all)
    io.stdout:write(("%d event%s due now: a running receiver calls the handler within a second, else the next "
      .. "quan serve does\n"):format(n, n == 1 and "" or "s"))
  end
  return #unknown > 0 and M.EXIT.failed or M.EXIT.ok
end

-- main(o, arguments) -> exit status; the `quan serve` command (its options:
-- quan.cli's table; `list` and `replay` are its sub-commands, above)
function M.main(o, arguments)
  return receive(o, (arguments or {})[1])
end

return M
