-- wechatpay.trace: `--verbose` / QUAN_DEBUG=1 output on stderr, one block
-- per request and per response. The signatures (the request's Authorization,
-- the answer's Wechatpay-Signature) are redacted;
-- the client never holds key bytes, so nothing else secret can appear.
local sign = require "wechatpay.sign"

local M = {}

-- enabled() -> true when QUAN_DEBUG is set to something other than "" or "0"
function M.enabled()
  local v = os.getenv("QUAN_DEBUG")
  return v ~= nil and v ~= "" and v ~= "0"
end

local function out(lines)
  io.stderr:write(table.concat(lines, "\n"), "\n")
end

local function show_body(lines, prefix, body, ctype)
  if body == nil or body == "" then return end
  if ctype and ctype:find("^multipart/") then
    lines[#lines + 1] = prefix .. "[multipart body, " .. #body .. " bytes]"
    return
  end
  if #body > 4096 then body = body:sub(1, 4096) .. "...[" .. #body .. " bytes]" end
  lines[#lines + 1] = prefix .. body
end

-- redact_header("Name: value") -> the line with a signature redacted
function M.redact_header(line)
  local name = line:match("^([^:]+):")
  if name and name:lower() == "authorization" then return sign.redact(line) end
  return line
end

-- request(p): p is the prepared request (method, url, headers, body)
function M.request(p)
  local lines = { "quan: > " .. p.method .. " " .. p.url }
  local ctype
  for _, h in ipairs(p.headers) do
    lines[#lines + 1] = "quan: > " .. M.redact_header(h)
    if h:lower():find("^content%-type:") then ctype = h:match(":%s*(.*)$") end
  end
  show_body(lines, "quan: > ", p.upload_meta or p.body, ctype)
  out(lines)
end

-- response(p, res, seconds)
function M.response(p, res, seconds)
  local lines = { ("quan: < %d %s %s (%.0f ms)"):format(res.status, p.method, p.target, (seconds or 0) * 1000) }
  for _, h in ipairs(res.header_list or {}) do
    local v = h[1]:lower() == "wechatpay-signature" and "[redacted]" or h[2]
    lines[#lines + 1] = "quan: < " .. h[1] .. ": " .. v
  end
  show_body(lines, "quan: < ", res.body, res.headers and res.headers["content-type"])
  out(lines)
end

-- failure(p, err)
function M.failure(p, err)
  out { "quan: ! " .. tostring(err) }
end

return M
