-- wechatpay.favor.validate: checks a request table against the schemas of
-- wechatpay.favor.schema: types, required fields, enums, unknown fields,
-- limits, formats, and the cross-field rules of each endpoint.
--
--   validate.check(node_or_endpoint, value [, opts]) -> true | false, findings
--   validate.request(method, path, body [, opts])     -> true | false, findings
--                                                        (true for an unknown endpoint)
--   validate.format(findings)                         -> multi-line text
--
-- opts: now = epoch seconds (the clock the time rules use; default os.time()),
-- query = the query parameters as the server reads them (of an endpoint).
-- A finding is { path = "coupon_use_rule.fixed_normal_coupon.transaction_minimum",
-- desc = "门槛", rule = "must be greater than coupon_amount (面额) 1000", value = 500 }.
-- All findings of a table are reported together, in schema order.
--
-- How: each schema node is compiled once into a checker closure (the slow
-- path, the authority on every message), and each root node is also generated
-- into one Lua function of straight-line tests (the fast path) that hands a
-- failing value to its node's checker. Before the walk, quan.json.shape runs
-- the same tests in C over a description of the node and answers when the
-- body is surely clean; on doubt the walk runs. A body found clean meets a
-- quick test of all the endpoint's rules; only on doubt do the rule functions
-- run. The specs compare the paths on random damage to the seed.
local schema = require "wechatpay.favor.schema"
local time = require "quan.time"
local text = require "quan.text"
local cjson_safe = require "cjson.safe"
-- on the failure path only, loaded there: "did you mean", and a limit in words
local function suggest(...) return require("quan.suggest").closest(...) end
local function with_unit(...) return require("wechatpay.favor.doc").with_unit(...) end

local type, pairs, ipairs, next, tostring, tonumber = type, pairs, ipairs, next, tostring, tonumber
local mtype, floor, huge = math.type, math.floor, math.huge
local utf8len, sfind, sformat = utf8.len, string.find, string.format
local fits, beijing = text.fits, time.beijing
local concat, sort = table.concat, table.sort

local M = {}

local DAY = 86400

-- a begin time this many seconds before now still counts as "not in the past":
-- the time a request takes from the validating client to the validating
-- server (the sandbox checks again on arrival)
M.TRAVEL = 60

-- ---------------------------------------------------------------------------
-- helpers

local function add(out, path, desc, rule, value)
  out[#out + 1] = { path = path, desc = desc, rule = rule, value = value }
end

local function is_integer(v)
  local t = mtype(v)
  if t == "integer" then return true end
  return t == "float" and v == floor(v) and v > -2^53 and v < 2^53
end

-- rfc3339(s) -> epoch seconds (float when fractional) | nil, reason: an
-- explicit numeric offset is required (+08:00); "Z" and naive times are
-- refused (quan.time's parser, which remembers what it parsed)
local rfc3339 = time.parse
M.rfc3339 = rfc3339

local function repr(v)
  if type(v) == "string" then return sformat("%q", v):gsub("\\\n", "\\n") end
  if type(v) ~= "table" then return tostring(v) end
  local ok, s = pcall(require("cjson").encode, v)
  return ok and s or tostring(v)
end

local function list(values)
  local t = {}
  for i, v in ipairs(values) do t[i] = tostring(v) end
  return concat(t, ", ")
end

-- ---------------------------------------------------------------------------
-- compiling nodes into checkers: checker(v, out, ctx, dynpath)
-- dynpath is set under an array (the element's path, e.g. "goods_tag[2]");
-- otherwise the static path computed at compile time is used.

local cache = setmetatable({}, { __mode = "k" })
local compile

-- got_type(v) -> "a string", "an integer", "an array", ... for messages
local function got_type(v)
  local t = type(v)
  if t == "table" then return (v[1] ~= nil) and "an array" or "an object" end
  if t == "number" then return mtype(v) == "integer" and "an integer" or "a number" end
  if t == "nil" then return "nil" end
  return "a " .. t
end

local function compile_string(node, path, desc)
  local min_len, max_len, width = node.min_len, node.max_len, node.width
  local pattern, forbid, format = node.pattern, node.forbid, node.format
  local forbid_class = forbid and ("[" .. forbid:gsub("[%^%]%-%%]", "%%%0") .. "]")
  local enum, enum_rule
  if node.enum then
    enum = {}
    for _, v in ipairs(node.enum) do enum[v] = true end
    for _, v in ipairs(node.accept or {}) do enum[v] = true end
    enum_rule = "must be one of " .. list(node.enum)
    if node.accept then enum_rule = enum_rule .. " (or " .. list(node.accept) .. ")" end
  end
  local wc, wa = width and width.cjk, width and width.ascii
  return function(v, out, ctx, dp)
    if type(v) ~= "string" then
      return add(out, dp or path, desc, "must be a string, not " .. got_type(v), v)
    end
    if enum then
      if not enum[v] then
        local all = {}
        for _, e in ipairs(node.enum) do all[#all + 1] = e end
        for _, e in ipairs(node.accept or {}) do all[#all + 1] = e end
        local s = suggest(v, all)
        return add(out, dp or path, desc, enum_rule .. (s and (" (did you mean " .. s .. "?)") or ""), v)
      end
      return
    end
    if not (min_len or max_len or wc or forbid_class or pattern or format) then return end
    local n = utf8len(v)
    if not n then return add(out, dp or path, desc, "must be valid UTF-8", v) end
    if min_len and n < min_len then
      if n == 0 then return add(out, dp or path, desc, "must not be empty", v) end
      return add(out, dp or path, desc, "must be at least " .. min_len .. " characters", v)
    end
    if max_len and n > max_len then
      return add(out, dp or path, desc, "must be at most " .. max_len .. " characters (has " .. n .. ")", v)
    end
    if wc and not fits(v, wc, wa) then
      return add(out, dp or path, desc, sformat("must be at most %d Chinese characters or %d letters", wc, wa), v)
    end
    if forbid_class and sfind(v, forbid_class) then
      return add(out, dp or path, desc, "must not contain any of " .. forbid:gsub(".", "%0 "):sub(1, -2), v)
    end
    if pattern and not sfind(v, pattern) then
      return add(out, dp or path, desc, "must be " .. (node.pattern_desc or ("like " .. pattern)), v)
    end
    if format == "rfc3339" then
      local t, why = rfc3339(v)
      if not t then return add(out, dp or path, desc, "must be RFC 3339 with an offset: " .. why, v) end
    elseif format == "json" then
      if cjson_safe.decode(v) == nil then return add(out, dp or path, desc, "must be JSON text", v) end
    elseif format == "url" then
      if not sfind(v, "^https?://[^%s]+$") then return add(out, dp or path, desc, "must be an http(s) URL", v) end
    end
  end
end

local function compile_number(node, path, desc, integer)
  local min, max = node.min, node.max
  local enum, enum_rule
  if node.enum then
    enum = {}
    for _, v in ipairs(node.enum) do enum[v] = true end
    enum_rule = "must be one of " .. list(node.enum)
  end
  local tname = integer and "an integer" or "a number"
  return function(v, out, ctx, dp)
    if ctx.lenient_numbers and type(v) == "string" then v = tonumber(v) or v end
    if integer then
      if not is_integer(v) then
        return add(out, dp or path, desc, type(v) == "number" and "must be a whole number (分, no fraction)"
          or ("must be an integer, not " .. got_type(v)), v)
      end
    elseif type(v) ~= "number" or v ~= v or v == huge or v == -huge then
      return add(out, dp or path, desc, "must be " .. tname .. ", not " .. got_type(v), v)
    end
    if enum then
      if not enum[v] then return add(out, dp or path, desc, enum_rule, v) end
      return
    end
    if min and v < min then return add(out, dp or path, desc, "must be at least " .. with_unit(min, node.unit), v) end
    if max and v > max then return add(out, dp or path, desc, "must be at most " .. with_unit(max, node.unit), v) end
  end
end

local function compile_boolean(_, path, desc)
  return function(v, out, _, dp)
    if type(v) ~= "boolean" then
      return add(out, dp or path, desc, "must be a boolean (true or false), not " .. got_type(v), v)
    end
  end
end

local function compile_array(node, path, desc)
  local item_path = path .. "[]"
  local item_desc = node.items and node.items.desc or desc
  local item = compile(node.items or { type = "any" }, item_path)
  local min_items, max_items, unique = node.min_items, node.max_items, node.unique
  return function(v, out, ctx, dp)
    local p = dp or path
    if type(v) ~= "table" then
      return add(out, p, desc, "must be an array, not " .. got_type(v), v)
    end
    local n = #v
    -- a sequence built by a constructor has nothing after its n-th key; only
    -- otherwise count every key
    if next(v, n > 0 and n or nil) ~= nil then
      local count = 0
      for _ in next, v do count = count + 1 end
      if count ~= n then
        return add(out, p, desc, "must be an array (a sequence 1..n), not an object", v)
      end
    end
    if n == 0 and (ctx.request or (min_items and min_items > 0)) then
      -- JSON cannot tell an empty Lua table from an object: it is sent as {}
      return add(out, p, desc, "must not be empty (an empty table is sent as {}, a JSON object; "
        .. "leave the field out instead)", v)
    end
    if min_items and n < min_items then
      return add(out, p, desc, "must have at least " .. min_items .. " items", v)
    end
    if max_items and n > max_items then
      return add(out, p, desc, (min_items == max_items and ("must have exactly " .. max_items .. " item"
        .. (max_items == 1 and "" or "s")) or ("must have at most " .. max_items .. " items"))
        .. " (has " .. n .. ")", v)
    end
    local seen = unique and n > 1 and {}
    local before = #out
    for i = 1, n do
      local e = v[i]
      -- elements are checked under the static path "a.b[]"; the paths of any
      -- findings are then rewritten to name the element ("a.b[2]")
      item(e, out, ctx, dp and (dp .. "[" .. i .. "]"))
      local after = #out
      if after > before then
        if not dp then
          local at = p .. "[" .. i .. "]"
          for k = before + 1, after do
            local fp = out[k].path
            if fp:sub(1, #item_path) == item_path then out[k].path = at .. fp:sub(#item_path + 1) end
          end
        end
        before = after
      elseif seen then
        if seen[e] then
          add(out, p .. "[" .. i .. "]", item_desc, "must not repeat " .. repr(e), e)
          before = #out
        end
        seen[e] = true
      end
    end
  end
end

-- report_unknown(v, known, names, path, out): one finding per key of v that
-- the schema does not know, sorted, with a "did you mean" when one is close
local function report_unknown(v, known, names, base, out)
  local unknown = {}
  for k in next, v do
    if not known[k] then unknown[#unknown + 1] = k end
  end
  sort(unknown, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(unknown) do
    local p = type(k) == "string" and (base == "" and k or (base .. "." .. k))
      or (base .. "[" .. tostring(k) .. "]")
    local s = suggest(k, names)
    add(out, p, nil, "unknown field" .. (s and (" (did you mean " .. s .. "?)") or ""), v[k])
  end
end

local function compile_object(node, path, desc)
  local fields, known, names = {}, {}, {}
  for i, f in ipairs(node.fields or {}) do
    local fp = path == "" and f.name or (path .. "." .. f.name)
    fields[i] = { f.name, compile(f, fp), f.required, fp, f.desc }
    known[f.name] = true
    names[#names + 1] = f.name
  end
  local nf = #fields
  return function(v, out, ctx, dp)
    if type(v) ~= "table" or v[1] ~= nil then
      return add(out, dp or (path == "" and "(body)" or path), desc, "must be an object, not " .. got_type(v), v)
    end
    for i = 1, nf do
      local f = fields[i]
      local x = v[f[1]]
      if x == nil then
        if f[3] then add(out, dp and (dp .. "." .. f[1]) or f[4], f[5], "required", nil) end
      else
        f[2](x, out, ctx, dp and (dp .. "." .. f[1]))
      end
    end
    for k in next, v do
      if not known[k] then return report_unknown(v, known, names, dp or path, out) end
    end
  end
end

function compile(node, path)
  local c = cache[node]
  if c and c.path == path then return c.fn end
  local t, desc, fn = node.type, node.desc, nil
  if t == "object" then fn = compile_object(node, path, desc)
  elseif t == "array" then fn = compile_array(node, path, desc)
  elseif t == "string" then fn = compile_string(node, path, desc)
  elseif t == "integer" then fn = compile_number(node, path, desc, true)
  elseif t == "number" then fn = compile_number(node, path, desc, false)
  elseif t == "boolean" then fn = compile_boolean(node, path, desc)
  else fn = function() end
  end
  if not c then cache[node] = { path = path, fn = fn } end
  return fn
end

-- ---------------------------------------------------------------------------
-- the fast path: a node tree is also generated into one Lua function of
-- straight-line tests (no call per field). A test that fails hands the value
-- to the node's checker above, which is the one authority on what is wrong
-- (and finds nothing for, e.g., an integral float), so both paths agree.

-- JSON texts seen valid are remembered (ext_info repeats across stocks)
local json_memo, json_n = {}, 0
local function json_ok(x)
  if json_memo[x] then return true end
  if cjson_safe.decode(x) == nil then return false end
  if json_n >= 256 then json_memo, json_n = {}, 0 end
  json_memo[x], json_n = true, json_n + 1
  return true
end

local gen_cache = setmetatable({}, { __mode = "k" })

local function generate(root)
  local K = {}            -- constants the generated code reads as K[i]
  local function const(v) K[#K + 1] = v; return "K[" .. #K .. "]" end
  local src, depth = {}, 0
  local function emit(line) src[#src + 1] = line end

  -- test(node, var, path) -> a Lua expression true when var (non-nil) surely
  -- passes node, or nil when the node is checked by its statement form
  local function test(node, x)
    local t = node.type
    if t == "boolean" then return "(" .. x .. " == true or " .. x .. " == false)" end
    if t == "integer" or t == "number" then
      local e = t == "integer" and ("mtype(" .. x .. ") == 'integer'") or ("type(" .. x .. ") == 'number'")
      if node.enum then
        local set = {}
        for _, v in ipairs(node.enum) do set[v] = true end
        return e .. " and " .. const(set) .. "[" .. x .. "]"
      end
      if node.min then e = e .. " and " .. x .. " >= " .. node.min end
      if node.max then e = e .. " and " .. x .. " <= " .. node.max end
      return e
    end
    if t == "string" then
      if node.enum then
        local set = {}
        for _, v in ipairs(node.enum) do set[v] = true end
        for _, v in ipairs(node.accept or {}) do set[v] = true end
        return const(set) .. "[" .. x .. "] == true"
      end
      local e = "type(" .. x .. ") == 'string'"
      local min, max = node.min_len, node.max_len
      if (min and min > 1) or node.width then
        e = e .. " and utf8len(" .. x .. ")"
        if min then e = e .. " and utf8len(" .. x .. ") >= " .. min end
      elseif min == 1 then
        e = e .. " and #" .. x .. " > 0"
      end
      if max then e = e .. " and (#" .. x .. " <= " .. max .. " or (utf8len(" .. x .. ") or " .. max + 1 .. ") <= " .. max .. ")" end
      if node.width then e = e .. " and fits(" .. x .. ", " .. node.width.cjk .. ", " .. node.width.ascii .. ")" end
      if node.forbid then
        e = e .. " and not sfind(" .. x .. ", " .. const("[" .. node.forbid:gsub("[%^%]%-%%]", "%%%0") .. "]") .. ")"
      end
      if node.pattern then e = e .. " and sfind(" .. x .. ", " .. const(node.pattern) .. ")" end
      if node.format == "rfc3339" then e = e .. " and rfc3339(" .. x .. ")"
      elseif node.format == "json" then e = e .. " and json_ok(" .. x .. ")"
      elseif node.format == "url" then e = e .. " and sfind(" .. x .. ", '^https?://[^%s]+$')"
      end
      return e
    end
    return nil
  end

  local statement
  -- statement(node, var, path): checks var (non-nil) against node
  function statement(node, x, path)
    local slow = const(compile(node, path))
    local e = test(node, x)
    if e then
      emit("if not (" .. e .. ") then " .. slow .. "(" .. x .. ", out, ctx) end")
    elseif node.type == "object" then
      depth = depth + 1
      emit("if type(" .. x .. ") ~= 'table' or " .. x .. "[1] ~= nil then " .. slow .. "(" .. x .. ", out, ctx) else")
      local known, names = {}, {}
      for _, f in ipairs(node.fields or {}) do
        known[f.name] = true
        names[#names + 1] = f.name
        local fp = path == "" and f.name or (path .. "." .. f.name)
        local y = "v" .. depth
        emit("do local " .. y .. " = " .. x .. "[" .. string.format("%q", f.name) .. "]")
        if f.required then
          emit("if " .. y .. " == nil then add(out, " .. string.format("%q", fp) .. ", "
            .. (f.desc and string.format("%q", f.desc) or "nil") .. ", 'required') else")
        else
          emit("if " .. y .. " ~= nil then")
        end
        statement(f, y, fp)
        emit("end end")
      end
      emit("for k in next, " .. x .. " do if not " .. const(known) .. "[k] then report_unknown("
        .. x .. ", " .. const(known) .. ", " .. const(names) .. ", " .. string.format("%q", path)
        .. ", out) break end end")
      emit("end")
      depth = depth - 1
    elseif node.type == "array" and node.items and test(node.items, "e") then
      local cond = "type(" .. x .. ") == 'table'"
      emit("if not (" .. cond .. ") then " .. slow .. "(" .. x .. ", out, ctx) else")
      emit("local n = #" .. x)
      local c = "(n > 0 or not ctx.request) and next(" .. x .. ", n > 0 and n or nil) == nil"
      if node.min_items then c = c .. " and n >= " .. node.min_items end
      if node.max_items then c = c .. " and n <= " .. node.max_items end
      emit("local ok = " .. c)
      emit("if ok then " .. (node.unique and "local seen = {} " or "") .. "for i = 1, n do local e = "
        .. x .. "[i] if not (" .. test(node.items, "e") .. ")"
        .. (node.unique and " or seen[e]" or "") .. " then ok = false break end"
        .. (node.unique and " seen[e] = true" or "") .. " end end")
      emit("if not ok then " .. slow .. "(" .. x .. ", out, ctx) end")
      emit("end")
    else
      emit(slow .. "(" .. x .. ", out, ctx)")
    end
  end

  emit("local K, add, report_unknown, fits, json_ok, rfc3339, utf8len, sfind, mtype, type, next = ...")
  emit("return function(v0, out, ctx)")
  statement(root, "v0", "")
  emit("end")
  local code = table.concat(src, "\n")
  local chunk = assert(load(code, "=validate(generated)", "t", {}))
  return chunk(K, add, report_unknown, fits, json_ok, rfc3339, utf8len, sfind, mtype, type, next), code
end

-- ---------------------------------------------------------------------------
-- the C path: quan.json.shape runs the generated walk's tests over a
-- description of the same node (describe below), in C, and says true only
-- when the walk would surely find nothing; on false the walk runs and says
-- what is wrong. A pattern that is one character class ("^[...]+$", as
-- out_request_no's) becomes forbidden bytes, tested in C; other patterns
-- and formats stay Lua functions it calls.

local shape = package.preload["quan.json"] and require("quan.json").shape

local URL = "^https?://[^%s]+$"

-- refused_bytes(pattern) -> the bytes a pattern "^[class]+$" refuses, as
-- the string a description's forbid takes: such a pattern is a test of
-- each byte, made in C with no call to Lua; nil for any other pattern
local function refused_bytes(pattern)
  local class = pattern and pattern:match("^%^(%[[^%]]+%])%+%$$")
  if not class then return nil end
  local refused = {}
  for b = 0, 255 do
    local c = string.char(b)
    if not sfind(c, "^" .. class .. "$") then refused[#refused + 1] = c end
  end
  return table.concat(refused)
end

-- predicate(node, charset) -> the Lua test of a string node's pattern and
-- format (as the walk's), nil when it has neither; charset: the pattern is
-- tested as forbidden bytes (refused_bytes), only the format is left
local function predicate(node, charset)
  local pattern, format = node.pattern, node.format
  if charset then pattern = nil end
  if format == "rfc3339" and not pattern then return rfc3339 end
  if not (pattern or format == "rfc3339" or format == "json" or format == "url") then return nil end
  return function(x)
    if pattern and not sfind(x, pattern) then return false end
    if format == "rfc3339" then return rfc3339(x) ~= nil end
    if format == "json" then return json_ok(x) end
    if format == "url" then return sfind(x, URL) ~= nil end
    return true
  end
end

local LEAF = { boolean = true, integer = true, number = true, string = true }

local function set_of(...)
  local set = {}
  for _, list in ipairs { ... } do
    for _, v in ipairs(list) do set[v] = true end
  end
  return set
end

-- describe(node) -> the description quan.json.shape compiles (see
-- src/ljson.c), or nil for a tree with a node the walk hands to its
-- checker whole (an array of objects, a node of no known type)
local function describe(node)
  local t = node.type
  if t == "boolean" then return { kind = "boolean" } end
  if t == "integer" or t == "number" then
    return { kind = t, enum = node.enum and set_of(node.enum), min = node.min, max = node.max }
  end
  if t == "string" then
    if node.enum then return { kind = "string", enum = set_of(node.enum, node.accept or {}) } end
    local width = node.width
    local refused, min_len = refused_bytes(node.pattern), node.min_len
    if refused and (min_len or 0) < 1 then min_len = 1 end -- the pattern's "+": one byte is one character
    return { kind = "string", min_len = min_len, max_len = node.max_len, cjk = width and width.cjk,
      ascii = width and width.ascii, forbid = refused and (node.forbid or "") .. refused or node.forbid,
      predicate = predicate(node, refused ~= nil) }
  end
  if t == "array" then
    if not (node.items and LEAF[node.items.type]) then return nil end
    return { kind = "array", min_items = node.min_items, max_items = node.max_items, unique = node.unique,
      item = describe(node.items) }
  end
  if t == "object" then
    local fields = {}
    for i, f in ipairs(node.fields or {}) do
      local d = describe(f)
      if not d then return nil end
      fields[i] = { name = f.name, required = f.required, node = d }
    end
    return { kind = "object", fields = fields }
  end
  return nil
end

-- shaped(node) -> the compiled C check of a root node, nil without one
local function shaped(node)
  local d = shape and describe(node)
  return d and shape(d) or nil
end
M._shaped = shaped

-- fast(node) -> the generated checker of a root node (cached)
local function fast(node)
  local fn = gen_cache[node]
  if not fn then fn = generate(node); gen_cache[node] = fn end
  return fn
end
M._generate = generate

-- ---------------------------------------------------------------------------
-- cross-field rules, by the ids the schema's endpoints list

local function get(t, a, b, c)
  if type(t) ~= "table" then return nil end
  t = t[a]
  if b == nil then return t end
  if type(t) ~= "table" then return nil end
  t = t[b]
  if c == nil then return t end
  if type(t) ~= "table" then return nil end
  return t[c]
end

local function int(v) return is_integer(v) and v or nil end

local RULES = {}

-- the values the create-stock rules read, extracted once per check; a value of
-- the wrong type reads as nil (the walk has already reported it)
local EMPTY = {}
local function tbl(t) return type(t) == "table" and t or EMPTY end

local function stock_view(b)
  local su, cur = tbl(b.stock_use_rule), tbl(b.coupon_use_rule)
  local fnc, cat, pi = tbl(cur.fixed_normal_coupon), tbl(cur.coupon_available_time), tbl(b.pattern_info)
  local fix = cat.fix_available_time
  local begin_text, end_text = b.available_begin_time, b.available_end_time
  local coupon_begin_text, coupon_end_text = cat.available_begin_time, cat.available_end_time
  return {
    max_coupons = int(su.max_coupons), max_amount = int(su.max_amount), max_by_day = int(su.max_amount_by_day),
    per_user = int(su.max_coupons_per_user), amount = int(fnc.coupon_amount), minimum = int(fnc.transaction_minimum),
    begin_text = begin_text, end_text = end_text, begin = rfc3339(begin_text), stop = rfc3339(end_text),
    coupon_begin_text = coupon_begin_text, coupon_end_text = coupon_end_text,
    coupon_begin = rfc3339(coupon_begin_text), coupon_end = rfc3339(coupon_end_text),
    fix = type(fix) == "table" and fix or nil, after_receive = int(cat.available_time_after_receive),
    stock_type = b.stock_type, cur = b.coupon_use_rule, fnc = cur.fixed_normal_coupon,
    jump = pi.jump_target, appid = pi.mini_program_appid, mpath = pi.mini_program_path,
  }
end

RULES.max_amount_product = function(x, out, r)
  local count, budget, amount = x.max_coupons, x.max_amount, x.amount
  if count and budget and amount and budget ~= count * amount then
    add(out, r.path, r.desc_field, sformat("must equal max_coupons × coupon_amount = %d × %d = %d",
      count, amount, count * amount), budget)
  end
end

RULES.minimum_above_amount = function(x, out, r)
  if x.amount and x.minimum and x.minimum <= x.amount then
    add(out, r.path, r.desc_field, sformat("must be greater than coupon_amount (面额) %d", x.amount), x.minimum)
  end
end

RULES.per_user_within_total = function(x, out, r)
  if x.max_coupons and x.per_user and x.per_user > x.max_coupons then
    add(out, r.path, r.desc_field, sformat("must not exceed max_coupons (发放总上限) %d", x.max_coupons), x.per_user)
  end
end

RULES.by_day_within_total = function(x, out, r)
  if x.max_amount and x.max_by_day and x.max_by_day > x.max_amount then
    add(out, r.path, r.desc_field, sformat("must not exceed max_amount (总预算) %d", x.max_amount), x.max_by_day)
  end
end

RULES.begin_not_past = function(x, out, r, ctx)
  if x.begin and x.begin < ctx.now - M.TRAVEL then
    add(out, r.path, r.desc_field, "must not be in the past (now " .. beijing(ctx.now) .. ")", x.begin_text)
  end
end

RULES.begin_within_365_days = function(x, out, r, ctx)
  if x.begin and x.begin - ctx.now > 365 * DAY then
    add(out, r.path, r.desc_field, "must be at most 365 days ahead (latest " .. beijing(ctx.now + 365 * DAY) .. ")", x.begin_text)
  end
end

RULES.end_after_begin = function(x, out, r)
  if x.begin and x.stop and x.stop <= x.begin then
    add(out, r.path, r.desc_field, "must be later than available_begin_time " .. x.begin_text, x.end_text)
  end
end

RULES.span_90_days = function(x, out, r)
  local begin, stop = x.begin, x.stop
  if begin and stop and stop > begin and stop - begin > 90 * DAY then
    add(out, r.path, r.desc_field, sformat("must be at most 90 days after available_begin_time (is %.1f days)",
      (stop - begin) / DAY), x.end_text)
  end
end

RULES.day_window_order = function(x, out, r)
  local fix = x.fix
  if not fix then return end
  local bt = int(fix.begin_time)
  local et = fix.end_time
  if et == nil then et = 86399 else et = int(et) end
  if bt and et and bt >= et then
    add(out, r.path, r.desc_field, sformat("must be later than begin_time (当天开始时间) %d", bt), et)
  end
end

RULES.coupon_time_window = function(x, out, r)
  local cbt, cet, begin, stop = x.coupon_begin, x.coupon_end, x.begin, x.stop
  local base = "coupon_use_rule.coupon_available_time."
  if cbt and cet and cet <= cbt then
    add(out, r.path, r.desc_field, "must be later than coupon available_begin_time " .. x.coupon_begin_text, x.coupon_end_text)
  end
  if begin and stop then
    if cbt and (cbt < begin or cbt > stop) then
      add(out, base .. "available_begin_time", "开始时间", "must be within the stock's available time", x.coupon_begin_text)
    end
    if cet and (cet < begin or cet > stop) then
      add(out, base .. "available_end_time", "结束时间", "must be within the stock's available time", x.coupon_end_text)
    end
  end
end

RULES.after_receive_exclusive = function(x, out, r)
  if x.after_receive and x.after_receive > 0 and x.fix then
    add(out, r.path, r.desc_field, "must not be combined with fix_available_time (use one or the other)", x.after_receive)
  end
end

RULES.normal_needs_fixed = function(x, out, r)
  if x.stock_type == "NORMAL" and type(x.cur) == "table" and x.fnc == nil then
    add(out, r.path, r.desc_field, "required when stock_type is NORMAL", nil)
  end
end

RULES.mini_program_target = function(x, out)
  if x.jump ~= "MINI_PROGRAM" then return end
  if x.appid == nil then
    add(out, "pattern_info.mini_program_appid", "小程序AppID", "required when jump_target is MINI_PROGRAM", nil)
  end
  if x.mpath == nil then
    add(out, "pattern_info.mini_program_path", "小程序路径", "required when jump_target is MINI_PROGRAM", nil)
  end
end

RULES.value_with_minimum = function(b, out, r)
  local v, m = get(b, "coupon_value"), get(b, "coupon_minimum")
  if v ~= nil and m == nil then
    add(out, "coupon_minimum", r.desc_field, "required together with coupon_value", nil)
  elseif m ~= nil and v == nil then
    add(out, "coupon_value", "指定面额发券，面额", "required together with coupon_minimum", nil)
  elseif int(v) and int(m) and m <= v then
    add(out, r.path, r.desc_field, sformat("must be greater than coupon_value %d", v), m)
  end
end

RULES.one_mchid_filter = function(q, out, r)
  local n = 0
  for _, k in ipairs { "creator_mchid", "sender_mchid", "available_mchid" } do
    if get(q, k) ~= nil then n = n + 1 end
  end
  if n ~= 1 then
    add(out, r.path, r.desc_field, "exactly one of creator_mchid, sender_mchid, available_mchid must be given (has "
      .. n .. ")", nil)
  end
end

M.rules = RULES

-- endpoint id -> the view its body rules read (default: the body itself)
local VIEWS = { create_stock = stock_view }

-- stock_quick(b, now) -> true when every create-stock rule surely holds; only
-- called on a body whose walk found nothing, so every present value has its
-- schema type and every required one is there. false means "ask the rules".
local function stock_quick(b, now)
  local su, cur = b.stock_use_rule, b.coupon_use_rule
  local count, budget, per_user, by_day = su.max_coupons, su.max_amount, su.max_coupons_per_user, su.max_amount_by_day
  if per_user > count or (by_day and by_day > budget) then return false end
  local fnc = cur.fixed_normal_coupon
  if fnc then
    local amount = fnc.coupon_amount
    if budget ~= count * amount or fnc.transaction_minimum <= amount then return false end
  elseif b.stock_type == "NORMAL" then
    return false
  end
  local begin, stop = rfc3339(b.available_begin_time), rfc3339(b.available_end_time)
  if begin < now - M.TRAVEL or begin - now > 365 * DAY or stop <= begin or stop - begin > 90 * DAY then return false end
  local cat = cur.coupon_available_time or EMPTY
  local fix = cat.fix_available_time
  if fix then
    if fix.begin_time >= (fix.end_time or 86399) then return false end
    local n = cat.available_time_after_receive
    if n and n > 0 then return false end
  end
  local cb, ce = cat.available_begin_time, cat.available_end_time
  if cb then
    cb = rfc3339(cb)
    if cb < begin or cb > stop then return false end
  end
  if ce then
    ce = rfc3339(ce)
    if ce < begin or ce > stop or (cb and ce <= cb) then return false end
  end
  local pi = b.pattern_info
  if pi and pi.jump_target == "MINI_PROGRAM" and (pi.mini_program_appid == nil or pi.mini_program_path == nil) then
    return false
  end
  return true
end

local QUICK = { create_stock = stock_quick }

-- compiled endpoint: { body = checker, query = checker, rules = { {fn, rule} } }
local endpoints = setmetatable({}, { __mode = "k" })

local function compile_endpoint(ep)
  local c = endpoints[ep]
  if c then return c end
  c = { body_rules = {}, query_rules = {}, view = VIEWS[ep.id], quick = QUICK[ep.id] }
  local body = ep.body or ep.meta
  -- the generated walk (80 KB for create-stock) is made when the C check
  -- first doubts a body: most programs never send one it doubts
  if body then c.body_node, c.shape = body, shaped(body) end
  if ep.query then c.query = fast(ep.query) end
  for _, r in ipairs(ep.rules or {}) do
    local fn = RULES[r.id]
    if not fn then error("validate: endpoint " .. tostring(ep.id) .. " names unknown rule " .. tostring(r.id)) end
    local target = body and schema.field(body, r.path) and "body_rules"
      or (ep.query and schema.field(ep.query, r.path) and "query_rules") or "body_rules"
    local node = schema.field(target == "body_rules" and body or ep.query, r.path)
    local rule = { id = r.id, path = r.path, desc = r.desc, desc_field = node and node.desc }
    local list = c[target]
    list[#list + 1] = { fn, rule }
  end
  endpoints[ep] = c
  return c
end

local function context(opts)
  local now = opts and opts.now
  if now ~= nil and type(now) ~= "number" then error("validate: opts.now must be epoch seconds", 3) end
  return { now = now or os.time() }
end

local function run(c, ep, body, query, ctx, out)
  if c.body_node then
    if body == nil then
      add(out, "(body)", (ep.body or ep.meta).desc, "required (the request has a JSON body)", nil)
    else
      if not (c.shape and c.shape(body)) then fast(c.body_node)(body, out, ctx) end
      -- cross-field rules run on what is well typed; they skip values of the
      -- wrong type, which the walk has already reported. When the walk found
      -- nothing, every type is right and a quick all-rules test may answer
      -- first; the rule functions are the authority on any finding.
      if type(body) == "table" and not (out[1] == nil and c.quick and c.quick(body, ctx.now)) then
        local x = c.view and c.view(body) or body
        local rules = c.body_rules
        for i = 1, #rules do local r = rules[i]; r[1](x, out, r[2], ctx) end
      end
    end
  elseif body ~= nil and ep.method == "GET" then
    add(out, "(body)", nil, "must be empty (GET has no body)", body)
  end
  if c.query and query ~= nil then
    ctx.lenient_numbers = true
    c.query(query, out, ctx)
    ctx.lenient_numbers = nil
    if type(query) == "table" then
      for _, r in ipairs(c.query_rules) do r[1](query, out, r[2], ctx) end
    end
  end
end

-- _reference(endpoint, body, opts) -> findings of the slow path alone (the
-- node checkers and every rule, no generated code, no quick test): the specs
-- compare it with the fast path
function M._reference(ep, body, opts)
  local out, ctx = {}, context(opts)
  ctx.request = true
  local node = ep.body or ep.meta
  if body == nil then return run(compile_endpoint(ep), ep, body, nil, ctx, out) or out end
  compile(node, "")(body, out, ctx)
  if type(body) == "table" then
    local c = compile_endpoint(ep)
    local x = c.view and c.view(body) or body
    for _, r in ipairs(c.body_rules) do r[1](x, out, r[2], ctx) end
  end
  return out
end

-- common(c, value, opts) -> whether the compiled endpoint c may pass value
-- in C and with its quick test alone, as run() would decide it: a table
-- body, no query to check, now (if given) a number; no tables made (a
-- request makes one such check)
local function common(c, value, opts)
  local now = opts and opts.now
  return c.shape and c.quick and type(value) == "table" and not (c.query and opts and opts.query ~= nil)
    and (now == nil or type(now) == "number")
end

-- check(node_or_endpoint, value [, opts]) -> true | false, findings
function M.check(node, value, opts)
  if type(node) ~= "table" then error("validate.check: node must be a schema node or endpoint", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("validate.check: opts must be a table", 2) end
  if node.method then
    local c = compile_endpoint(node)
    if common(c, value, opts) and c.shape(value) and c.quick(value, opts and opts.now or os.time()) then
      return true
    end
  end
  local out, ctx = {}, context(opts)
  if node.method then
    ctx.request = true
    run(compile_endpoint(node), node, value, opts and opts.query, ctx, out)
  else
    fast(node)(value, out, ctx)
  end
  if out[1] then return false, out end
  return true
end

-- text(endpoint, body [, opts]) -> the JSON text of body, as
-- wechatpay.json.encode writes it, when check(endpoint, body, opts) passes
-- it in its common case (the C check writes the text as it walks the body:
-- one walk, and the keys in the schema's order, sorted once); nil when
-- check has more to say, or the C check cannot write the text (then check
-- and the encoder run as they would)
function M.text(ep, body, opts)
  local c = compile_endpoint(ep)
  if not common(c, body, opts) then return nil end
  local ok, text = c.shape(body, true)
  if ok and text and c.quick(body, opts and opts.now or os.time()) then return text end
  return nil
end

-- request(method, path, body [, opts]) -> true | false, findings
-- path: a template or concrete path (query string ignored); unknown endpoints pass
function M.request(method, path, body, opts)
  if type(method) ~= "string" then error("validate.request: method must be a string", 2) end
  if type(path) ~= "string" then error("validate.request: path must be a string", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("validate.request: opts must be a table", 2) end
  local ep = schema.lookup(method, path)
  if not ep then return true end
  local out, ctx = {}, context(opts)
  ctx.request = true
  run(compile_endpoint(ep), ep, body, opts and opts.query, ctx, out)
  if out[1] then return false, out end
  return true
end

-- format(findings) -> one line per finding:
--   path (描述): rule, got value
function M.format(findings)
  if type(findings) ~= "table" then error("validate.format: findings must be a table", 2) end
  local lines = {}
  for i, f in ipairs(findings) do
    local s = f.path .. (f.desc and (" (" .. f.desc .. ")") or "") .. ": " .. f.rule
    if f.value ~= nil then s = s .. ", got " .. repr(f.value) end
    lines[i] = s
  end
  return concat(lines, "\n")
end

return M
