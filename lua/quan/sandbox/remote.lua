-- quan.sandbox.remote: a control request (/sandbox/...) to the sandbox that
-- serves a state directory, from another process: its address read from
-- DIR/config.lua (rewritten at every start), over its HTTPS trusting its CA
-- (DIR/ca.pem). What `quan sandbox clock` and `quan sandbox redeem` use.
local M = {}

local cjson = require "cjson.safe"

-- request(dir, method, path[, body[, timeout]]) -> answer table, raw body |
-- nil, message: the message says what went wrong for a person (no state
-- there, nothing listening, the sandbox's refusal: status, code, message)
function M.request(dir, method, path, body, timeout)
  local text = require("quan.path").read(dir .. "/config.lua")
  local base = text and text:match('base_url = "(https://[^"]+)"')
  if not base then
    return nil, "no sandbox state in " .. dir .. " (start one: quan sandbox --state " .. dir .. ")"
  end
  local res, err, code = require("quan.http").request {
    method = method, url = base .. path, cafile = dir .. "/ca.pem", timeout = timeout or 30,
    headers = { "Content-Type: application/json" }, body = body,
  }
  if not res then
    if code == "connect" then
      return nil, "no sandbox is serving " .. dir .. " at " .. base .. " (start one: quan sandbox --state " .. dir .. ")"
    end
    return nil, base .. path .. ": " .. tostring(err)
  end
  local j = cjson.decode(res.body or "")
  if res.status ~= 200 or type(j) ~= "table" then
    return nil, ("the sandbox refused: %s %s: %s"):format(tostring(res.status),
      type(j) == "table" and tostring(j.code) or "", type(j) == "table" and tostring(j.message) or tostring(res.body))
  end
  return j, res.body
end

return M
