-- wechatpay.config: profiles from a Lua config file.
--
-- Search order: $QUAN_CONFIG (set by `--config FILE`), ./quan.config.lua,
-- ~/.config/quan/config.lua. The file returns
--   { default = "name", profiles = { name = { mchid=, serial=, ... }, ... } }
-- The profile is the argument given to wechatpay.client(name), else
-- `--profile NAME` / $QUAN_PROFILE, else `default`, else the only profile.
-- Environment overrides for non-secret keys: QUAN_MCHID, QUAN_SERIAL,
-- QUAN_BASE_URL, QUAN_CA_FILE, QUAN_TIMEOUT. Secrets (private_key,
-- apiv3_key) only as file:// paths; relative paths are taken from the
-- config file's folder.
--
-- Trust (docs/client.md "Profiles"): a config file, and the certs and
-- ca_file it names, must be owned by the user or root and not writable by
-- group or others, the config file's folder likewise (a sticky folder such
-- as /tmp excepted); a key file must not be open to others (to group
-- either, when it is the user's own), as ssh requires. A config file found
-- in the current directory is announced on stderr. The file is run
-- in a child process (quan -E -l config=wechatpay.config -e ...), bounded
-- in instructions, wall-clock time, CPU time and memory; the table it
-- returns comes back as data.
local errors = require "wechatpay.errors"
local suggest = require "quan.suggest"

local M = {}

local getenv = os.getenv
local conferr = errors.config
local debug = debug

-- instructions a config file may run: a table literal takes a few hundred
M.INSTRUCTION_LIMIT = 10000000
-- seconds a config file may take (wall clock, start-up of its process
-- included: a few milliseconds), and bytes of memory it may allocate
-- (beyond what its process holds when it starts)
M.TIME_LIMIT = 5
M.MEMORY_LIMIT = 256 << 20
-- bytes of the table a config file returns, written out as a Lua literal
M.SIZE_LIMIT = 1 << 20

M.SECRETS = { private_key = true, apiv3_key = true }

M.OVERRIDES = {
  { env = "QUAN_MCHID", key = "mchid" },
  { env = "QUAN_SERIAL", key = "serial" },
  { env = "QUAN_BASE_URL", key = "base_url" },
  { env = "QUAN_CA_FILE", key = "ca_file" },
  { env = "QUAN_TIMEOUT", key = "timeout", number = true },
}

-- keys a profile may hold besides wechatpay.new's: kept in wx.profile
-- (appid: the sender's AppID for `quan send`; sandbox_state: a sandbox's
-- state folder, written by `quan sandbox`)
M.EXTRA_KEYS = { appid = true, sandbox_state = true }

-- other SDKs' names for the keys (WeChat Pay's Java, Go, PHP and Node SDKs
-- and their configs), mapped to quan's
M.ALIASES = {
  mch_id = "mchid", mchId = "mchid", merchantId = "mchid", merchant_id = "mchid", mchID = "mchid",
  serial_no = "serial", serialNo = "serial", merchantSerialNumber = "serial",
  merchant_serial_number = "serial", certificateSerialNumber = "serial", serial_number = "serial",
  privateKey = "private_key", privateKeyPath = "private_key", private_key_path = "private_key",
  merchantPrivateKey = "private_key", apiclient_key = "private_key",
  apiV3Key = "apiv3_key", apiv3Key = "apiv3_key", api_v3_key = "apiv3_key", apiV3key = "apiv3_key",
  certificates = "certs", platform_certs = "certs", platformCertificates = "certs",
  wechatpayCertificates = "certs", wechatpay_public_key = "certs", wechatpayPublicKey = "certs",
  app_id = "appid", appId = "appid", appID = "appid",
  baseUrl = "base_url", baseURL = "base_url", base_uri = "base_url", baseUri = "base_url",
  caFile = "ca_file", cafile = "ca_file",
}

-- hint(key, known) -> " (did you mean x?)" or "": known is a set of keys;
-- another SDK's name of one (privateKey) or a misspelling (private_ky)
function M.hint(key, known)
  if type(key) ~= "string" then return "" end
  local alias = M.ALIASES[key]
  if alias and known[alias] then return " (did you mean " .. alias .. "?)" end
  local names = {}
  for k in pairs(known) do names[#names + 1] = k end
  table.sort(names)
  return suggest.hint(key, names)
end

-- check_keys(profile, name, known): a profile key that is not one of
-- `known` (wechatpay.new's keys) nor an extra key, and that another SDK
-- uses for one or that is a misspelling of one (privateKey, app_id), is a
-- config error naming the intended key; other extra keys are kept
function M.check_keys(profile, name, known)
  local all = {}
  for k in pairs(known) do all[k] = true end
  for k in pairs(M.EXTRA_KEYS) do all[k] = true end
  local bad = {}
  for k in pairs(profile) do
    if type(k) == "string" and not all[k] then
      local h = M.hint(k, all)
      if h ~= "" then bad[#bad + 1] = { k, h } end
    end
  end
  if #bad == 0 then return end
  table.sort(bad, function(a, b) return a[1] < b[1] end)
  conferr("profile '%s': unknown key '%s'%s", tostring(name), bad[1][1], bad[1][2])
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

-- candidates() -> array of paths in search order, and whether the first
-- one was named explicitly ($QUAN_CONFIG)
function M.candidates()
  local list = {}
  local named = getenv("QUAN_CONFIG")
  if named and named ~= "" then return { named }, true end
  -- the real current directory: $PWD is stale in a process started with
  -- another working directory (e.g. python's subprocess cwd=)
  local ok, qos = pcall(require, "quan.os")
  local cwd = ok and qos.cwd and qos.cwd() or nil
  list[#list + 1] = (cwd and cwd:sub(1, 1) == "/" and (cwd == "/" and "/" or cwd .. "/") or "./") .. "quan.config.lua"
  local home = getenv("HOME")
  if home and home ~= "" then list[#list + 1] = home .. "/.config/quan/config.lua" end
  return list, false
end

-- find() -> path | nil, searched (array of paths); raises when $QUAN_CONFIG
-- names a missing file
function M.find()
  local list, named = M.candidates()
  if named then
    if not exists(list[1]) then conferr("config file %s (QUAN_CONFIG or --config) not found", list[1]) end
    return list[1], list
  end
  for _, p in ipairs(list) do
    if exists(p) then return p, list end
  end
  return nil, list
end

-- run_bounded(chunk) -> true, value | false, error | nil (ran too long):
-- pcall(chunk) under an instruction count hook, so that a loop in a config
-- file raises instead of hanging whoever reads it; the hook in place before
-- (one set from Lua) is put back
local function run_bounded(chunk)
  local hook, mask, count = debug.gethook()
  local too_long = {}
  debug.sethook(function() error(too_long, 0) end, "", M.INSTRUCTION_LIMIT)
  local ok, v = pcall(chunk)
  if type(hook) == "function" then debug.sethook(hook, mask, count) else debug.sethook() end
  if not ok and v == too_long then return nil end
  return ok, v
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function qos_or_nil()
  local ok, qos = pcall(require, "quan.os")
  return ok and qos or nil
end

---------------------------------------------------------------------------
-- Trust: who may change the files a profile comes from

-- unsafe(st, uid, sticky_ok) -> nil | why, kind ("owner" or "mode"): a file
-- (or folder) whose owner is neither uid nor root, or that group or others
-- may write (a sticky folder excepted when sticky_ok: there only the owner
-- of a file may replace it)
local function unsafe(st, uid, sticky_ok)
  if st.uid ~= uid and st.uid ~= 0 then
    return ("is owned by uid %d, neither you (uid %d) nor root"):format(st.uid, uid), "owner"
  end
  if st.mode & 18 ~= 0 and not (sticky_ok and st.mode & 512 ~= 0) then -- 022; 01000
    return ("is writable by group or others (mode %03o)"):format(st.mode & 511), "mode"
  end
end

-- trust(path, what[, folder]): raises a config error when `what` (the
-- config file, a certs file, the ca_file) at path could be changed by
-- another user: owned by neither the user nor root, or writable by group
-- or others; with `folder`, the folder holding it too. A path that cannot
-- be stat'ed passes (reading it reports that).
function M.trust(path, what, folder)
  local qos = qos_or_nil()
  if not (qos and qos.stat and qos.geteuid) then return end
  local st = qos.stat(path)
  if not st then return end
  local uid = qos.geteuid()
  local why, kind = unsafe(st, uid)
  if why then
    conferr("%s %s %s; quan refuses a %s another user can change: %s", what, path, why, what,
      kind == "mode" and ("run chmod go-w " .. path) or ("make it yours (chown) or use a copy of your own"))
  end
  if not folder then return end
  local dir = dirname(path)
  local dst = qos.stat(dir)
  if not dst then return end
  why, kind = unsafe(dst, uid, true)
  if why then
    conferr("%s %s: its folder %s %s, so another user could replace the file; quan refuses it: %s", what, path,
      dir, why, kind == "mode" and ("run chmod go-w " .. dir) or "move the file into a folder of your own")
  end
end

-- secret(path, what): raises a config error when a key file is open to
-- others: any permission for group or others on a file of the user's own
-- (as ssh refuses an unprotected private key), any for others on a file
-- another user owns (e.g. root:quan 0640, shared with a service's group).
-- A path that cannot be stat'ed passes (loading it reports that).
function M.secret(path, what)
  local qos = qos_or_nil()
  if not (qos and qos.stat and qos.geteuid) then return end
  local st = qos.stat(path)
  if not st then return end
  local own = st.uid == qos.geteuid()
  local open = st.mode & (own and 63 or 7) -- 077 or 007
  if open ~= 0 then
    conferr("%s file %s is readable or writable by %s (mode %03o); quan refuses an unprotected key: run chmod %s %s",
      what, path, own and "group or others" or "others", st.mode & 511, own and "600" or "o-rwx", path)
  end
end

local announced = {}

-- announce(path): says on stderr, once per path, that the config file in
-- use was found in the current directory: neither the user's own
-- (~/.config/quan/config.lua) nor one the user named (--config, QUAN_CONFIG)
local function announce(path)
  if announced[path] then return end
  announced[path] = true
  io.stderr:write(("quan: using config file %s (found in the current directory)\n"):format(path))
end

---------------------------------------------------------------------------
-- Evaluation: in a child process, bounded

local IDENTIFIER = "^[%a_][%w_]*$"

-- literal(v, where, depth, open) -> v written as a Lua expression that
-- loads back to an equal value; raises naming `where` (the keys that lead
-- to v: "profiles.prod.certs", nil for the returned table itself) for what
-- is not data (a function) or cannot be written (a cycle, a table key)
local function literal(v, where, depth, open)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return ("%q"):format(v) end
  if t ~= "table" then
    error(("%s is a %s: a config file returns data (tables, strings, numbers, booleans)"):format(where, t), 0)
  end
  if open[v] then error(("%s contains itself"):format(where), 0) end
  if depth >= 64 then error(("%s: tables nested deeper than 64"):format(where), 0) end
  open[v] = true
  local parts = {}
  for k, x in next, v do
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" and kt ~= "boolean" then
      error(("%s has a %s as a key: keys are strings, numbers or booleans")
        :format(where or "the table it returns", kt), 0)
    end
    local sub = (kt == "string" and k:find(IDENTIFIER)) and k or ("[%q]"):format(k)
    if depth > 0 then sub = where .. (sub:find("^%[") and "" or ".") .. sub end
    parts[#parts + 1] = "[" .. ("%q"):format(k) .. "]=" .. literal(x, sub, depth + 1, open)
  end
  open[v] = nil
  return "{" .. table.concat(parts, ",") .. "}"
end

-- evaluate(path) -> true, value | false, message: the file run in an
-- empty environment under the instruction limit (in this process)
local function evaluate(path)
  local chunk, err = loadfile(path, "t", {})
  if not chunk then return false, ("config file %s: %s"):format(path, err) end
  local ok, cfg = run_bounded(chunk)
  if ok == nil then return false, ("config file %s takes too long to run (a loop?)"):format(path) end
  if not ok then return false, ("config file %s: %s"):format(path, tostring(cfg)) end
  return true, cfg
end

-- child(path): the child process's side (quan -E -l ... -e): lowers its own
-- limits, evaluates the file and writes "ok\n" and the returned value as a
-- Lua literal, or "error\n" and the message, on stdout
function M.child(path)
  local qos = require "quan.os"
  qos.rlimit("core", 0)
  qos.rlimit("cpu", math.ceil(M.TIME_LIMIT) + 1) -- an orphan (its parent killed) ends too
  -- M.MEMORY_LIMIT more than the data the process holds now (VmData: a
  -- sanitizer's shadow memory counts, and may be terabytes)
  local status = io.open("/proc/self/status")
  local held = status and tonumber(status:read("a"):match("\nVmData:%s*(%d+) kB"))
  if status then status:close() end
  if held then qos.rlimit("data", held * 1024 + M.MEMORY_LIMIT) end
  local ok, text = pcall(function()
    local good, v = evaluate(path)
    if not good then error(v, 0) end
    if type(v) ~= "table" then error(("config file %s: must return a table"):format(path), 0) end
    local written = literal(v, nil, 0, {})
    if #written > M.SIZE_LIMIT then
      error(("config file %s: the table it returns is too large (over %d bytes written out)"):format(path, M.SIZE_LIMIT), 0)
    end
    return written
  end)
  if not ok and not tostring(text):find("^config file ") then text = ("config file %s: %s"):format(path, tostring(text)) end
  io.stdout:write(ok and "ok\n" or "error\n", tostring(text))
  io.stdout:flush()
end

-- remove_dir(dir): the child's output file and its private folder
local function remove_dir(dir)
  os.remove(dir .. "/out")
  os.remove(dir)
end

-- in_child(path, qos) -> true, value | false, message: the file evaluated
-- by a child quan within M.TIME_LIMIT seconds (then killed); the folder
-- for its output is private (mkdtemp) and removed after
local function in_child(path, qos)
  local exe = qos.exe()
  if not exe then return evaluate(path) end -- no /proc: the instruction limit alone
  local tmp = getenv("TMPDIR")
  local dir, derr = qos.mkdtemp(((tmp and tmp ~= "") and tmp or "/tmp") .. "/quan-config-")
  if not dir then conferr("config file %s: no folder for its evaluation (%s)", path, tostring(derr)) end
  local pid, perr = qos.spawn({ exe, "-E", "-l", "config=wechatpay.config", "-e", ("config.child(%q)"):format(path) },
    { stdin = "/dev/null", stdout = dir .. "/out" })
  if not pid then
    remove_dir(dir)
    conferr("config file %s: cannot start its evaluation (%s)", path, tostring(perr))
  end
  local how, status, late
  local ok, err = pcall(function() -- a Ctrl-C while waiting: the child goes too
    local deadline, pause = qos.now() + M.TIME_LIMIT, 0.001
    while true do
      how, status = qos.wait(pid, true)
      if how then return end
      if qos.now() > deadline then
        late = true
        qos.kill(pid, "KILL")
        how, status = qos.wait(pid)
        return
      end
      qos.sleep(pause)
      pause = math.min(pause * 2, 0.02)
    end
  end)
  if not ok then
    if not how then
      qos.kill(pid, "KILL")
      qos.wait(pid)
    end
    remove_dir(dir)
    error(err, 0)
  end
  local out = require("quan.path").read(dir .. "/out") or ""
  remove_dir(dir)
  if late then
    return false, ("config file %s takes too long to run (stopped after %g s)"):format(path, M.TIME_LIMIT)
  end
  local word, rest = out:match("^(%a+)\n(.*)$")
  if word == "error" then return false, rest end
  if word ~= "ok" or how ~= "exit" or status ~= 0 then
    return false, ("config file %s could not be run (its evaluation ended with %s %s%s)"):format(path,
      tostring(how), tostring(status), how == "signal" and ", over the CPU or memory limit?" or "")
  end
  local chunk, lerr = load("return " .. rest, "=(config value)", "t", {})
  if not chunk then return false, ("config file %s: its value did not come back (%s)"):format(path, lerr) end
  return true, chunk()
end

-- read(path) -> the config table: the file checked (trust), then run in
-- a child process in an empty environment, at most M.INSTRUCTION_LIMIT
-- instructions, M.TIME_LIMIT seconds and M.MEMORY_LIMIT bytes
function M.read(path)
  M.trust(path, "config file", true)
  local qos = qos_or_nil()
  local ok, cfg
  if qos and qos.spawn and qos.exe then ok, cfg = in_child(path, qos) else ok, cfg = evaluate(path) end
  if not ok then conferr("%s", cfg) end
  if type(cfg) ~= "table" then conferr("config file %s: must return a table", path) end
  if type(cfg.profiles) ~= "table" then conferr("config file %s: 'profiles' must be a table", path) end
  return cfg
end

-- resolve(src, dir) -> src with a relative file:// path made relative to dir
local function resolve(src, dir)
  local p = src:match("^file://(.*)$")
  if p and p:sub(1, 1) ~= "/" then return "file://" .. dir .. "/" .. p end
  return src
end

local function names(profiles)
  local list = {}
  for k in pairs(profiles) do list[#list + 1] = tostring(k) end
  table.sort(list)
  return table.concat(list, ", ")
end

-- profile(cfg, name, path) -> the profile table, resolved: a copy with
-- env overrides applied, relative file:// paths made absolute, secrets
-- checked (file:// only), their files' modes (M.secret) and the certs and
-- ca_file files' owners and modes (M.trust) checked
function M.profile(cfg, name, path)
  local src = cfg.profiles[name]
  if src == nil then
    conferr("config file %s: no profile '%s' (profiles: %s)", path, tostring(name), names(cfg.profiles))
  elseif type(src) ~= "table" then
    conferr("config file %s: profile '%s' is not a table (it is a %s)", path, tostring(name), type(src))
  end
  local dir = dirname(path)
  local p = {}
  for k, v in pairs(src) do p[k] = v end
  for key in pairs(M.SECRETS) do
    local v = p[key]
    if v ~= nil then
      if type(v) ~= "string" or not v:find("^file://") then
        conferr("profile '%s': %s must be a file:// path in the config file, not inline text", name, key)
      end
      p[key] = resolve(v, dir)
      M.secret(p[key]:sub(8), key)
    end
  end
  if type(p.certs) == "table" then
    local certs = {}
    for k, v in pairs(p.certs) do
      certs[k] = type(v) == "string" and resolve(v, dir) or v
      local file = type(v) == "string" and certs[k]:match("^file://(.*)$")
      if file then M.trust(file, ("certs[%q] file"):format(tostring(k))) end
    end
    p.certs = certs
  end
  if type(p.ca_file) == "string" then
    p.ca_file = resolve("file://" .. p.ca_file:gsub("^file://", ""), dir):sub(8)
    M.trust(p.ca_file, "ca_file")
  end
  for _, o in ipairs(M.OVERRIDES) do
    local v = getenv(o.env)
    if v and v ~= "" then
      if o.number then
        local n = tonumber(v)
        if not (n and n > 0 and n < math.huge) then
          conferr("%s: expected a positive, finite number of seconds, got '%s'", o.env, v)
        end
        v = n
      end
      p[o.key] = v
    end
  end
  return p
end

-- choose(cfg, name, path) -> profile name: `name`, else $QUAN_PROFILE, else
-- cfg.default, else the only profile
function M.choose(cfg, name, path)
  if name then return name end
  local env = getenv("QUAN_PROFILE")
  if env and env ~= "" then return env end
  if cfg.default ~= nil then return cfg.default end
  local only, n = nil, 0
  for k in pairs(cfg.profiles) do only, n = k, n + 1 end
  if n == 1 then return only end
  if n == 0 then conferr("config file %s: no profiles", path) end
  conferr("config file %s: several profiles (%s) and no default; pick one with --profile NAME",
    path, names(cfg.profiles))
end

-- load([name]) -> profile, profile name, config path | nil when no config
-- file exists and no profile was asked for
function M.load(name)
  local path, searched = M.find()
  if not path then
    local want = name or getenv("QUAN_PROFILE")
    if want and want ~= "" then
      conferr("profile '%s': no config file (searched %s)", want, table.concat(searched, ", "))
    end
    return nil
  end
  local cfg = M.read(path)
  local _, named = M.candidates()
  if not named and path == searched[1] then announce(path) end -- ./quan.config.lua
  local chosen = M.choose(cfg, name, path)
  return M.profile(cfg, chosen, path), chosen, path
end

return M
