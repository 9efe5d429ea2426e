-- quan.repl.complete: what Tab offers in the REPL.
--
--   candidates(word, before, G) -> array of words that may replace `word`
--
-- `before` is the line up to the cursor, `word` its last name (readline
-- breaks words at '.', ':' and punctuation). Offered, by context:
--   * a Lua name: globals, keywords, the REPL's lazy globals;
--   * `t.na` / `t:na`: fields of the table t (through __index tables);
--   * `wx.v3.marketing.fa`: API path segments from the schema tree;
--   * `wx:`: the client's methods (chain, request, curl, ...);
--   * `wx.v3....couponStocks:po`: verbs (get, post, ... and their Async),
--     each (a list endpoint's pages), curl, chain;
--   * inside `...couponStocks:post{json={stock_na`: field names of the
--     endpoint's request body (query = {...}: query fields; the options
--     table itself: the options the verb takes, from the client (a GET
--     has no json, body or file), and the path variables).
-- Names that start with "_" (a module's internals) are offered only once
-- "_" is typed.
local M = {}

local schema_ok, schema = pcall(require, "wechatpay.favor.schema")
if not schema_ok then schema = nil end

local keywords = {
  "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto",
  "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
}

local VERBS = { "get", "post", "put", "patch", "delete" }

-- the client module (loaded on first need: it starts no sandbox)
local function client_module()
  local ok, c = pcall(require, "wechatpay.client")
  return ok and type(c) == "table" and c or nil
end

-- options_of(verb) -> the options of node:<verb>{...}: the client's list for
-- the verb's method (each: a GET's, and paging); nil for another method
local function options_of(verb)
  local c = client_module()
  if not c or type(c.options) ~= "function" then return nil end
  local base = verb:gsub("Async$", "")
  if base == "each" then
    local list = c.options("GET")
    list[#list + 1] = "paging"
    return list
  end
  for _, v in ipairs(VERBS) do
    if v == base then return c.options(v:upper()) end
  end
  return nil
end

-- ---- the API path tree ---------------------------------------------------

-- segment_name("coupon-stocks") -> "couponStocks"; "{stock_id}" -> "_stock_id_"
function M.segment_name(seg)
  local var = seg:match("^{([%w_]+)}$")
  if var then return "_" .. var .. "_" end
  return (seg:gsub("%-(%w)", function(c) return c:upper() end))
end

-- normalize("couponStocks") -> "coupon-stocks"; "_stock_id_" -> "{stock_id}":
-- the client's own segment rules, so completion and the client agree
function M.normalize(name)
  return require("wechatpay.chain").normalize(name)
end

-- the tree of path segments: node = { children = {segment -> node},
-- endpoints = {verb -> schema endpoint} }
local tree
local function api_tree()
  if tree then return tree end
  tree = { children = {}, endpoints = {} }
  if not schema then return tree end
  for _, ep in ipairs(schema.endpoints) do
    local node = tree
    for seg in ep.path:gmatch("[^/]+") do
      local child = node.children[seg]
      if not child then
        child = { children = {}, endpoints = {} }
        node.children[seg] = child
      end
      node = child
    end
    node.endpoints[ep.method:lower()] = ep
  end
  return tree
end

-- api_node(segments) -> the tree node at those path segments | nil
function M.api_node(segs)
  local node = api_tree()
  for _, s in ipairs(segs) do
    node = node.children[s]
    if not node then return nil end
  end
  return node
end

-- endpoint_of(segments, verb) -> schema endpoint of <node>:<verb> | nil
-- (each walks the pages of the GET)
function M.endpoint_of(segs, verb)
  local node = M.api_node(segs)
  if not node then return nil end
  verb = verb:gsub("Async$", ""):lower()
  if verb == "each" then verb = "get" end
  return node.endpoints[verb]
end

local function child_names(node, prefix, out)
  for seg in pairs(node.children) do
    local name = M.segment_name(seg)
    if name:sub(1, #prefix) == prefix then out[name] = true end
  end
end

-- ---- helpers -------------------------------------------------------------

local function starts(s, prefix)
  return type(s) == "string" and s:sub(1, #prefix) == prefix
end

local function collect(set, out, prefix)
  local private = prefix:sub(1, 1) == "_"
  for k in pairs(set) do
    if starts(k, prefix) and k:match("^[%a_][%w_]*$") and (private or k:sub(1, 1) ~= "_") then out[k] = true end
  end
end

local function sorted(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

-- keys of v and of the tables reachable through __index, without calling
-- any function
local function fields_of(v, prefix, out)
  local seen = {}
  while v ~= nil and not seen[v] do
    seen[v] = true
    if type(v) == "table" then collect(v, out, prefix) end
    local mt = getmetatable(v)
    if type(mt) ~= "table" then break end
    local idx = rawget(mt, "__index")
    if type(idx) ~= "table" then break end
    v = idx
  end
end

-- index(v, k): rawget, then through __index tables only (no side effects)
local function index(v, k)
  local seen = {}
  while v ~= nil and not seen[v] do
    seen[v] = true
    if type(v) == "table" then
      local x = rawget(v, k)
      if x ~= nil then return x end
    end
    local mt = getmetatable(v)
    if type(mt) ~= "table" then return nil end
    local idx = rawget(mt, "__index")
    if type(idx) ~= "table" then return nil end
    v = idx
  end
end

-- the client's metatables, when the client is loaded (load = true: load it)
local function client_mts(load)
  local c = package.loaded["wechatpay.client"]
  if type(c) ~= "table" and load then c = client_module() end
  if type(c) ~= "table" then return nil, nil end
  return rawget(c, "Client"), rawget(c, "Node")
end

-- node_segments(n) -> the path segments of a client API node (its
-- __tostring is "wechatpay.node /v3/...", the client's public form)
local function node_segments(n)
  local segs = {}
  local ok, text = pcall(tostring, n)
  local path = ok and text:match("^wechatpay%.node (/.*)$") or ""
  for sg in path:gmatch("[^/]+") do segs[#segs + 1] = sg end
  return segs
end

-- resolve(parts, G) -> { segs = path segments } for a client or API node,
-- or { value = v } for a plain value; nil when it cannot be followed.
-- `wx` counts as the client before it is made: Tab never starts a sandbox.
function M.resolve(parts, G)
  local root = parts[1]
  local v = rawget(G, root)
  if v == nil and root == "wx" then
    local repl = package.loaded["quan.repl"]
    if repl and repl.is_lazy and repl.is_lazy(G, "wx") then v = true end
  elseif v == nil then
    local ok, x = pcall(function() return G[root] end) -- a lazy REPL global
    v = ok and x or nil
  end
  local Client, Node = client_mts()
  local segs
  if v == true then segs = {}
  elseif Client and getmetatable(v) == Client then segs = {}
  elseif Node and getmetatable(v) == Node then segs = node_segments(v)
  end
  for k = 2, #parts do
    if segs then
      for sg in M.normalize(parts[k]):gmatch("[^/]+") do segs[#segs + 1] = sg end
    else
      v = index(v, parts[k])
      if v == nil then return nil end
      if Client and getmetatable(v) == Client then segs = {}
      elseif Node and getmetatable(v) == Node then segs = node_segments(v)
      end
    end
  end
  if segs then return { segs = segs, client = v } end
  return { value = v }
end

-- ---- body fields ---------------------------------------------------------

local function node_fields(node, prefix, out)
  if type(node) ~= "table" then return end
  if node.type == "array" then node = node.items end
  for _, f in ipairs(node and node.fields or {}) do
    if starts(f.name, prefix) then out[f.name] = true end
  end
end

local function child(node, key)
  if type(node) ~= "table" then return nil end
  if key == "[]" then return node.type == "array" and node.items or nil end
  if node.type == "array" then node = node.items end
  for _, f in ipairs(node and node.fields or {}) do
    if f.name == key then return f end
  end
end

-- Scans `before` for the open table constructors at its end. Returns the
-- frames still open, each {key = name|"[]", root = {chain, verb}|nil}.
local function open_frames(before)
  local stack = {}
  local i, n = 1, #before
  while i <= n do
    local c = before:sub(i, i)
    if c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = before:sub(j, j)
        if d == "\\" then j = j + 1 elseif d == c then break end
        j = j + 1
      end
      i = j
    elseif c == "-" and before:sub(i, i + 1) == "--" then
      local e = before:find("\n", i, true)
      i = e or n
    elseif c == "{" or c == "(" then
      local head = before:sub(1, i - 1)
      local frame = { open = c }
      local chain, verb = head:match("([%a_][%w_%.]*):([%a_][%w_]*)%s*$")
      if chain then
        frame.root = { chain = chain, verb = verb }
      elseif c == "{" then
        local key = head:match("([%a_][%w_]*)%s*=%s*$")
        local prev = stack[#stack]
        if key then frame.key = key
        elseif prev and prev.open == "(" and prev.root and head:match("%(%s*$") then
          frame.root, prev.root = prev.root, nil
        else frame.key = "[]" end
      end
      stack[#stack + 1] = frame
    elseif c == "}" or c == ")" then
      stack[#stack] = nil
    end
    i = i + 1
  end
  return stack
end

-- field completion inside `chain:verb{...}`; nil when not in such a place
local function body_candidates(word, before, G)
  -- only where a key goes: right after '{' or ',' (and spaces)
  local lead = before:sub(1, #before - #word)
  if not lead:match("[{,]%s*$") then return nil end
  local stack = open_frames(lead)
  local r
  for k = #stack, 1, -1 do
    if stack[k].root and stack[k].open == "{" then r = k break end
  end
  if not r then return nil end
  local root = stack[r].root
  local parts = {}
  for p in root.chain:gmatch("[^%.]+") do parts[#parts + 1] = p end
  local at = M.resolve(parts, G)
  if not at or not at.segs then return nil end
  local ep = M.endpoint_of(at.segs, root.verb)
  local out = {}
  if r == #stack then
    for _, o in ipairs(options_of(root.verb) or {}) do if starts(o, word) then out[o] = true end end
    if ep then node_fields(ep.params, word, out) end
    return sorted(out)
  end
  if not ep then return {} end
  local where = stack[r + 1].key
  local node = (where == "json" and ep.body) or (where == "query" and ep.query) or nil
  for k = r + 2, #stack do
    if stack[k].open ~= "{" then return {} end
    node = child(node, stack[k].key)
  end
  node_fields(node, word, out)
  return sorted(out)
end

-- ---- names and chains ----------------------------------------------------

local function chain_candidates(word, before, G)
  local tail = before:sub(1, #before - #word):match("([%a_][%w_]*[%.:][%w_%.:]*)$")
  if not tail then return nil end
  local sep = tail:sub(-1)
  if sep ~= "." and sep ~= ":" then return nil end
  local parts = {}
  for p in tail:sub(1, -2):gmatch("[^%.:]+") do parts[#parts + 1] = p end
  if tail:sub(1, -2):find(":") then return {} end -- a method call in the middle
  local out = {}
  local at = M.resolve(parts, G)
  if not at then return {} end
  if at.segs then
    local node = M.api_node(at.segs)
    if #at.segs == 0 then -- the client itself: its fields and v3, or its methods
      if sep == "." then
        if type(at.client) == "table" then fields_of(at.client, word, out) end
        if node then child_names(node, word, out) end
      else
        local Client = client_mts(true)
        if Client then fields_of(Client, word, out) end
        for k in pairs(out) do
          if k:sub(1, 2) == "__" or type(rawget(Client, k)) ~= "function" then out[k] = nil end
        end
      end
      return sorted(out)
    end
    if sep == "." then
      if node then child_names(node, word, out) end
      return sorted(out)
    end
    -- a node's methods: the verbs its endpoints have (all of them on a
    -- node the schema does not know), each on a list, curl and chain
    local eps = node and node.endpoints or {}
    local any = next(eps) ~= nil
    for _, verb in ipairs(VERBS) do
      if not any or eps[verb] then
        if starts(verb, word) then out[verb] = true end
        if starts(verb .. "Async", word) then out[verb .. "Async"] = true end
      end
    end
    local extra = { "curl", "chain" }
    if not any or (eps.get and eps.get.paging) then extra[#extra + 1] = "each" end
    for _, m in ipairs(extra) do if starts(m, word) then out[m] = true end end
    return sorted(out)
  end
  local v = at.value
  fields_of(v, word, out)
  if sep == ":" then
    for k in pairs(out) do
      if type(index(v, k)) ~= "function" then out[k] = nil end
    end
  end
  return sorted(out)
end

-- candidates(word, before, G) -> array of completions of word
function M.candidates(word, before, G)
  G = G or _G
  word = word or ""
  before = before or word
  local list = body_candidates(word, before, G)
  if list then return list end
  list = chain_candidates(word, before, G)
  if list then return list end
  if word == "" then return {} end
  local out = {}
  fields_of(G, word, out)
  local repl = package.loaded["quan.repl"]
  if repl then
    for _, k in ipairs(repl.lazy_names()) do if starts(k, word) then out[k] = true end end
  end
  for _, k in ipairs(keywords) do if starts(k, word) then out[k] = true end end
  return sorted(out)
end

return M
