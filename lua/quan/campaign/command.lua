-- quan.campaign.command: what `quan plan` and `quan apply` share (their
-- options are entries of quan.cli's table): the exit codes, and the session
-- a command runs in (the declaration, the client, the state's path, the
-- clock).
--
--   command.session(decl, opts) -> session | nil, message, exit
--   command.reads_go_out() -> under QUAN_DRY_RUN, GETs are sent, writes printed
--   command.sandbox_clock(wx) -> the business clock of a sandbox's profile | nil
--   command.load(file, who) -> declaration | nil, exit (problems printed)
--   command.head(decl, session, state_path, note) -> what render prints on top
--   command.EXIT = { ok = 0, failed = 1, usage = 2, changes = 3, busy = 6 }
local M = {}

M.EXIT = { ok = 0, failed = 1, usage = 2, changes = 3, busy = 6 }

-- sandbox_clock(wx) -> epoch seconds of the business clock when the
-- client's profile is a sandbox's (config.lua of `quan sandbox` names its
-- state), else nil (quan report's clock too)
local function sandbox_clock(wx)
  local profile = wx.profile or {}
  if type(profile.sandbox_state) ~= "string" then return nil end
  local res = require("quan.http").request {
    url = wx.base_url .. "/sandbox/clock", cafile = profile.ca_file, timeout = 10,
  }
  local j = res and res.status == 200 and require("cjson.safe").decode(res.body or "")
  return type(j) == "table" and require("quan.time").parse(j.now) or nil
end
M.sandbox_clock = sandbox_clock

-- reads_go_out(): under QUAN_DRY_RUN (`quan --dry-run plan`, `apply`,
-- `report`), the GETs go out and only the other requests are printed
-- instead of sent, as `quan apply --dry-run` does: these commands judge
-- what exists, and the placeholders of a dry run made plans and reports
-- of stocks that are not so (stocks unactivated, drifted)
function M.reads_go_out()
  local v = os.getenv("QUAN_DRY_RUN")
  if v == nil or v == "" or v == "0" then return end
  M.print_writes()
end

-- print_writes(): from now on GETs go out, every other request is printed
-- (quan.dryrun), not sent
function M.print_writes()
  local dryrun = require "quan.dryrun"
  require("wechatpay").hooks.before_send = function(p)
    if p.method == "GET" then return nil end
    return dryrun.before_send(p)
  end
end

-- session(o) -> session | nil, message, exit: the client of the profile
-- (o.profile, else the usual choice; a private sandbox when none is
-- configured), the state's path (o.state; else the campaign file's path
-- with ".state"; for a private sandbox, a file in its temporary directory,
-- gone with it) and the clock (o.now; a sandbox's business clock; this
-- machine's)
function M.session(decl, o)
  M.reads_go_out()
  local wechatpay = require "wechatpay"
  local ok, wx = pcall(wechatpay.client, o.profile)
  if not ok and require("quan.os").is_interrupt(wx) then error(wx, 0) end
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
    s.now, s.clock = o.now, "given" -- epoch seconds: quan.cli's table reads it
  else
    s.now = sandbox_clock(wx)
    s.clock = s.now and "sandbox" or "local"
    s.now = s.now or require("quan.os").time()
  end
  s.retry = require("wechatpay.retry").policy { attempts = 5 }
  return s
end

-- load(file, who) -> declaration | nil, exit status (the problems printed on
-- stderr, prefixed with who): a file that cannot be read (none by that name,
-- a folder) is the command line's mistake, exit 2; a file with problems, 1
function M.load(file, who)
  local st = require("quan.os").stat(file)
  local f, err = nil, "is a directory"
  if not st or st.kind ~= "directory" then f, err = io.open(file, "rb") end
  if not f then
    io.stderr:write(("%s: campaign file %s cannot be read (%s)\n"):format(who, file,
      tostring(err):gsub("^" .. file:gsub("%p", "%%%0") .. ": ", "")))
    return nil, M.EXIT.usage
  end
  f:close()
  local decl, problems = require("quan.campaign").load(file)
  if not decl then
    io.stderr:write((require("quan.campaign").format_problems(problems):gsub("[^\n]+", who .. ": %0")), "\n")
    return nil, M.EXIT.failed
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

return M
