-- quan.repl.help: help(x) in the REPL.
--
--   help()                 what the REPL offers
--   help(wx.v3....couponStocks)  an endpoint: method, path, parameter table
--   help("/v3/marketing/favor/coupon-stocks"), help("create_stock")
--   help("coupon_amount"), help("stock_use_rule.max_coupons")
--                          a field wherever an endpoint has it: its paths,
--                          Chinese name, type, unit, limits, enum values
--                          with their meanings, the rules involving it
--   help(endpoint, "max_coupons")  the field of that endpoint (a node, an
--                          id, "POST /v3/...")
--   help(fn)               a function's doc (M.docs, or a module's _docs),
--                          else its signature from the debug library
--   help(module)           the module's functions, one line each
--
-- Endpoint facts come from wechatpay.favor.schema, the same data the
-- validator and the sandbox use (rendered by wechatpay.favor.doc, as in
-- docs/campaigns.md). Names that start with "_" are a module's internals:
-- help(module) does not list them.
local M = {}

local pretty = require "quan.pretty"
local suggest = require "quan.suggest"

local function schema()
  local ok, s = pcall(require, "wechatpay.favor.schema")
  return ok and type(s) == "table" and s or nil
end

-- Docs by qualified name: "signature\n\ntext". Other modules may add theirs
-- here, or export `_docs = { fname = "..." }` from the module table.
M.docs = {
  ["await"] = "await(p) -> values\n\nWaits for a promise (the result of an ...Async verb) and returns what it resolves to; raises its error. A promise typed at the prompt is awaited by itself.",
  ["help"] = "help([x [, field]])\n\nShows an endpoint's parameters (help(wx.v3.marketing.favor.couponStocks)), a field of the schema (help \"coupon_amount\", help(wx.v3.marketing.favor.couponStocks, \"stock_use_rule.max_coupons\")), a function's doc or a module's functions.",
  ["curl"] = "curl([x, ...])\n\nPrints a request as a curl command, signed anew (valid five minutes): curl() the last request made at the prompt, curl(res) or curl(err) the one a result or an error came from, curl(node, \"get\", {...}) one not sent.",
  ["wechatpay.new"] = "wechatpay.new{mchid=, serial=, private_key=, certs=, apiv3_key=, base_url=, ca_file=, timeout=} -> client\n\nBuilds a client from explicit settings; raises a config error table when they are wrong. See docs/client.md.",
  ["wechatpay.client"] = "wechatpay.client([profile]) -> client\n\nBuilds the client of a profile of the config file; the private sandbox when none is configured (or QUAN_SANDBOX=1). In the REPL this is `wx`.",
  ["json.encode"] = "json.encode(value) -> JSON text (lua-cjson)",
  ["json.decode"] = "json.decode(text) -> value; json.null stands for null (lua-cjson)",
  ["quan.pretty.format"] = "pretty.format(v [, {color=, indent=, depth=, width=, raw=}]) -> text\n\nTables indented with sorted keys, short arrays inline, repeated tables marked <n>; a client result shows HTTP status, request id and JSON body.",
  ["quan.pretty.print"] = "pretty.print(...)\n\nWrites each value formatted, in colour on a terminal unless NO_COLOR is set.",
  ["quan.pretty.width"] = "pretty.width(s) -> columns s takes on a terminal (East Asian wide characters count 2)",
  ["quan.pretty.columns"] = "pretty.columns(rows [, {color=}]) -> text with the cells of each row aligned by display width",
  ["quan.os.now"] = "os.now() -> monotonic seconds (float)",
  ["quan.os.sleep"] = "os.sleep(s) -> sleeps s seconds",
  ["quan.edit.readline"] = "edit.readline(prompt) -> line | nil (EOF) | false, \"interrupted\"",
}

M.docs["quan.repl.curl"] = M.docs.curl -- the REPL's curl global

-- ---- finding names -------------------------------------------------------

local aliases = { ["wechatpay.favor"] = "favor", cjson = "json", ["_G"] = "" }

-- name_of(fn) -> qualified name, short name (as typed in the REPL), module table
local function name_of(fn)
  for modname, mod in pairs(package.loaded) do
    if type(mod) == "table" then
      for k, v in pairs(mod) do
        if v == fn and type(k) == "string" then
          local short = aliases[modname] or modname
          return modname .. "." .. k, (short == "" and k or short .. "." .. k), mod, k
        end
      end
    end
  end
  local c = package.loaded["wechatpay.client"]
  if type(c) == "table" and type(c.Client) == "table" then
    for k, v in pairs(c.Client) do
      if v == fn then return "wx:" .. k, "wx:" .. k, c.Client, k end
    end
  end
end

-- the comment block right above line `line` of a source file, when the file
-- can be found (next to the binary in a build tree, or from the current dir)
local function comment_above(src, line)
  local paths = { src }
  local ok, qos = pcall(require, "quan.os")
  local exe = ok and qos.exe and qos.exe()
  if exe then paths[#paths + 1] = exe:gsub("/[^/]*$", "") .. "/../" .. src end
  for _, path in ipairs(paths) do
    local f = io.open(path, "r")
    if f then
      local lines, n = {}, 0
      for l in f:lines() do
        n = n + 1
        if n >= line then break end
        lines[n] = l
      end
      f:close()
      local out = {}
      for i = line - 1, 1, -1 do
        local c = lines[i] and lines[i]:match("^%s*%-%-%s?(.*)$")
        if not c or lines[i]:match("^%s*%-%-%-%-") then break end
        table.insert(out, 1, c)
      end
      if #out > 0 then return table.concat(out, "\n") end
      return nil
    end
  end
end

local function signature(fn, name)
  local info = debug.getinfo(fn, "uS")
  if info.what == "C" then return name .. "(...)  [C function]" end
  local doc = info.source:sub(1, 1) == "@" and comment_above(info.source:sub(2), info.linedefined)
  if doc then return doc end
  local params = {}
  for i = 1, info.nparams do params[i] = debug.getlocal(fn, i) end
  if info.isvararg then params[#params + 1] = "..." end
  return ("%s(%s)  [%s:%d]"):format(name, table.concat(params, ", "), info.short_src, info.linedefined)
end

-- doc_of(fn) -> text | nil
function M.doc_of(fn)
  local repl = package.loaded["quan.repl"]
  if repl and repl.docs and repl.docs[fn] then return repl.docs[fn] end
  local qname, short, mod, key = name_of(fn)
  if not qname then return nil end
  local d = M.docs[qname] or M.docs[short]
  if d then return d end
  local own = type(mod) == "table" and rawget(mod, "_docs")
  if type(own) == "table" and type(own[key]) == "string" then return own[key] end
  return signature(fn, short)
end

-- ---- endpoints -----------------------------------------------------------

local VERBS = { "GET", "POST", "PUT", "PATCH", "DELETE" }

local function chain_form(path)
  local parts = { "wx" }
  for seg in path:gmatch("[^/]+") do
    local var = seg:match("^{(.+)}$")
    parts[#parts + 1] = var and ("_" .. var .. "_") or seg:gsub("%-(%w)", string.upper)
  end
  return table.concat(parts, ".")
end

local function type_of(node)
  local t = node.type or "?"
  if t == "array" and type(node.items) == "table" and node.items.type ~= "object" then
    t = "array<" .. tostring(node.items.type) .. ">"
  end
  return t
end

local function describe(node)
  local d = node.desc or ""
  if node["in"] == "path" then d = d .. " (path)" end
  return d
end

local function doc()
  local ok, d = pcall(require, "wechatpay.favor.doc")
  return ok and d or nil
end

-- limits_of(field) -> the enum values as the API docs list them ("A | B
-- 枚举值之一"), then the other limits with their unit
local function limits_of(f)
  local parts = {}
  local enum = f.enum or (f.items and f.items.enum)
  if enum then
    local vals = {}
    for i, v in ipairs(enum) do vals[i] = tostring(v) end
    parts[1] = table.concat(vals, " | ") .. " 枚举值之一"
  end
  local d = doc()
  local lim = d and d.field_limits(f, { enum = false }) or ""
  if lim ~= "" then parts[#parts + 1] = lim end
  return table.concat(parts, "; ")
end

local function add_rows(rows, node, depth)
  if type(node) ~= "table" then return end
  if node.type == "array" and type(node.items) == "table" then node = node.items end
  for _, f in ipairs(node.fields or {}) do
    rows[#rows + 1] = { ("  "):rep(depth) .. f.name, type_of(f), f.required and "required" or "", describe(f),
                        limits_of(f) }
    add_rows(rows, f, depth + 1)
  end
end

local function any_required(node)
  for _, f in ipairs(type(node) == "table" and node.fields or {}) do
    if f.required then return true end
  end
  return false
end

-- endpoint_text(ep [, color]) -> the endpoint's help page
function M.endpoint_text(ep, color)
  local bold = function(s) return pretty.paint(color, "label", s) end
  local out = {}
  out[#out + 1] = bold(ep.title or ep.id or ep.path)
  out[#out + 1] = ("%s %s"):format(bold(ep.method), ep.path)
  out[#out + 1] = ("%s:%s{...}"):format(chain_form(ep.path), ep.method:lower())
  if ep.doc then out[#out + 1] = ep.doc end
  if ep.rate then out[#out + 1] = "rate limit: " .. ep.rate end
  if ep.paging then
    out[#out + 1] = ("every page: %s:each{query = {...}} (offset counts %s; %d rows a page)"):format(
      chain_form(ep.path), ep.paging.offset == "page" and "pages" or "rows", ep.paging.limit)
  end
  local rows = { { "请求参数 field", "类型 type", "必填", "描述 description", "限制 limits" } }
  add_rows(rows, ep.params, 0)
  if ep.query then
    rows[#rows + 1] = { "query", "object", any_required(ep.query) and "required" or "", "查询参数 query string" }
    add_rows(rows, ep.query, 1)
  end
  if ep.body then
    rows[#rows + 1] = { "json", "object", any_required(ep.body) and "required" or "", ep.body.desc or "声明请求的JSON数据结构" }
    add_rows(rows, ep.body, 1)
  end
  if ep.meta then
    rows[#rows + 1] = { "file", "string", "required", "文件路径 (the multipart meta below is made from it)" }
    add_rows(rows, ep.meta, 1)
  end
  out[#out + 1] = ""
  if #rows > 1 then
    out[#out + 1] = pretty.columns(rows, { color = color })
  else
    out[#out + 1] = "(no parameters)"
  end
  if ep.rules and #ep.rules > 0 then
    out[#out + 1] = ""
    out[#out + 1] = bold("rules")
    for _, r in ipairs(ep.rules) do out[#out + 1] = "  " .. r.path .. ": " .. r.desc end
  end
  if ep.response and ep.response.fields then
    local res = { { "返回字典 field", "类型 type", "必填", "描述 description", "限制 limits" } }
    add_rows(res, ep.response, 0)
    out[#out + 1] = ""
    out[#out + 1] = pretty.columns(res, { color = color })
  end
  return table.concat(out, "\n")
end

-- ---- fields --------------------------------------------------------------

-- the request parts of an endpoint, with the option that carries each
local PARTS = { { "params", "path" }, { "query", "query" }, { "body", "json" }, { "meta", "meta" } }

local places -- every field of every endpoint: { ep, part, path, node }

-- walk(node, prefix, fn): fn(path, field) for each field below node, depth
-- first; an array's items are "name[]"
local function walk(node, prefix, fn)
  if type(node) ~= "table" then return end
  if node.type == "array" and type(node.items) == "table" then node = node.items end
  for _, f in ipairs(node.fields or {}) do
    local path = prefix .. f.name
    fn(path, f)
    local inner = f
    if f.type == "array" and type(f.items) == "table" then
      path = path .. "[]"
      inner = f.items
    end
    walk(inner, path .. ".", fn)
  end
end

local function all_places()
  if places then return places end
  places = {}
  local s = schema()
  for _, ep in ipairs(s and s.endpoints or {}) do
    for _, part in ipairs(PARTS) do
      walk(ep[part[1]], "", function(path, f)
        places[#places + 1] = { ep = ep, part = part[2], path = path, node = f }
      end)
    end
    walk(ep.response, "", function(path, f)
      places[#places + 1] = { ep = ep, part = "answer", path = path, node = f }
    end)
  end
  return places
end

-- find_fields(name[, eps]) -> the places of a field: its path ("coupon_amount",
-- "stock_use_rule.max_coupons", "json.stock_name", "query.limit") or the
-- end of one, among the endpoints eps (every endpoint when nil)
local function find_fields(name, eps)
  local part, rest = name:match("^(%a+)%.(.+)$")
  local parts = { path = true, query = true, json = true, meta = true, answer = true }
  if not (part and parts[part]) then part, rest = nil, name end
  local only
  if eps then
    only = {}
    for _, ep in ipairs(eps) do only[ep] = true end
  end
  local out = {}
  for _, p in ipairs(all_places()) do
    if (not only or only[p.ep]) and (not part or p.part == part)
      and (p.path == rest or p.path:sub(-#rest - 1) == "." .. rest) then
      out[#out + 1] = p
    end
  end
  return out
end

-- field_names() -> every field name and path of the schema, for "did you mean"
local function field_names()
  local seen, list = {}, {}
  for _, p in ipairs(all_places()) do
    for _, n in ipairs { p.path, p.node.name } do
      if not seen[n] then seen[n] = true list[#list + 1] = n end
    end
  end
  return list
end

-- yuan(fen) -> "0.02 元"
local function yuan(fen)
  local s = ("%.2f"):format(fen / 100):gsub("%.00$", ""):gsub("(%.%d)0$", "%1")
  return s .. " 元"
end

-- rules_of(place) -> the endpoint's rules on the field: on its path, or
-- naming it
local function rules_of(p)
  local out = {}
  local leaf = p.node.name
  for _, r in ipairs(p.ep.rules or {}) do
    if r.path == p.path or r.desc:find("%f[%w_]" .. leaf:gsub("%p", "%%%0") .. "%f[^%w_]") then
      out[#out + 1] = r
    end
  end
  return out
end

local function where(p)
  local part = p.part == "answer" and "answer" or p.part
  return ("%s %s (%s): %s %s%s"):format(p.ep.method, p.ep.path, p.ep.title or p.ep.id, part, p.path,
    p.node.required and ", required" or "")
end

-- field_block(group, color) -> the help of one field, wherever it is
local function field_block(group, color)
  local bold = function(s) return pretty.paint(color, "label", s) end
  local f = group[1].node
  local d = doc()
  local rows = {}
  local function row(label, text) rows[#rows + 1] = { "  " .. label, text } end
  local paths = {}
  for _, p in ipairs(group) do paths[#paths + 1] = where(p) end
  for i, w in ipairs(paths) do row(i == 1 and "where" or "", w) end
  row("type", type_of(f) .. (f.format and (" (" .. f.format .. ")") or ""))
  local unit = f.unit or (f.items and f.items.unit)
  if unit == "分" then row("unit", "分 (fen: 100 分 = 1 元)")
  elseif unit then row("unit", unit) end
  local lim = d and d.field_limits(f, { enum = false }) or ""
  if unit == "分" and f.min and f.max then
    lim = lim .. (" (%s … %s)"):format(yuan(f.min), yuan(f.max))
  end
  if lim ~= "" then row("limits", lim) end
  local enum_node = f.enum and f or (f.items and f.items.enum and f.items)
  if enum_node then
    local w = 0
    for _, v in ipairs(enum_node.enum) do w = math.max(w, pretty.width(tostring(v))) end
    for i, v in ipairs(enum_node.enum) do
      local meaning = enum_node.enum_desc and enum_node.enum_desc[v]
      row(i == 1 and "values" or "", meaning and (pretty.pad(tostring(v), w) .. "  " .. meaning) or tostring(v))
    end
    if enum_node.accept then row("", "also accepted: " .. table.concat(enum_node.accept, " ")) end
  end
  if f.note then row("note", f.note) end
  if f.example ~= nil then row("example", tostring(f.example)) end
  local seen, n = {}, 0
  for _, p in ipairs(group) do
    for _, r in ipairs(rules_of(p)) do
      if not seen[r] then
        seen[r] = true
        n = n + 1
        row(n == 1 and "rules" or "", r.desc .. "  (" .. r.path .. ")")
      end
    end
  end
  local title = group[1].path:match("([^.]+)$")
  return bold(title) .. "  " .. (f.desc or "") .. "\n" .. pretty.columns(rows)
end

-- group_key(place) -> places that read the same share one block
local function group_key(p)
  local f = p.node
  local d = doc()
  return table.concat({ p.part == "answer" and "answer" or "request", p.node.name, f.desc or "", type_of(f),
    tostring(f.unit), d and d.field_limits(f) or "", tostring(f.note) }, "\0")
end

-- fields_text(name[, eps][, color]) -> the help of a field, or nil when no
-- endpoint has it: the request fields first, each as one block; fields
-- only in answers after, listed
function M.fields_text(name, eps, color)
  local found = find_fields(name, eps)
  if #found == 0 then return nil end
  local groups, order = {}, {}
  for _, p in ipairs(found) do
    local k = group_key(p)
    if not groups[k] then
      groups[k] = {}
      order[#order + 1] = k
    end
    table.insert(groups[k], p)
  end
  local requests, answers = {}, {}
  for _, k in ipairs(order) do
    if groups[k][1].part == "answer" then answers[#answers + 1] = groups[k] else requests[#requests + 1] = groups[k] end
  end
  local out = {}
  for _, g in ipairs(requests) do out[#out + 1] = field_block(g, color) end
  if #requests == 0 then
    for _, g in ipairs(answers) do out[#out + 1] = field_block(g, color) end
  elseif #answers > 0 then
    local lines = { "also in answers:" }
    for _, g in ipairs(answers) do
      for _, p in ipairs(g) do lines[#lines + 1] = "  " .. where(p) end
    end
    out[#out + 1] = table.concat(lines, "\n")
  end
  return table.concat(out, "\n\n")
end

-- nothing_text(x) -> "help: nothing known about x" and the closest names
local function nothing_text(x)
  local names = field_names()
  local s = schema()
  for id in pairs(s and s.by_id or {}) do names[#names + 1] = id end
  for k in pairs(M.docs) do names[#names + 1] = k end
  table.sort(names)
  return "help: nothing known about " .. pretty.quote(x) .. suggest.hint(x, names)
end

-- endpoints_at(path) -> endpoints whose template is path, and those below it
function M.endpoints_at(path)
  local s = schema()
  if not s then return {}, {} end
  path = "/" .. path:gsub("^/", ""):gsub("/$", "")
  local here, below = {}, {}
  for _, ep in ipairs(s.endpoints) do
    if ep.path == path then here[#here + 1] = ep
    elseif path == "/" or ep.path:sub(1, #path + 1) == path .. "/" then below[#below + 1] = ep end
  end
  if #here == 0 then -- a concrete path: /v3/.../stocks/123
    for _, verb in ipairs(VERBS) do
      local ep = s.find(verb, path)
      if ep then here[#here + 1] = ep end
    end
  end
  return here, below
end

local function list_endpoints(eps, color)
  local rows = {}
  for _, ep in ipairs(eps) do
    rows[#rows + 1] = { ep.method, chain_form(ep.path) .. ":" .. ep.method:lower(), ep.title or "" }
  end
  return pretty.columns(rows)
end

local function path_text(path, color)
  local here, below = M.endpoints_at(path)
  if #here == 0 and #below == 0 then
    if not schema() then return "help: the endpoint schemas (wechatpay.favor.schema) are not available" end
    return "help: no endpoint at " .. path
  end
  local parts = {}
  for _, ep in ipairs(here) do parts[#parts + 1] = M.endpoint_text(ep, color) end
  if #below > 0 then
    parts[#parts + 1] = "endpoints under /" .. path:gsub("^/", "") .. ":\n" .. list_endpoints(below, color)
  end
  return table.concat(parts, "\n\n")
end

-- path_of(x) -> "/v3/..." for a client or an API node, nil otherwise
local function path_of(x)
  local c = package.loaded["wechatpay.client"]
  if type(c) ~= "table" then return nil end
  local mt = getmetatable(x)
  if mt ~= nil and mt == c.Client then return "/" end
  if mt ~= nil and mt == c.Node then
    local ok, text = pcall(tostring, x) -- "wechatpay.node /v3/..."
    return ok and text:match("^wechatpay%.node (/.*)$") or nil
  end
end

-- ---- help ----------------------------------------------------------------

local OVERVIEW = [[
quan REPL: type Lua; an expression prints its value (=expr works too).
  wx          the client of the active profile (the sandbox when none is set)
  favor       campaign builders (wechatpay.favor); wechatpay, json (cjson)
  await(p)    the value of a promise (an ...Async call); typed alone, it is awaited
  help(x)     an endpoint's parameters, e.g. help(wx.v3.marketing.favor.couponStocks),
              a field: help "coupon_amount", help(node, "stock_use_rule.max_coupons"),
              a function's doc, a module's functions
  curl(x)     a request as a curl command: curl() the last one, curl(res), curl(err)
Tab completes names, API path segments, methods, verbs, options and request fields;
node:each{...} walks every page of a list.
Ctrl-C cancels the line or the request in flight; Ctrl-D leaves.]]

-- endpoints_of(x) -> the endpoints x names (an API node, an id, "VERB
-- /path", a path), or nil
local function endpoints_of(x)
  local s = schema()
  if not s then return nil end
  local p = path_of(x)
  if not p and type(x) == "string" then
    if s.by_id[x] then return { s.by_id[x] } end
    local verb, path = x:match("^(%a+)%s+(/%S*)$")
    if verb then
      local ep = s.find(verb, path)
      return ep and { ep } or nil
    end
    if x:find("^/") or x:find("^v3/") then p = x end
  end
  if not p then return nil end
  local here, below = M.endpoints_at(p)
  if #here > 0 then return here end
  if #below > 0 then return below end
  return nil
end

-- text(x [, field] [, color]) -> the help text for x, or for its field
function M.text(x, field, color)
  if type(field) == "boolean" then field, color = nil, field end
  if field ~= nil then
    if type(field) ~= "string" then return "help: the field must be a name such as \"stock_use_rule.max_coupons\"" end
    local eps = endpoints_of(x)
    if not eps then return "help: " .. pretty.quote(tostring(x)) .. " is not an endpoint" end
    local t = M.fields_text(field, eps, color)
    if t then return t end
    local names = {}
    for _, p in ipairs(all_places()) do
      for _, ep in ipairs(eps) do if p.ep == ep then names[#names + 1] = p.path end end
    end
    return ("help: %s %s has no field %s%s"):format(eps[1].method, eps[1].path, pretty.quote(field),
      suggest.hint(field, names))
  end
  if x == nil then
    local s = schema()
    local t = OVERVIEW
    if s then t = t .. "\n\nendpoints:\n" .. list_endpoints(s.endpoints, color) end
    return t
  end
  local p = path_of(x)
  if p then return path_text(p, color) end
  if type(x) == "string" then
    local s = schema()
    if s and s.by_id and s.by_id[x] then return M.endpoint_text(s.by_id[x], color) end
    local verb, path = x:match("^(%a+)%s+(/%S*)$")
    if verb and s then
      local ep = s.find(verb, path)
      return ep and M.endpoint_text(ep, color) or ("help: no endpoint " .. x)
    end
    if x:find("^/") or x:find("^v3/") then return path_text(x, color) end
    if M.docs[x] then return M.docs[x] end
    local t = M.fields_text(x, nil, color)
    if t then return t end
    return nothing_text(x)
  end
  if type(x) == "function" then
    return M.doc_of(x) or "help: no doc for this function"
  end
  if type(x) == "table" then
    local names = {}
    for k, v in pairs(x) do
      -- a name that starts with "_" is the module's own, not for callers
      if type(k) == "string" and type(v) == "function" and k:sub(1, 1) ~= "_" then names[#names + 1] = k end
    end
    if #names == 0 then return "help: a table without functions; type it to see its fields" end
    table.sort(names)
    local rows = {}
    for i, k in ipairs(names) do
      local d = M.doc_of(x[k]) or ""
      rows[i] = { k, (d:match("^[^\n]*")) }
    end
    return pretty.columns(rows)
  end
  return "help: " .. type(x) .. " " .. tostring(x)
end

-- help(x [, field]): prints text(x, field); returns nothing so the REPL
-- prints nothing more
function M.help(x, field)
  io.stdout:write(M.text(x, field, pretty.use_color(1)), "\n")
  io.stdout:flush()
end

return M
