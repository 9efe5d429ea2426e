-- quan.hooks: quan's tools plugged into the client. The host (src/host.c)
-- calls install(wechatpay) when a quan state first requires "wechatpay", so
-- the client never names a tool and a script that does not use the client
-- loads none of this. See docs/client.md, "Hooks".
--
--   hooks.install(wechatpay) -> wechatpay, with
--     wechatpay.hooks.private_sandbox = a function starting quan.sandbox
--       ({} options) for wechatpay.client() with QUAN_SANDBOX=1 or no profile
--     and, with QUAN_DRY_RUN set (not "" or "0"), quan.dryrun installed
--       (wechatpay.hooks.before_send prints each request; wechatpay.simulation
--       = "dry-run")
-- The tools load when first used: the sandbox when one starts, the dry-run
-- printer only under QUAN_DRY_RUN.
local M = {}

-- private_sandbox() -> handle | nil, message: a sandbox for this process
local function private_sandbox()
  return require("quan.sandbox").start {}
end

local function truthy(v) return v ~= nil and v ~= "" and v ~= "0" end

-- install(wechatpay) -> wechatpay
function M.install(wechatpay)
  if type(wechatpay) ~= "table" or type(wechatpay.hooks) ~= "table" then
    error("quan.hooks.install: expected the wechatpay module", 2)
  end
  wechatpay.hooks.private_sandbox = private_sandbox
  if truthy(os.getenv("QUAN_DRY_RUN")) then require("quan.dryrun").install(wechatpay) end
  return wechatpay
end

return M
