-- quan.dryrun: `quan run --dry-run script.lua` (QUAN_DRY_RUN=1).
--
-- The client calls before_send(prepared) with the fully prepared request (see
-- the client hook in docs/client.md); this prints it as it would go out: the
-- string to sign, the headers with the signature redacted, the body
-- pretty-printed, and the exact body bytes on a `body:` line, then the same
-- request as a curl command (wechatpay.curl: signed, valid five minutes, so
-- it can be run by hand); then answers with a synthetic response
-- (placeholders from the endpoint's response schema, as `quan check` does)
-- so nothing is sent.
--
--   dryrun.before_send(prepared) -> response table
--   dryrun.install(wechatpay)    -> sets wechatpay.hooks.before_send
--   dryrun.pretty(json_text)     -> the same JSON, indented, bytes otherwise kept
--   dryrun.redact(header_line)   -> the line with signature="..." redacted
--   dryrun.output                -> the file written to (default io.stdout)
local M = {}

M.output = io.stdout

-- pretty(text) -> text indented two spaces per level; strings, numbers and
-- key order are the input's own bytes (only whitespace outside strings changes)
function M.pretty(text)
  if type(text) ~= "string" then error("dryrun.pretty: expected a string", 2) end
  local out, depth, i, n = {}, 0, 1, #text
  local function nl() out[#out + 1] = "\n" .. string.rep("  ", depth) end
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' then
      local j = i + 1
      while j <= n do
        local d = text:sub(j, j)
        if d == "\\" then j = j + 2
        elseif d == '"' then break
        else j = j + 1 end
      end
      out[#out + 1] = text:sub(i, j)
      i = j + 1
    elseif c == "[" and text:find("^%[[^%[%]{}\"]*%]", i) and #text:match("^%[[^%[%]{}\"]*%]", i) <= 72 then
      -- a short array of numbers, booleans or nulls stays on one line
      local a = text:match("^%[[^%[%]{}\"]*%]", i)
      out[#out + 1] = a:gsub("%s", ""):gsub(",", ", ")
      i = i + #a
    elseif c == "{" or c == "[" then
      local close = c == "{" and "}" or "]"
      local k = i + 1
      while text:sub(k, k):match("^%s$") do k = k + 1 end
      if text:sub(k, k) == close then
        out[#out + 1] = c .. close
        i = k + 1
      else
        out[#out + 1] = c
        depth = depth + 1
        nl()
        i = i + 1
      end
    elseif c == "}" or c == "]" then
      depth = depth - 1
      nl()
      out[#out + 1] = c
      i = i + 1
    elseif c == "," then
      out[#out + 1] = ","
      nl()
      i = i + 1
    elseif c == ":" then
      out[#out + 1] = ": "
      i = i + 1
    elseif c:match("%s") then
      i = i + 1
    else
      local j = i
      while j <= n and not text:sub(j, j):match('[%s,:{}%[%]"]') do j = j + 1 end
      out[#out + 1] = text:sub(i, j - 1)
      i = j
    end
  end
  return table.concat(out)
end

-- redact(line) -> the header line with the signature value replaced (the
-- client's own redaction, as --verbose prints it)
function M.redact(line)
  return require("wechatpay.sign").redact(tostring(line))
end

local function show(s)
  -- a line of the string to sign, with control characters made visible
  return (s:gsub("[%c]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

-- before_send(p) -> synthetic response table (nothing is sent)
function M.before_send(p)
  if type(p) ~= "table" then error("dryrun.before_send: expected the prepared request table", 2) end
  local o = M.output
  local ep = p.endpoint
  o:write("--- dry run: ", tostring(p.method), " ", tostring(p.url or p.path),
    ep and ep.title and ("  (" .. ep.title .. ")") or "", "\n")
  o:write("string to sign (each line ends in \\n):\n")
  local sts = p.string_to_sign or ""
  for line in sts:gmatch("([^\n]*)\n") do o:write("  | ", show(line), "\n") end
  o:write("headers:\n")
  for _, h in ipairs(p.headers or {}) do
    if type(h) == "table" then h = tostring(h[1]) .. ": " .. tostring(h[2]) end
    o:write("  ", M.redact(h), "\n")
  end
  local body = p.body or ""
  if body ~= "" then
    local first = body:sub(1, 1)
    if first == "{" or first == "[" then
      o:write("body (pretty):\n")
      for line in (M.pretty(body) .. "\n"):gmatch("([^\n]*)\n") do o:write("  ", line, "\n") end
    end
    if body:find("[%z\1-\8\14-\31\127]") then
      o:write("body: <", #body, " bytes, binary>\n")
    else
      o:write("body: ", body, "\n")
    end
  else
    o:write("body: (empty)\n")
  end
  o:write("as curl:\n", require("wechatpay.curl").command(p))
  o:flush()
  return require("quan.check").response(p)
end

-- install(wechatpay) -> sets wechatpay.hooks.before_send to the printer
function M.install(wechatpay)
  if type(wechatpay) ~= "table" or type(wechatpay.hooks) ~= "table" then
    error("dryrun.install: expected the wechatpay module", 2)
  end
  wechatpay.hooks.before_send = M.before_send
  wechatpay.simulation = "dry-run" -- what pretends to send (quan.batch then keeps its journal)
end

return M
