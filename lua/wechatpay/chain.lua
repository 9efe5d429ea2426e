-- wechatpay.chain: from API-tree segments to the request target on the wire.
--
-- Segment rules (as the PHP and Node SDKs): a leading capital is lower-cased,
-- every other capital becomes "-" + lower case (couponStocks -> coupon-stocks,
-- ImageUpload -> image-upload), and `_name_` becomes the template variable
-- `{name}` (kept verbatim). Values never pass through these rules: template
-- variables are filled from the request options and percent-encoded.
local errors = require "wechatpay.errors"
local url = require "quan.url"

local M = {}

local concat, sort = table.concat, table.sort
local usage = errors.usage

-- normalize(segment) -> segment as it appears in the path template
function M.normalize(seg)
  local var = seg:match("^_(.+)_$")
  if var then return "{" .. var .. "}" end
  if seg:find("^{.*}$") then return seg end
  seg = seg:gsub("^%u", string.lower)
  return (seg:gsub("%u", function(c) return "-" .. c:lower() end))
end

-- split(path) -> array of normalized segments ("v3/a/bC" -> {"v3","a","b-c"})
function M.split(path, into)
  into = into or {}
  for seg in path:gmatch("[^/]+") do into[#into + 1] = M.normalize(seg) end
  return into
end

-- encode(s) -> s percent-encoded, RFC 3986 unreserved characters kept
local encode = url.encode
M.encode = encode

local function scalar(v, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if math.type(v) == "integer" then return ("%d"):format(v) end
    if v ~= v or v == math.huge or v == -math.huge then
      usage(what .. " must be a finite number (got " .. (v ~= v and "NaN" or tostring(v)) .. ")")
    end
    return tostring(math.tointeger(v) or v)
  end
  if t == "boolean" then return tostring(v) end
  usage(what .. " must be a string, number or boolean (got " .. t .. ")")
end

local varsets = {} -- template -> set; templates are few (the API tree)

-- variables(template) -> set of the {names} a path template uses (cached;
-- do not modify the set)
function M.variables(template)
  local set = varsets[template]
  if set then return set end
  set = {}
  for name in template:gmatch("{([^}]+)}") do set[name] = true end
  varsets[template] = set
  return set
end

-- expand(template, vars) -> path with each {name} replaced by the
-- percent-encoded vars[name]; a missing or empty variable is a usage error
function M.expand(template, vars)
  return (template:gsub("{([^}]+)}", function(name)
    local v = vars[name]
    if v == nil then usage("missing path variable '" .. name .. "'") end
    local s = scalar(v, "path variable '" .. name .. "'")
    if s == "" then usage("path variable '" .. name .. "' is empty") end
    return encode(s)
  end))
end

-- query(t) -> "k=v&k2=v2" with keys sorted and both sides percent-encoded
-- ("" for an empty table; an array value repeats its key), and the values
-- as a server reads that text back: { k = "v", k2 = "v2" }, each value its
-- string (the last of an array), so the query can be validated as sent
-- without decoding the text again
function M.query(t)
  if type(t) ~= "table" then usage("option 'query' must be a table") end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then usage("query keys must be strings") end
    keys[#keys + 1] = k
  end
  sort(keys)
  local out, read = {}, {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "table" then
      if next(v) ~= nil and #v == 0 then
        usage("query '" .. k .. "' must be a string, number, boolean or an array of them")
      end
      for i = 1, #v do
        local s = scalar(v[i], "query '" .. k .. "'")
        out[#out + 1] = encode(k) .. "=" .. encode(s)
        read[k] = s
      end
    else
      local s = scalar(v, "query '" .. k .. "'")
      out[#out + 1] = encode(k) .. "=" .. encode(s)
      read[k] = s
    end
  end
  return concat(out, "&"), read
end

return M
