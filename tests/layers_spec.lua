-- The layers point one way (docs/client.md, "Hooks"; docs/helpers.md):
--
--   core       natives (src/), quan.async, the helpers quan.time/url/text/suggest
--      ^
--   wechatpay  the client: lua/wechatpay/**
--      ^
--   tools      every other quan.* module (sandbox, batch, check, dryrun, ...)
--
-- A wechatpay module may load the core and other wechatpay modules, never a
-- tool: tools plug into the client through wechatpay.hooks. Two checks, each
-- of which fails on the tree before the layering was fixed:
--   - the sources: every way a module can name another (require on a literal
--     or a computed name, package.loaded / package.preload, a helper such as
--     need("..."), a string that names a module, code loaded without an empty
--     environment) is read from the tokens of each file;
--   - a run: a fresh quan process traces every module loaded, with the Lua
--     file whose code asked for it, while it loads every wechatpay module and
--     drives the client (requests, validation, the dry run, the private
--     sandbox).
local sh = require "tests.support.sh"
local qpath = require "quan.path"

-- the core a wechatpay module may load besides wechatpay.* and cjson
local CORE = {
  ["quan.crypto"] = true, ["quan.http"] = true, ["quan.json"] = true, ["quan.os"] = true,
  ["quan.server"] = true, ["quan.sqlite"] = true, ["quan.edit"] = true,
  ["quan.async"] = true, ["quan.time"] = true, ["quan.url"] = true, ["quan.text"] = true,
  ["quan.suggest"] = true,
  ["quan.path"] = true,
}
local OTHER = { cjson = true, ["cjson.safe"] = true }

-- allowed(name) -> whether a wechatpay module may load module `name`
local function allowed(name)
  return CORE[name] or OTHER[name] or name == "wechatpay" or name:find("^wechatpay%.") ~= nil
end

-- tokens(src) -> array of {kind = "name"|"string"|"op", value =, line =}:
-- Lua 5.4 tokens without comments; a string token's value is the string
local function tokens(src, chunkname)
  local out, i, line, n = {}, 1, 1, #src
  local function add(kind, value) out[#out + 1] = { kind = kind, value = value, line = line } end
  local function long_bracket(at)
    local eq = src:match("^%[(=*)%[", at)
    if not eq then return nil end
    local close = "]" .. eq .. "]"
    local stop = src:find(close, at, true)
    assert(stop, chunkname .. ":" .. line .. ": unfinished long bracket")
    return src:sub(at + #eq + 2, stop - 1), stop + #close
  end
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then
      line, i = line + 1, i + 1
    elseif c:find("%s") then
      i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local body, after = long_bracket(i + 2)
      if body then
        local _, nl = body:gsub("\n", "")
        line, i = line + nl, after
      else
        i = (src:find("\n", i, true) or n + 1)
      end
    elseif c == "[" and src:find("^%[=*%[", i) then
      local body, after = long_bracket(i)
      add("string", (body:gsub("^\r?\n", "")))
      local _, nl = body:gsub("\n", "")
      line, i = line + nl, after
    elseif c == '"' or c == "'" then
      local j = i + 1
      while true do
        local d = src:sub(j, j)
        assert(d ~= "" and d ~= "\n", chunkname .. ":" .. line .. ": unfinished string")
        if d == "\\" then
          if src:sub(j + 1, j + 1) == "z" then
            j = (src:find("[^%s]", j + 2) or n + 1)
          else
            j = j + 2
          end
        elseif d == c then
          break
        else
          j = j + 1
        end
      end
      local raw = src:sub(i, j)
      local value = assert(load("return " .. raw, "=string", "t", {}))()
      add("string", value)
      local _, nl = raw:gsub("\n", "")
      line, i = line + nl, j + 1
    elseif c:find("[%a_]") then
      local word = src:match("^[%a_][%w_]*", i)
      add("name", word)
      i = i + #word
    elseif c:find("%d") then
      local num = src:match("^0[xX][%x%.]*[pP]?[+-]?%x*", i) or src:match("^%d*%.?%d*[eE]?[+-]?%d*", i)
      i = i + math.max(#num, 1)
    else
      add("op", c)
      i = i + 1
    end
  end
  return out
end

-- violations(src, chunkname) -> array of "file:line: what" for every way the
-- source names or loads a module outside allowed()
local function violations(src, chunkname)
  local t = tokens(src, chunkname)
  local found = {}
  local function bad(k, what) found[#found + 1] = ("%s:%d: %s"):format(chunkname, t[k].line, what) end
  local function is(k, kind, value) return t[k] and t[k].kind == kind and (value == nil or t[k].value == value) end
  -- close(k) -> index of the ")" matching the "(" at k
  local function close(k)
    local depth = 0
    for j = k, #t do
      if is(j, "op", "(") then depth = depth + 1 end
      if is(j, "op", ")") then
        depth = depth - 1
        if depth == 0 then return j end
      end
    end
    return #t
  end
  for k, tok in ipairs(t) do
    local v = tok.value
    if tok.kind == "string" then
      -- a string that names a module (require, need, package.loaded or a
      -- name built from it), or is a prefix to build one
      for name in v:gmatch("quan%.[%w_.]*") do
        name = name:gsub("%.+$", "")
        -- a file name such as quan.config.lua names no module
        if not name:find("%.lua$") and (name == "quan" or not allowed(name)) then
          bad(k, ("names the module '%s'"):format(name))
        end
      end
      if v == "quan" or v:find("lua/quan/", 1, true) then bad(k, ("names a tool's file or prefix (%q)"):format(v)) end
      if v:find("require%s*[%(\"'%[]") then bad(k, "holds code that calls require") end
    elseif tok.kind == "name" and not (is(k - 1, "op", ".") or is(k - 1, "op", ":")) then
      if v == "require" then
        local literal = is(k + 1, "string") or (is(k + 1, "op", "(") and is(k + 2, "string") and is(k + 3, "op", ")"))
        local pcalled = is(k - 1, "op", "(") and is(k - 2, "name", "pcall") and is(k + 1, "op", ",") and is(k + 2, "string")
        if not (literal or pcalled) then bad(k, "require with a computed name, or require passed around") end
      elseif v == "package" then
        local field = is(k + 1, "op", ".") and is(k + 2, "name") and t[k + 2].value
        local literal = is(k + 3, "op", "[") and is(k + 4, "string") and is(k + 5, "op", "]")
        if not ((field == "loaded" or field == "preload") and literal) then
          bad(k, "package." .. tostring(field) .. (literal and "" or "[<computed>]") .. ": a module reached other than by a literal name")
        end
      elseif v == "_G" or v == "_ENV" or v == "getfenv" or v == "setfenv" or v == "dofile" or v == "loadstring" then
        bad(k, v .. ": a way around require")
      elseif v == "debug" and is(k + 1, "op", ".") and is(k + 2, "name") and
          ({ getregistry = true, getupvalue = true, setupvalue = true, upvaluejoin = true })[t[k + 2].value] then
        bad(k, "debug." .. t[k + 2].value .. ": a way to package.loaded")
      elseif (v == "load" or v == "loadfile") and is(k + 1, "op", "(") then
        -- code loaded in an empty environment cannot reach require
        local stop = close(k + 1)
        if not (is(stop - 1, "op", "}") and is(stop - 2, "op", "{") and is(stop - 3, "op", ",")) then
          bad(k, v .. " without an empty environment ({} as the last argument)")
        end
      end
    end
  end
  return found
end

local function read(path) return assert(qpath.read(path)) end

-- the client's files and module names
local function client_files()
  local p = assert(io.popen("find lua/wechatpay -name '*.lua' | sort"))
  local list = {}
  for path in p:lines() do
    local name = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
    list[#list + 1] = { path = path, name = name }
  end
  p:close()
  assert(#list > 5, "no lua/wechatpay files: run the specs from the tree's root")
  return list
end

describe("the layers", function()
  describe("the source check", function()
    it("finds each way a module can load a tool", function()
      for _, case in ipairs {
        { 'local v = require "quan.validate"', "names the module 'quan.validate'" },
        { 'require("quan.dryrun").install(M)', "names the module 'quan.dryrun'" },
        { "local ok, s = pcall(require, 'quan.sandbox')", "names the module 'quan.sandbox'" },
        { 'local function need(n) return require(n) end', "require with a computed name" },
        { 'need("quan.plan")', "names the module 'quan.plan'" },
        { 'local m = package.loaded["quan.batch"]', "names the module 'quan.batch'" },
        { 'local m = package.loaded[name]', "package.loaded[<computed>]" },
        { 'local f = package.preload[x]', "package.preload[<computed>]" },
        { 'table.insert(package.searchers, 1, f)', "package.searchers" },
        { 'local m = require("quan." .. which)', "names the module 'quan'" },
        { 'local r = require; r"x"', "require passed around" },
        { 'local m = _G.require("x")', "_G: a way around require" },
        { 'local m = dofile("lua/quan/check.lua")', "dofile" },
        { 'local f = load("return require\'x\'")', "holds code that calls require" },
        { 'local f = load(code, "=x", "t", env)', "load without an empty environment" },
        { 'local f = loadfile(path)', "loadfile without an empty environment" },
        { 'local r = debug.getregistry()._LOADED', "debug.getregistry" },
        { 'local s = [[quan.report]]', "names the module 'quan.report'" },
        { "local s = 'quan.cli'", "names the module 'quan.cli'" },
        { "local s = 'quan.repl.complete'", "names the module 'quan.repl.complete'" },
      } do
        local found = violations(case[1], "case")
        assert.is_true(#found >= 1, case[1])
        assert.truthy(table.concat(found, "\n"):find(case[2], 1, true), case[1] .. " -> " .. table.concat(found, "\n"))
      end
      for _, fine in ipairs {
        'local crypto = require "quan.crypto"', 'local t = require("quan.time").parse',
        "local ok, qos = pcall(require, 'quan.os')", 'local fast = package.preload["quan.json"] and require("quan.json")',
        'local chunk = loadfile(path, "t", {})', 'local f = load(code, "=gen", "t", {})',
        '-- require "quan.sandbox" in a comment', '--[[ package.loaded[x] ]] local x = 1',
        'local s = "required when stock_type is NORMAL"', 'local m = require "wechatpay.favor.validate"',
        'debug.sethook(f, "", 10)', 'local x = t.require', 'local s = "quan: using a private sandbox"',
        'local p = cwd .. "quan.config.lua"',
      } do
        assert.same({}, violations(fine, "fine"), fine)
      end
    end)

    it("finds no wechatpay module that names or loads a tool", function()
      local found = {}
      for _, f in ipairs(client_files()) do
        for _, v in ipairs(violations(read(f.path), f.path)) do found[#found + 1] = v end
      end
      assert.equal("", table.concat(found, "\n"))
    end)
  end)

  describe("the run check", function()
    it("sees no tool loaded by a wechatpay module's code, and the tools plugged in through the hooks", function()
      local dir = sh.tmpdir()
      local names = {}
      for _, f in ipairs(client_files()) do names[#names + 1] = f.name end
      local trace = dir .. "/trace"
      local script = sh.write(dir .. "/drive.lua", [=[
local trace, names = ...
local out = assert(io.open(trace, "w"))
-- requirer() -> the source of the Lua code whose require is loading a
-- module; "[C]" when a C function (the host) asked
local function requirer()
  for level = 3, 60 do
    local info = debug.getinfo(level, "Sf")
    if not info then return "?" end
    if info.what ~= "C" then return info.source end
    if info.func ~= require and info.func ~= pcall and info.func ~= xpcall then return "[C]" end
  end
  return "?"
end
table.insert(package.searchers, 1, function(name)
  out:write(name, "\t", requirer(), "\n")
  out:flush()
  return "\n\t(traced by layers_spec)"
end)
for name in names:gmatch("%S+") do require(name) end
local wechatpay = require "wechatpay"
local crypto = require "quan.crypto"
local async = require "quan.async"
local key = crypto.generate_rsa(2048)
local wx = wechatpay.new { mchid = "1900000001", serial = "ABC123", private_key = key,
  certs = { PUB_KEY_ID_0000000000000000000000000LAYER = key:public() }, apiv3_key = string.rep("k", 32),
  base_url = "https://layers.invalid" }
local function at(t) return os.date("!%Y-%m-%dT%H:%M:%S+08:00", t + 8 * 3600) end -- no helper: any tree runs it
local t0, t1 = at(os.time() + 86400), at(os.time() + 2 * 86400)
local body = { stock_name = "layers", belong_merchant = wx.mchid, stock_type = "NORMAL", no_cash = false,
  available_begin_time = t0, available_end_time = t1,
  stock_use_rule = { max_coupons = 10, max_amount = 1000, max_coupons_per_user = 1,
    natural_person_limit = false, prevent_api_abuse = false },
  coupon_use_rule = { coupon_available_time = {}, fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 200 } },
  out_request_no = "layers1" }
assert(wx.v3.marketing.favor.couponStocks:post { json = body })
assert(not wx.v3.marketing.favor.couponStocks:post { json = { stock_name = 1 } })
assert(wx.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 10, stock_creator_mchid = wx.mchid } })
assert(wx:chain("v3/marketing/favor/stocks?offset=0&limit=1&stock_creator_mchid=1"):get())
local p = wx.v3.marketing.favor.stocks._stock_id_:getAsync { stock_id = "1", query = { stock_creator_mchid = "1" } }
async.run()
assert(p:wait())
assert(not wx:notification({}, "{}"))
pcall(wx.decrypt, wx, { ciphertext = "", nonce = "n" })
local h = wechatpay.client()          -- no profile: the private sandbox
assert(h.sandbox and h.sandbox.base_url)
h.sandbox:stop()
out:close()
]=])
      local home = dir .. "/home"
      assert(require("quan.os").mkdir(home))
      local cmd = ("HOME=%s QUAN_DRY_RUN=1 %s %s %s %s"):format(sh.quote(home), sh.quan, sh.quote(script),
        sh.quote(trace), sh.quote(table.concat(names, " ")))
      local _, err, code = sh.run(cmd .. " >/dev/null")
      assert.equal(0, code, err)
      local loads, by = {}, {}
      for line in io.lines(trace) do
        local name, source = line:match("^(.-)\t(.*)$")
        loads[#loads + 1] = { name = name, source = source }
        by[name] = source
      end
      local found = {}
      for _, l in ipairs(loads) do
        if l.source:find("^@%.?/?lua/wechatpay/") and not allowed(l.name) then
          found[#found + 1] = l.source:sub(2) .. " loaded " .. l.name
        end
      end
      assert.equal("", table.concat(found, "\n"))
      -- the trace sees what it must: a core native loaded by the client's
      -- code, and the tools of this run loaded from the tool layer
      assert.matches("^@lua/wechatpay/", by["quan.crypto"] or by["quan.os"] or "")
      for _, tool in ipairs { "quan.dryrun", "quan.sandbox" } do
        assert.is_string(by[tool], tool .. " was not loaded: the run did not drive the hooks")
        assert.is_nil(by[tool]:find("wechatpay", 1, true), tool .. " loaded by " .. by[tool])
      end
    end)
  end)
end)
