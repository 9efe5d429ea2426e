-- wechatpay: the WeChat Pay APIv3 client.
--   local wechatpay = require "wechatpay"
--   local wx = wechatpay.new{mchid=, serial=, private_key=, certs=, ...}
--   local wx = wechatpay.client([profile])   -- from the config file
--   local res, err = wx.v3.marketing.favor.couponStocks:post{json = {...}}
-- See docs/client.md.
--
-- The client loads no tool: dry run and the private sandbox plug in through
-- wechatpay.hooks, which quan's tools set (docs/client.md, "Hooks").
local client = require "wechatpay.client"
local config = require "wechatpay.config"
local errors = require "wechatpay.errors"

local M = {}

M._VERSION = client.VERSION
M.errors = errors

-- hooks.before_send(prepared) -> response table | nil;
-- hooks.validate(endpoint, body, query) -> true | false, findings;
-- hooks.private_sandbox() -> handle | nil, message (see docs/client.md)
M.hooks = client.hooks

-- simulation: nil, or "dry-run" / "check" while requests are only pretended
-- (quan.batch then runs on a throwaway copy of its journal)
M.simulation = nil

-- new(opts) -> client (raises a "config" error table on bad configuration)
function M.new(opts)
  return client.new(opts)
end

local sandbox -- one private sandbox per process, started on demand

-- start_sandbox(why, announce) -> handle, from hooks.private_sandbox;
-- announce(base_url) is printed on stderr when this call started it
local function start_sandbox(why, announce)
  if not sandbox then
    local start = M.hooks.private_sandbox
    if start == nil then
      errors.config("%s, and no private sandbox can start here (wechatpay.hooks.private_sandbox is not set)", why)
    end
    local handle, err = start()
    if not handle then errors.config("%s, and the private sandbox did not start: %s", why, tostring(err)) end
    sandbox = handle
    io.stderr:write(announce, handle.base_url, "\n")
  end
  return sandbox
end

-- build(profile, name[, handle]) -> client from a resolved profile; the keys
-- of wechatpay.new go to new, the whole profile (secrets aside) to wx.profile
local function build(profile, name, handle)
  config.check_keys(profile, name, client.NEW_KEYS)
  local opts = {}
  for k in pairs(client.NEW_KEYS) do opts[k] = profile[k] end
  local ok, wx = pcall(client.new, opts, profile)
  if not ok then
    if errors.is(wx) then
      wx.message = "profile '" .. tostring(name) .. "': " .. wx.message
      error(wx, 0)
    end
    error(wx, 0)
  end
  rawset(wx, "profile_name", name)
  if handle then rawset(wx, "sandbox", handle) end
  return wx
end

local function truthy(v) return v ~= nil and v ~= "" and v ~= "0" end

-- client([profile]) -> client built from a profile of the config file
-- (docs/client.md, "Profiles"); with QUAN_SANDBOX=1, or when no profile is
-- configured anywhere, from a private sandbox started for this process
function M.client(name)
  if name ~= nil and type(name) ~= "string" then error("wechatpay.client: profile name must be a string", 2) end
  if truthy(os.getenv("QUAN_SANDBOX")) then
    local h = start_sandbox("QUAN_SANDBOX=1", "quan: using a private sandbox at ")
    local cfg = config.read(h.config_path)
    return build(config.profile(cfg, h.profile or "sandbox", h.config_path), h.profile or "sandbox", h)
  end
  local profile, chosen = config.load(name)
  if profile then return build(profile, chosen) end
  local h = start_sandbox("no profile configured", "quan: no profile configured; using a private sandbox at ")
  local cfg = config.read(h.config_path)
  return build(config.profile(cfg, h.profile or "sandbox", h.config_path), h.profile or "sandbox", h)
end

return M
