-- quan.campaign.command: what `quan plan` and `quan apply` share: their
-- option parsing (one function over a table of options per command), the
-- exit codes, and the session a command runs in (the declaration, the
-- client, the state's path, the clock).
--
--   command.parse(args, spec) -> opts | nil, message (nil, nil: --help)
--   command.session(file, opts) -> session | nil, message, exit
--   command.EXIT = { ok = 0, failed = 1, usage = 2, changes = 3, busy = 6 }
local M = {}

local format = require "quan.format"

M.EXIT = { ok = 0, failed = 1, usage = 2, changes = 3, busy = 6 }

-- quan's own options (main.c), which come before the command word
local GLOBAL = { config = "value", verbose = "flag", sandbox = "flag", ["log-format"] = "value" }

-- parse(args, spec) -> opts | nil, message
-- spec = { options = { name = "flag" | "value" }, ... }; --name=value and
-- --name value both work; "--" ends the options; the one operand (the
-- campaign file) is opts.file. Options go to opts with "-" as "_".
function M.parse(args, spec)
  local o, i = {}, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      i = i + 1
      if args[i] and not o.file then o.file = args[i]; i = i + 1 end
      if args[i] then return nil, "one campaign file at a time (got '" .. o.file .. "' and '" .. args[i] .. "')" end
      break
    elseif a == "-h" or a == "--help" then
      return nil, nil
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local kind = spec.options[name]
      if not kind and GLOBAL[name] then
        return nil, "--" .. name .. " goes before the command (quan --" .. name
          .. (GLOBAL[name] == "value" and " VALUE" or "") .. " plan|apply ...)"
      end
      if not kind then return nil, "unknown option '--" .. name .. "'" end
      if kind == "flag" then
        if value then return nil, "--" .. name .. " takes no value" end
        o[name:gsub("%-", "_")] = true
      else
        if not value then
          i = i + 1
          value = args[i]
          if value == nil then return nil, "--" .. name .. " needs a value" end
        end
        o[name:gsub("%-", "_")] = value
      end
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      return nil, "unknown option '" .. a .. "'"
    elseif o.file then
      return nil, "one campaign file at a time (got '" .. o.file .. "' and '" .. a .. "')"
    else
      o.file = a
    end
    i = i + 1
  end
  if not o.file then return nil, "no campaign file given" end
  return o
end

-- time_of(v) -> epoch seconds of "YYYY-MM-DD HH:MM" (Beijing time) or of
-- epoch seconds | nil
function M.time_of(v)
  local n = tonumber(v)
  if n then return n end
  local ok, t = pcall(require("wechatpay.favor").at, v)
  return ok and require("quan.validate").rfc3339(t) or nil
end

-- sandbox_clock(wx) -> epoch seconds of the business clock when the
-- client's profile is a sandbox's (config.lua of `quan sandbox` names its
-- state), else nil
local function sandbox_clock(wx)
  local profile = wx.profile or {}
  if type(profile.sandbox_state) ~= "string" then return nil end
  local res = require("quan.http").request {
    url = wx.base_url .. "/sandbox/clock", cafile = profile.ca_file, timeout = 10,
  }
  local j = res and res.status == 200 and require("cjson.safe").decode(res.body or "")
  return type(j) == "table" and require("quan.validate").rfc3339(j.now) or nil
end

-- session(o) -> session | nil, message, exit: the client of the profile
-- (o.profile, else the usual choice; a private sandbox when none is
-- configured), the state's path (o.state; else the campaign file's path
-- with ".state"; for a private sandbox, a file in its temporary directory,
-- gone with it) and the clock (o.now; a sandbox's business clock; this
-- machine's)
function M.session(decl, o)
  local wechatpay = require "wechatpay"
  local ok, wx = pcall(wechatpay.client, o.profile)
  if not ok then return nil, tostring(wx), M.EXIT.failed end
  local s = { wx = wx, mchid = wx.mchid, base_url = wx.base_url, api = require("quan.campaign.state").api_of(wx.base_url) }
  local private = rawget(wx, "sandbox")
  if o.state then
    s.state_path = o.state
  elseif private and private.temporary then
    s.state_path = private.state .. "/campaign.state"
    s.state_note = "a private sandbox's, removed with it; give --state to keep one"
  else
    s.state_path = decl.path .. ".state"
  end
  if o.now then
    s.now = M.time_of(o.now)
    if not s.now then return nil, "--now expects \"YYYY-MM-DD HH:MM\" or epoch seconds, got '" .. o.now .. "'", M.EXIT.usage end
    s.clock = "given"
  else
    s.now = sandbox_clock(wx)
    s.clock = s.now and "sandbox" or "local"
    s.now = s.now or require("quan.os").time()
  end
  s.retry = require("wechatpay.retry").policy { attempts = 5 }
  return s
end

-- load(file) -> declaration | nil (the problems printed on stderr, prefixed)
function M.load(file, who)
  local decl, problems = require("quan.campaign").load(file)
  if not decl then
    io.stderr:write(require("quan.campaign").format_problems(problems):gsub("[^\n]+", who .. ": %0"), "\n")
    return nil
  end
  return decl
end

-- head(decl, session, st) -> the header render.text and render.json print
function M.head(decl, s, path, note)
  return {
    campaign = decl.name, file = decl.file, mchid = s.mchid, api = s.base_url, state = path, state_note = note,
    now = s.now, clock = s.clock,
  }
end

M.format = format

return M
