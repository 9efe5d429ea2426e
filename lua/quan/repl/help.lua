-- quan.repl.help: help(x) in the REPL.
--
--   help()                 what the REPL offers
--   help(wx.v3....couponStocks)  an endpoint: method, path, parameter table
--   help("/v3/marketing/favor/coupon-stocks"), help("create_stock")
--   help(fn)               a function's doc (M.docs, or a module's _docs),
--                          else its signature from the debug library
--   help(module)           the module's functions, one line each
--
-- Endpoint facts come from wechatpay.favor.schema, the same data the
-- validator and the sandbox use.
local M = {}

local pretty = require "quan.pretty"

local function schema()
  local ok, s = pcall(require, "wechatpay.favor.schema")
  return ok and type(s) == "table" and s or nil
end

-- Docs by qualified name: "signature\n\ntext". Other modules may add theirs
-- here, or export `_docs = { fname = "..." }` from the module table.
M.docs = {
  ["await"] = "await(p) -> values\n\nWaits for a promise (the result of an ...Async verb) and returns what it resolves to; raises its error. A promise typed at the prompt is awaited by itself.",
  ["help"] = "help([x])\n\nShows an endpoint's parameters (help(wx.v3.marketing.favor.couponStocks)), a function's doc or a module's functions.",
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
  if node.enum then
    local vals = {}
    for i, v in ipairs(node.enum) do vals[i] = tostring(v) end
    d = d .. "  " .. table.concat(vals, " | ") .. " 枚举值之一"
  elseif node.items and node.items.enum then
    local vals = {}
    for i, v in ipairs(node.items.enum) do vals[i] = tostring(v) end
    d = d .. "  " .. table.concat(vals, " | ") .. " 枚举值之一"
  end
  if node["in"] == "path" then d = d .. " (path)" end
  return d
end

local function add_rows(rows, node, depth)
  if type(node) ~= "table" then return end
  if node.type == "array" and type(node.items) == "table" then node = node.items end
  for _, f in ipairs(node.fields or {}) do
    rows[#rows + 1] = { ("  "):rep(depth) .. f.name, type_of(f), f.required and "required" or "", describe(f) }
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
  local rows = { { "请求参数 field", "类型 type", "必填", "描述 description" } }
  add_rows(rows, ep.params, 0)
  if ep.query then
    rows[#rows + 1] = { "query", "object", any_required(ep.query) and "required" or "", "查询参数 query string" }
    add_rows(rows, ep.query, 1)
  end
  if ep.body then
    rows[#rows + 1] = { "json", "object", any_required(ep.body) and "required" or "", ep.body.desc or "声明请求的JSON数据结构" }
    add_rows(rows, ep.body, 1)
  end
  out[#out + 1] = ""
  if #rows > 1 then
    out[#out + 1] = pretty.columns(rows, { color = color })
  else
    out[#out + 1] = "(no parameters)"
  end
  if ep.response and ep.response.fields then
    local res = { { "返回字典 field", "类型 type", "必填", "描述 description" } }
    add_rows(res, ep.response, 0)
    out[#out + 1] = ""
    out[#out + 1] = pretty.columns(res, { color = color })
  end
  return table.concat(out, "\n")
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
              a function's doc, a module's functions
Tab completes names, API path segments, verbs and request body fields.
Ctrl-C cancels the line or the request in flight; Ctrl-D leaves.]]

-- text(x [, color]) -> the help text for x
function M.text(x, color)
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
    return "help: nothing known about " .. pretty.quote(x)
  end
  if type(x) == "function" then
    return M.doc_of(x) or "help: no doc for this function"
  end
  if type(x) == "table" then
    local names = {}
    for k, v in pairs(x) do
      if type(k) == "string" and type(v) == "function" then names[#names + 1] = k end
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

-- help(x): prints text(x); returns nothing so the REPL prints nothing more
function M.help(x)
  io.stdout:write(M.text(x, pretty.use_color(1)), "\n")
  io.stdout:flush()
end

return M
