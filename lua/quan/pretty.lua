-- quan.pretty: values as readable text. Tables indented with sorted keys,
-- short arrays of scalars inline, tables met twice (cycles included) marked
-- with an id; an HTTP result shows its status, request id and JSON body; a
-- pager (node:each{...}) its count and its first rows, one a line.
-- Colour on request; widths are display widths (a CJK character counts 2
-- columns), so Chinese text lines up.
local text = require "quan.text"

local M = {}

local concat, sort, rep = table.concat, table.sort, string.rep
local type, pairs, tostring, getmetatable = type, pairs, tostring, getmetatable
local math_type, rawlen = math.type, rawlen

local null = (function()
  local ok, cjson = pcall(require, "cjson")
  return ok and cjson.null or nil
end)()

-- ---- display width -------------------------------------------------------

-- width(s) -> columns s takes on a terminal; charwidth(codepoint) -> 0, 1
-- or 2 (quan.text's, the one home of both)
M.width = text.width
M.charwidth = text.charwidth

-- pad(s, w) -> s followed by spaces up to display width w
function M.pad(s, w)
  local n = w - M.width(s)
  return n > 0 and s .. rep(" ", n) or s
end

-- ---- colour --------------------------------------------------------------

-- use_color([fd=1]) -> true when writing to a terminal and NO_COLOR is unset
function M.use_color(fd)
  local nc = os.getenv("NO_COLOR")
  if nc and nc ~= "" then return false end
  if os.getenv("TERM") == "dumb" then return false end
  local ok, qos = pcall(require, "quan.os")
  return ok and qos.isatty(fd or 1) or false
end

local palette = {
  string = "32", number = "36", boolean = "35", null = "35", key = "0",
  meta = "2", status_ok = "1;32", status_bad = "1;31", label = "1", err = "1;31",
}

local function paint(on, role, s)
  if not on then return s end
  return "\27[" .. palette[role] .. "m" .. s .. "\27[0m"
end
M.paint = paint

-- ---- scalars -------------------------------------------------------------

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- quote(s) -> s as a Lua string literal; UTF-8 text stays readable
function M.quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or ("\\%03d"):format(c:byte())
  end) .. '"'
end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil and not ({
    ["and"] = 1, ["break"] = 1, ["do"] = 1, ["else"] = 1, ["elseif"] = 1, ["end"] = 1,
    ["false"] = 1, ["for"] = 1, ["function"] = 1, ["goto"] = 1, ["if"] = 1, ["in"] = 1,
    ["local"] = 1, ["nil"] = 1, ["not"] = 1, ["or"] = 1, ["repeat"] = 1, ["return"] = 1,
    ["then"] = 1, ["true"] = 1, ["until"] = 1, ["while"] = 1,
  })[k]
end

local function scalar(v, color)
  local t = type(v)
  if t == "string" then return paint(color, "string", M.quote(v)) end
  if t == "number" then
    if math_type(v) == "float" and v == math.floor(v) and v > -1e15 and v < 1e15 then
      return paint(color, "number", ("%.1f"):format(v))
    end
    return paint(color, "number", tostring(v))
  end
  if t == "boolean" or t == "nil" then return paint(color, "boolean", tostring(v)) end
  if v == null then return paint(color, "null", "null") end
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__tostring then
    local ok, s = pcall(tostring, v)
    if ok and type(s) == "string" then return s end
  end
  if type(mt) == "table" and type(mt.__name) == "string" then
    return paint(color, "meta", "<" .. mt.__name .. ">")
  end
  return paint(color, "meta", "<" .. tostring(v) .. ">")
end

-- ---- tables --------------------------------------------------------------

local kind_order = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (kind_order[ta] or 4) < (kind_order[tb] or 4) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

-- is_array(t) -> n when t's keys are exactly 1..n (n > 0)
local function is_array(t)
  local n = #t
  if n == 0 then return nil end
  local count = 0
  for _ in pairs(t) do
    count = count + 1
    if count > n then return nil end
  end
  return count == n and n or nil
end

local function is_plain(v)
  if type(v) ~= "table" then return true end
  if v == null then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__tostring ~= nil and next(v) == nil
end

-- count tables reachable from v: those met more than once get an id
local function count_refs(v, counts)
  if type(v) ~= "table" or v == null then return end
  counts[v] = (counts[v] or 0) + 1
  if counts[v] > 1 then return end
  for k, x in pairs(v) do
    count_refs(k, counts)
    count_refs(x, counts)
  end
end

local function render(v, opts, out, level, st)
  local color = opts.color
  if type(v) ~= "table" or v == null then
    out[#out + 1] = scalar(v, color)
    return
  end
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__tostring and not opts.raw then
    out[#out + 1] = scalar(v, color)
    return
  end
  if st.ids[v] then
    out[#out + 1] = paint(color, "meta", "<table " .. st.ids[v] .. ">")
    return
  end
  if st.counts[v] and st.counts[v] > 1 then
    st.next_id = st.next_id + 1
    st.ids[v] = st.next_id
    out[#out + 1] = paint(color, "meta", "<" .. st.next_id .. ">")
  end
  if next(v) == nil then
    out[#out + 1] = "{}"
    return
  end
  if level >= opts.depth then
    out[#out + 1] = paint(color, "meta", "{...}")
    return
  end
  local indent = rep(opts.indent, level + 1)
  local n = is_array(v)
  if n then
    -- an array of scalars that fits on the line stays on one line
    local inline, width = true, level * #opts.indent + 4
    local parts = {}
    for i = 1, n do
      if not is_plain(v[i]) then inline = false break end
      parts[i] = scalar(v[i], color)
      width = width + M.width(parts[i]) + 2
      if width > opts.width then inline = false break end
    end
    if inline then
      out[#out + 1] = "{ " .. concat(parts, ", ") .. " }"
      return
    end
    out[#out + 1] = "{\n"
    for i = 1, n do
      out[#out + 1] = indent
      render(v[i], opts, out, level + 1, st)
      out[#out + 1] = i < n and ",\n" or "\n"
    end
    out[#out + 1] = rep(opts.indent, level) .. "}"
    return
  end
  -- a mixed table: its sequence 1..#v first, without keys, then the rest
  local seq = rawlen(v)
  local keys = {}
  for k in pairs(v) do
    if not (math_type(k) == "integer" and k >= 1 and k <= seq) then keys[#keys + 1] = k end
  end
  sort(keys, key_less)
  -- keys, then '=' aligned by display width
  local labels, w = {}, 0
  for i, k in ipairs(keys) do
    local label
    if is_identifier(k) then label = k
    elseif type(k) == "table" and k ~= null then label = "[" .. paint(color, "meta", tostring(k)) .. "]"
    else label = "[" .. scalar(k, color) .. "]" end
    labels[i] = label
    local lw = M.width(label)
    if lw > w then w = lw end
  end
  if w > 24 then w = 0 end -- one very long key: do not push everything right
  out[#out + 1] = "{\n"
  local total = seq + #keys
  for i = 1, seq do
    out[#out + 1] = indent
    render(v[i], opts, out, level + 1, st)
    out[#out + 1] = i < total and ",\n" or "\n"
  end
  for i, k in ipairs(keys) do
    out[#out + 1] = indent .. M.pad(paint(color, "key", labels[i]), w) .. " = "
    render(v[k], opts, out, level + 1, st)
    out[#out + 1] = seq + i < total and ",\n" or "\n"
  end
  out[#out + 1] = rep(opts.indent, level) .. "}"
end

-- is_response(v) -> true for a client result {status, headers, body|json}
function M.is_response(v)
  return type(v) == "table" and math_type(rawget(v, "status")) == "integer"
    and type(rawget(v, "headers")) == "table"
    and (rawget(v, "json") ~= nil or type(rawget(v, "body")) == "string")
end

local function response(v, opts)
  local color = opts.color
  local status = v.status
  local head = paint(color, status < 400 and "status_ok" or "status_bad", "HTTP " .. status)
  local rid = v.request_id or (v.headers and v.headers["request-id"])
  if rid then head = head .. paint(color, "meta", "  request id ") .. tostring(rid) end
  local body = v.json
  if body == nil and v.body and v.body ~= "" then
    local ok, cjson = pcall(require, "cjson.safe")
    body = ok and cjson.decode(v.body) or nil
    if body == nil then body = v.body end
  end
  if body == nil then return head end
  return head .. "\n" .. M.format(body, opts)
end

-- ---- pagers --------------------------------------------------------------

-- is_pager(v) -> true for the pager of node:each{...} (wechatpay.client)
function M.is_pager(v)
  local mt = type(v) == "table" and getmetatable(v)
  return type(mt) == "table" and mt.__name == "wechatpay.pager"
end

-- row_order(pager) -> the field names of a row in the docs' order (the
-- endpoint's answer: data[]'s fields), or nil
local function row_order(p)
  local ep = rawget(p, "endpoint")
  local fields = type(ep) == "table" and type(ep.response) == "table" and ep.response.fields or {}
  for _, f in ipairs(fields) do
    if f.name == "data" and type(f.items) == "table" and f.items.fields then
      local names = {}
      for i, g in ipairs(f.items.fields) do names[i] = g.name end
      return names
    end
  end
end

-- row_line(row, order, opts, width) -> the row on one line: its scalar
-- fields in order (the others after, sorted), a table as {…}, cut at width
local function row_line(row, order, opts, width)
  if type(row) ~= "table" or row == null then return M.format(row, opts) end
  local keys, seen = {}, {}
  for _, k in ipairs(order or {}) do
    if row[k] ~= nil then keys[#keys + 1] = k; seen[k] = true end
  end
  local rest = {}
  for k in pairs(row) do if not seen[k] then rest[#rest + 1] = k end end
  sort(rest, key_less)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  local parts = {}
  for _, k in ipairs(keys) do
    local x = row[k]
    local shown = (type(x) == "table" and x ~= null) and paint(opts.color, "meta", "{…}") or scalar(x, opts.color)
    parts[#parts + 1] = (is_identifier(k) and k or ("[" .. scalar(k, opts.color) .. "]")) .. " = " .. shown
  end
  local line = concat(parts, ", ")
  if M.width(line) > width then
    -- cut by characters, not bytes, so UTF-8 stays whole
    local out, w = {}, 0
    for _, c in utf8.codes(line) do
      local ch = utf8.char(c)
      local cw = M.width(ch)
      if w + cw > width - 1 then break end
      out[#out + 1] = ch
      w = w + cw
    end
    line = concat(out) .. "…" .. (opts.color and "\27[0m" or "")
  end
  return line
end

-- the rows of a pager shown before "..."
M.PAGER_ROWS = 10

local function pager(v, opts)
  local head = tostring(rawget(v, "template") and ("GET /" .. v.template) or "pager")
  local first = rawget(v, "first")
  if not first then
    return paint(opts.color, "meta", "<wechatpay.pager " .. head .. ": no page read yet>")
  end
  local total, limit = rawget(v, "total_count"), rawget(v, "limit")
  local data = type(first.json) == "table" and type(first.json.data) == "table" and first.json.data or {}
  local lines = {}
  local count = total and (("%d row%s"):format(total, total == 1 and "" or "s")) or (#data .. "+ rows")
  if total and limit and limit > 0 then
    local pages = (total + limit - 1) // limit
    count = count .. (" in %d page%s of %d"):format(pages, pages == 1 and "" or "s", limit)
  end
  local shown = math.min(#data, M.PAGER_ROWS)
  lines[1] = paint(opts.color, "label", head) .. ": " .. count
    .. (shown > 0 and ("; the first " .. shown .. ":") or "")
  local order = row_order(v)
  local iw = #tostring(shown)
  for i = 1, shown do
    lines[#lines + 1] = ("%" .. iw .. "d  "):format(i) .. row_line(data[i], order, opts, opts.width - iw - 2)
  end
  if total and total > shown then
    lines[#lines + 1] = paint(opts.color, "meta", "… for row in <pager> do ... end reads all, <pager>:all() lists them")
  end
  return concat(lines, "\n")
end

local function options(opts)
  opts = opts or {}
  return {
    color = opts.color or false,
    indent = opts.indent or "  ",
    depth = opts.depth or math.huge,
    width = opts.width or 80,
    raw = opts.raw,
  }
end

-- format(v [, opts]) -> text. opts: color (false), indent ("  "), depth
-- (unlimited), width (80, for inline arrays), raw (ignore __tostring).
-- A client result prints as `HTTP status  request id ...` and its body.
function M.format(v, opts)
  opts = options(opts)
  if M.is_response(v) and not opts.raw then return response(v, opts) end
  if M.is_pager(v) and not opts.raw then return pager(v, opts) end
  local counts = {}
  count_refs(v, counts)
  local out = {}
  render(v, opts, out, 0, { counts = counts, ids = {}, next_id = 0 })
  return concat(out)
end

-- columns(rows [, opts]) -> text: rows (arrays of cells) as columns padded
-- by display width, cells separated by two spaces; opts.color paints the
-- first row as a header.
function M.columns(rows, opts)
  opts = opts or {}
  local widths = {}
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do
      local w = M.width(tostring(cell))
      if w > (widths[i] or 0) then widths[i] = w end
    end
  end
  local lines = {}
  for r, row in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(row) do
      cell = tostring(cell)
      cells[i] = i < #row and M.pad(cell, widths[i]) or cell
    end
    local line = concat(cells, "  "):gsub("%s+$", "")
    if r == 1 and opts.color then line = paint(true, "label", line) end
    lines[r] = line
  end
  return concat(lines, "\n")
end

-- print(...) -> writes each value formatted (colour on a terminal)
function M.print(...)
  local color = M.use_color(1)
  local parts = {}
  for i = 1, select("#", ...) do
    parts[i] = M.format((select(i, ...)), { color = color, width = M.term_width() })
  end
  io.stdout:write(concat(parts, "\t"), "\n")
end

-- term_width() -> columns of the terminal on stdout (80 when unknown)
function M.term_width()
  local ok, qos = pcall(require, "quan.os")
  local c = ok and qos.columns and qos.columns() or nil
  return (type(c) == "number" and c > 20) and c or 80
end

return M
