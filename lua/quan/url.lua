-- quan.url: percent-coding of request targets (RFC 3986), as the client
-- writes them and a server reads them. Core layer: loads nothing.
--
--   url.encode(s)      -> s with every byte outside the unreserved set
--                         (A-Z a-z 0-9 - . _ ~) written as %XX (upper-case hex)
--   url.decode(s)      -> s with each %XX decoded and "+" read as a space
--   url.query(text)    -> { name = value, ... }: a query string as a server
--                         reads it: pairs split at "&", each at its first "=",
--                         both sides decoded; a repeated name keeps its last
--                         value; {} for nil or ""
--   url.split(target)  -> path, query table: "/a/b?x=1" -> "/a/b", { x = "1" }
--                         (the path as it is, not decoded)
local M = {}

local char, format, tonumber = string.char, string.format, tonumber

local function hex_byte(c) return format("%%%02X", c:byte()) end
local function byte_of(h) return char(tonumber(h, 16)) end

-- encode(s) -> s percent-encoded
function M.encode(s)
  return (s:gsub("[^%w%-%._~]", hex_byte))
end

-- decode(s) -> s percent-decoded, "+" as a space
function M.decode(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", byte_of))
end

local decode = M.decode

-- query(text) -> table of decoded names and values
function M.query(text)
  local q = {}
  if type(text) ~= "string" then return q end
  for pair in text:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    q[decode(k)] = decode(v)
  end
  return q
end

-- split(target) -> path, query table
function M.split(target)
  local path, query = target:match("^([^?]*)%??(.*)$")
  return path, M.query(query)
end

return M
