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
-- config file's folder. A key file readable by group or others draws a
-- warning on stderr.
local errors = require "wechatpay.errors"
local suggest = require "quan.suggest"

local M = {}

local getenv = os.getenv
local conferr = errors.config
local debug = debug

-- instructions a config file may run: a table literal takes a few hundred
M.INSTRUCTION_LIMIT = 10000000

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

-- read(path) -> the config table (run in an empty environment, at most
-- M.INSTRUCTION_LIMIT instructions)
function M.read(path)
  local chunk, err = loadfile(path, "t", {})
  if not chunk then conferr("config file %s: %s", path, err) end
  local ok, cfg = run_bounded(chunk)
  if ok == nil then conferr("config file %s takes too long to run (a loop?)", path) end
  if not ok then conferr("config file %s: %s", path, tostring(cfg)) end
  if type(cfg) ~= "table" then conferr("config file %s: must return a table", path) end
  if type(cfg.profiles) ~= "table" then conferr("config file %s: 'profiles' must be a table", path) end
  return cfg
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- resolve(src, dir) -> src with a relative file:// path made relative to dir
local function resolve(src, dir)
  local p = src:match("^file://(.*)$")
  if p and p:sub(1, 1) ~= "/" then return "file://" .. dir .. "/" .. p end
  return src
end

local warned = {}

-- warn_mode(path, what): warns on stderr, once per path, when path is
-- readable by group or others
function M.warn_mode(path, what)
  if warned[path] then return end
  local ok, qos = pcall(require, "quan.os")
  if not ok or not qos.mode then return end
  local mode = qos.mode(path)
  warned[path] = true
  if mode and mode & 0x24 ~= 0 then -- 0044: group or other read
    io.stderr:write(("quan: warning: %s file %s is readable by group or others (mode %03o); run chmod 600 on it\n")
      :format(what, path, mode & 0x1ff))
  end
end

local function names(profiles)
  local list = {}
  for k in pairs(profiles) do list[#list + 1] = tostring(k) end
  table.sort(list)
  return table.concat(list, ", ")
end

-- profile(cfg, name, path) -> the profile table, resolved: a copy with
-- env overrides applied, relative file:// paths made absolute, secrets
-- checked (file:// only) and their files' modes checked
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
      M.warn_mode(p[key]:sub(8), key)
    end
  end
  if type(p.certs) == "table" then
    local certs = {}
    for k, v in pairs(p.certs) do
      certs[k] = type(v) == "string" and resolve(v, dir) or v
    end
    p.certs = certs
  end
  if type(p.ca_file) == "string" then
    p.ca_file = resolve("file://" .. p.ca_file:gsub("^file://", ""), dir):sub(8)
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
  local chosen = M.choose(cfg, name, path)
  return M.profile(cfg, chosen, path), chosen, path
end

return M
