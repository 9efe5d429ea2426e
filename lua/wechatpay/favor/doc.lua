-- wechatpay.favor.doc: the schemas of wechatpay.favor.schema rendered for
-- people: one row per field, and the markdown reference in docs/campaigns.md
-- ("Field reference"), which a spec keeps equal to reference().
--
--   doc.rows(node)          -> { {path, type, required, desc, limits}, ... }
--   doc.limits(node[, opts]) -> "5 … 10000000 coupons; ..." (the node's limits
--                              in words, with its unit; opts.enum = false
--                              leaves the enum values out)
--   doc.with_unit(text, unit) -> "2 分", "86399 seconds since 00:00", "50%"
--   doc.field_limits(field[, opts]) -> limits, with each item's for an array
--   doc.markdown(endpoint)  -> a markdown section for one endpoint
--   doc.reference()         -> the sections of every endpoint
local schema = require "wechatpay.favor.schema"

local M = {}

local function join(list) local t = {} for i, v in ipairs(list) do t[i] = tostring(v) end return table.concat(t, " ") end

-- with_unit(text, unit) -> "100 分", "86399 seconds since 00:00", "50%"
local function with_unit(s, unit)
  if not unit then return s end
  if unit == "%" then return s .. "%" end
  return s .. " " .. unit
end
M.with_unit = with_unit

-- limits(node[, opts]) -> text
function M.limits(node, opts)
  local parts = {}
  local function add(s) parts[#parts + 1] = s end
  if node.enum and not (opts and opts.enum == false) then
    add(join(node.enum) .. (node.accept and (" (also " .. join(node.accept) .. ")") or ""))
  end
  local unit = node.unit
  if node.min and node.max then add(with_unit(node.min .. " … " .. node.max, unit))
  elseif node.min then add(with_unit("≥ " .. node.min, unit))
  elseif node.max then add(with_unit("≤ " .. node.max, unit))
  elseif unit then add(unit) end
  if node.width then
    add(("≤ %d Chinese characters or %d letters"):format(node.width.cjk, node.width.ascii))
  end
  if node.min_len and node.max_len then add(node.min_len .. " … " .. node.max_len .. " characters")
  elseif node.max_len then add("≤ " .. node.max_len .. " characters")
  elseif node.min_len and node.min_len > 1 then add("≥ " .. node.min_len .. " characters")
  elseif node.min_len == 1 then add("non-empty") end
  if node.pattern_desc then add(node.pattern_desc) end
  if node.forbid then add("no " .. node.forbid:gsub(".", "%0 "):sub(1, -2)) end
  if node.format == "rfc3339" then add("RFC 3339 with an offset")
  elseif node.format == "json" then add("JSON text")
  elseif node.format == "url" then add("http(s) URL") end
  if node.min_items and node.max_items and node.min_items == node.max_items then
    add("exactly " .. node.min_items .. " item" .. (node.min_items == 1 and "" or "s"))
  elseif node.min_items and node.max_items then add(node.min_items .. " … " .. node.max_items .. " items")
  elseif node.max_items then add("≤ " .. node.max_items .. " items") end
  if node.unique then add("no repeats") end
  return table.concat(parts, "; ")
end

local function type_of(node)
  if node.type == "array" and node.items then return node.items.type .. "[]" end
  return node.type
end

-- field_limits(field[, opts]) -> the limits of a field and, for an array,
-- of each item ("1 … 50 items; each: 1 … 128 characters")
function M.field_limits(f, opts)
  local lim = M.limits(f, opts)
  if f.type == "array" and f.items then
    local il = M.limits(f.items, opts)
    if il ~= "" then lim = (lim ~= "" and (lim .. "; ") or "") .. "each: " .. il end
  end
  return lim
end

-- rows(node) -> one row per field, depth first in the docs' order
function M.rows(node, prefix, out)
  out = out or {}
  prefix = prefix or ""
  for _, f in ipairs(node.fields or {}) do
    local path = prefix .. f.name
    local lim = M.field_limits(f)
    out[#out + 1] = { path = path, type = type_of(f), required = f.required == true, desc = f.desc or "",
                      limits = lim, ["in"] = f["in"] }
    if f.type == "object" then M.rows(f, path .. ".", out) end
  end
  return out
end

local function cell(s) return (tostring(s):gsub("|", "\\|")) end

local function table_of(node)
  local lines = { "| field | type | required | 描述 | limits |", "| --- | --- | --- | --- | --- |" }
  for _, r in ipairs(M.rows(node)) do
    lines[#lines + 1] = ("| `%s` | %s | %s | %s | %s |"):format(r.path, r.type, r.required and "yes" or "",
      cell(r.desc), cell(r.limits))
  end
  return table.concat(lines, "\n")
end

-- markdown(endpoint) -> text
function M.markdown(ep)
  if type(ep) ~= "table" or not ep.method then error("doc.markdown: expected an endpoint of the schema", 2) end
  local out = { ("### %s `%s %s`"):format(ep.title, ep.method, ep.path), "" }
  if ep.doc then out[#out + 1] = ep.doc .. (ep.rate and (" Rate: " .. ep.rate .. ".") or ""); out[#out + 1] = "" end
  for _, part in ipairs { { "params", "Path" }, { "query", "Query" }, { "body", "Body" }, { "meta", "Body (`meta` part)" } } do
    local node = ep[part[1]]
    if node and node.fields and #node.fields > 0 then
      out[#out + 1] = part[2] .. ":"
      out[#out + 1] = ""
      out[#out + 1] = table_of(node)
      out[#out + 1] = ""
    end
  end
  if ep.rules then
    out[#out + 1] = "Rules: " .. table.concat((function()
      local t = {}
      for i, r in ipairs(ep.rules) do t[i] = "`" .. r.path .. "`: " .. r.desc end
      return t
    end)(), "; ") .. "."
    out[#out + 1] = ""
  end
  if ep.response and ep.response.fields then
    local names = {}
    for i, f in ipairs(ep.response.fields) do names[i] = "`" .. f.name .. "`" end
    out[#out + 1] = "Answer: " .. table.concat(names, ", ") .. "."
    out[#out + 1] = ""
  end
  return table.concat(out, "\n")
end

-- reference() -> every endpoint's section
function M.reference()
  local out = {}
  for _, ep in ipairs(schema.endpoints) do out[#out + 1] = M.markdown(ep) end
  return table.concat(out, "\n")
end

return M
