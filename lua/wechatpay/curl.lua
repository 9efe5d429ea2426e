-- wechatpay.curl: a prepared request as a shell command (curl) that sends it
-- again: the exact method, URL, headers and body, for a colleague or a
-- support ticket (docs/client.md, "Copy as curl").
--
--   curl.command(p) -> text: comment lines (what it is, when it was signed,
--                      until when WeChat Pay takes it), then one curl command
--   curl.quote(s)   -> s as one word of a POSIX shell
--
-- p is a prepared request as the client's hooks see it (method, url,
-- headers with Authorization last, body, upload_meta, upload, ca_file,
-- proxy, endpoint). The command holds the request's signature, which is no
-- secret: it is good for that one request for five minutes (WeChat Pay
-- refuses a timestamp more than 300 s away) and says so; the private key
-- and the APIv3 key never appear (the key is held in C and only signs).
local time = require "quan.time"

local M = {}

-- the window WeChat Pay gives a signed request (seconds either way)
M.VALID = 300

-- quote(s) -> s in single quotes, a single quote written '\'': one word of
-- sh for any text (newlines, Chinese, quotes, $ and ` stay literal)
function M.quote(s)
  if s ~= "" and not s:find("[^%w%-%./:=@_,+%%]") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
local quote = M.quote

-- printf_text(s) -> s as a printf(1) format that writes exactly s: bytes
-- outside printable ASCII, \, % and ' as octal escapes (for a body that no
-- shell word can hold: a NUL byte)
local function printf_text(s)
  return "'" .. s:gsub(".", function(c)
    if c == "%" then return "%%" end
    if c:find("^[ -~]$") and c ~= "\\" and c ~= "'" then return c end
    return ("\\%03o"):format(c:byte())
  end) .. "'"
end

-- form_value(s) -> s as a double-quoted value of curl's -F (";" and ","
-- inside are then plain text; \ and " escaped as curl reads them)
local function form_value(s)
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

-- command(p) -> text
function M.command(p)
  if type(p) ~= "table" or type(p.method) ~= "string" or type(p.url) ~= "string" then
    error("curl.command: expected a prepared request", 2)
  end
  local auth
  for _, h in ipairs(p.headers or {}) do
    local v = h:match("^[Aa]uthorization:%s*(.*)$")
    if v then auth = v end
  end
  local signed = auth and tonumber(auth:match('timestamp="(%d+)"'))
  local out = {}
  local title = p.endpoint and p.endpoint.title and ("  (" .. p.endpoint.title .. ")") or ""
  out[#out + 1] = "# " .. p.method .. " " .. (p.path or p.url) .. title
  if signed then
    out[#out + 1] = ("# signed at %s with a new nonce; valid for five minutes, until %s Beijing time"):format(
      time.beijing(signed, "%Y-%m-%d %H:%M:%S"), time.beijing(signed + M.VALID, "%H:%M:%S"))
  end
  local args = { "curl -sS -i -X " .. p.method .. " " .. quote(p.url) }
  if p.ca_file then args[#args + 1] = "--cacert " .. quote(p.ca_file) end
  if p.proxy then args[#args + 1] = "--proxy " .. quote(p.proxy) end
  local upload = p.upload
  for _, h in ipairs(p.headers or {}) do
    -- an upload's Content-Type names its boundary: curl -F writes its own
    if not (upload and h:lower():find("^content%-type:")) then args[#args + 1] = "-H " .. quote(h) end
  end
  local body, pipe = p.body or "", nil
  if upload then
    args[#args + 1] = "-F " .. quote("meta=" .. form_value(p.upload_meta) .. ";type=application/json")
    args[#args + 1] = "-F " .. quote("file=@" .. form_value(upload.file) .. ";filename="
      .. form_value(upload.filename) .. ";type=" .. upload.content_type)
  elseif body ~= "" then
    if body:find("%z") or body:sub(1, 1) == "@" then
      -- no shell word holds a NUL, and curl reads "@name" as a file: the
      -- bytes go through stdin
      pipe = "printf " .. printf_text(body) .. " | "
      args[#args + 1] = "--data-binary @-"
    else
      args[#args + 1] = "--data-binary " .. quote(body)
    end
  elseif p.method ~= "GET" and p.method ~= "DELETE" then
    args[#args + 1] = "--data-binary ''"
  end
  out[#out + 1] = (pipe or "") .. table.concat(args, " \\\n  ")
  return table.concat(out, "\n") .. "\n"
end

return M
