-- quan.check: `quan check script.lua [args]`.
--
-- Runs a campaign script with sending disabled: the client's
-- wechatpay.hooks.before_send answers every request with a synthetic response
-- (placeholders from the endpoint's response schema, e.g. stock_id
-- "CHECK-0001", so a script that chains create -> start keeps working), and
-- every request is validated and listed (method, path, body). No network I/O:
-- wechatpay.client() returns a client with a throwaway key, no profile or
-- sandbox is touched.
--
--   check.main(args)      -> exit status: 0 all valid, 1 findings or a script
--                            error, 2 usage
--   check.run(path, args [, opts]) -> report { requests = {...}, error = msg|nil }
--   check.response(p)     -> the synthetic response for a prepared request
local schema = require "wechatpay.favor.schema"
local validate = require "quan.validate"
local cjson = require "cjson"

local M = {}

-- ---------------------------------------------------------------------------
-- synthetic responses

local counter, requests = 0, 0

local function jstr(s) return cjson.encode(s) end

local function iso_now()
  return os.date("!%Y-%m-%dT%H:%M:%S+08:00", os.time() + 8 * 3600)
end

-- json_of(node, name, echo) -> JSON text of a placeholder value for node
local function json_of(node, name, echo)
  local t = node.type
  if name and echo[name] ~= nil and (t == "string" or t == "integer" or t == "number" or t == "boolean") then
    local v = echo[name]
    if t == "string" then return jstr(tostring(v)) end
    if t == "boolean" and type(v) == "boolean" then return tostring(v) end
    if (t == "integer" or t == "number") and tonumber(v) then return tostring(math.tointeger(tonumber(v)) or tonumber(v)) end
  end
  if t == "object" then
    local parts = {}
    for _, f in ipairs(node.fields or {}) do
      parts[#parts + 1] = jstr(f.name) .. ":" .. json_of(f, f.name, echo)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "array" then
    return "[]"
  elseif t == "string" then
    if node.enum then return jstr(node.enum[1]) end
    if node.format == "rfc3339" then return jstr(iso_now()) end
    if name and (name:match("_id$") or name == "url" or name == "media_url") then
      if name == "url" then return jstr("https://check.invalid/download.csv") end
      if name == "media_url" then return jstr("https://check.invalid/image.png") end
      counter = counter + 1
      return jstr(("CHECK-%04d"):format(counter))
    end
    return jstr("CHECK")
  elseif t == "integer" or t == "number" then
    if node.enum then return tostring(node.enum[1]) end
    return "0"
  elseif t == "boolean" then
    return "false"
  end
  return "null"
end

local decode_query = require("wechatpay.chain").decode_query

local function parse_query(path)
  return decode_query(path:match("%?(.*)$"))
end

-- response(p) -> { status = 200, headers = {...}, body = json } built from the
-- response schema of p's endpoint; fields named like a path variable, a query
-- parameter or a body field echo the request's value
function M.response(p)
  if type(p) ~= "table" then error("check.response: expected the prepared request table", 2) end
  local path = p.path or p.target or ""
  local ep, vars = schema.find(p.method or "GET", path)
  local echo = {}
  for k, v in pairs(parse_query(path)) do echo[k] = v end
  if type(p.json) == "table" then
    for k, v in pairs(p.json) do if type(v) ~= "table" then echo[k] = v end end
  end
  for k, v in pairs(vars or {}) do echo[k] = v end
  local body = ep and ep.response and json_of(ep.response, nil, echo) or "{}"
  requests = requests + 1
  return {
    status = 200,
    headers = { ["content-type"] = "application/json", ["request-id"] = ("CHECK-REQUEST-%04d"):format(requests) },
    body = body,
  }
end

-- ---------------------------------------------------------------------------
-- the run

local function dummy_client(wechatpay)
  local crypto = require "quan.crypto"
  -- one throwaway key signs the requests; its public half stands in for the
  -- WeChat Pay public key (no answer is verified in check mode)
  local key = crypto.generate_rsa(2048)
  local opts = {
    mchid = "1900000001", serial = "C0FFEE0000000000000000000000000000000001",
    private_key = key, certs = { PUB_KEY_ID_0000000000000000000000000CHECK = key:public() },
    apiv3_key = string.rep("0", 32), base_url = "https://check.invalid",
  }
  -- wx.profile as a script reads it: opts (the client keeps no secret of
  -- them) and a placeholder appid
  local profile = { appid = "wx00000000000c4ec0" }
  for k, v in pairs(opts) do profile[k] = v end
  return require("wechatpay.client").new(opts, profile)
end

local Exit = {} -- metatable of the error os.exit raises inside a checked script

-- run(path, args [, opts]) -> report
-- report = { requests = { {method, path, body, title, ok, findings} }, error = msg|nil }
-- opts.on_request(entry) is called as each request is seen; opts.now = clock
function M.run(path, args, opts)
  if type(path) ~= "string" then error("check.run: path must be a string", 2) end
  args = args or {}
  opts = opts or {}
  local report = { requests = {} }
  local chunk, lerr = loadfile(path)
  if not chunk then report.error = lerr; return report end

  local wechatpay = require "wechatpay"
  local saved_hook = wechatpay.hooks.before_send
  local saved_client = wechatpay.client
  local saved_request = validate.request
  local saved_simulation = wechatpay.simulation
  local client

  wechatpay.hooks.before_send = function(p)
    local body = p.json
    if body == nil and type(p.upload_meta) == "string" then
      body = require("cjson.safe").decode(p.upload_meta)    -- multipart: the signed meta part
    elseif body == nil and p.body and p.body ~= "" and (p.body:sub(1, 1) == "{") then
      body = require("cjson.safe").decode(p.body)
    end
    local target = p.template or (p.path or ""):gsub("%?.*", "")
    local ok, findings = saved_request(p.method, target, body, { now = opts.now, query = parse_query(p.path or "") })
    local ep = p.endpoint or schema.find(p.method, p.path or "")
    local entry = {
      method = p.method, path = p.path, body = p.body or "", title = ep and ep.title,
      known = ep ~= nil, ok = ok, findings = findings or {},
    }
    report.requests[#report.requests + 1] = entry
    if opts.on_request then opts.on_request(entry) end
    return M.response(p)
  end
  -- the client's own validation would refuse an invalid request before the
  -- hook sees it; in check mode every request goes on to the hook, which
  -- validates and lists it, so one run reports every finding
  validate.request = function() return true end
  wechatpay.simulation = "check"
  wechatpay.client = function(name)
    if name ~= nil and type(name) ~= "string" then error("wechatpay.client: profile name must be a string", 2) end
    client = client or dummy_client(wechatpay)
    return client
  end

  local saved_arg = arg
  local a = { [0] = path }
  for i, v in ipairs(args) do a[i] = v end
  arg = a
  -- os.exit ends the script, not the check: its summary and exit status
  -- still come from the requests seen
  local saved_exit = os.exit
  os.exit = function(code) error(setmetatable({ code = code }, Exit), 0) end
  local ok, err = xpcall(chunk, function(e)
    if getmetatable(e) == Exit then return e end
    if type(e) == "table" and getmetatable(e) and getmetatable(e).__tostring then e = tostring(e) end
    return debug.traceback(tostring(e), 2)
  end, table.unpack(args))
  os.exit = saved_exit
  arg = saved_arg
  if ok then report.returned = err end -- what the script returned: a campaign file, its declaration
  wechatpay.hooks.before_send = saved_hook
  wechatpay.client = saved_client
  wechatpay.simulation = saved_simulation
  validate.request = saved_request
  if not ok and getmetatable(err) == Exit then
    local code = err.code
    if code == nil or code == true or code == 0 then ok = true
    else err = "script called os.exit(" .. tostring(code) .. ")" end
  end
  if not ok then report.error = err end
  return report
end

local LOG_FORMATS = require("quan.batch.progress").FORMATS

local USAGE = "usage: quan check [--now TIME] [--json] [--profile NAME] [--config FILE] script.lua [args]"

-- main(args) -> exit status
function M.main(args)
  args = args or {}
  local i = 1
  local now, log_format, as_json
  while args[i] and args[i]:sub(1, 1) == "-" and args[i] ~= "-" do
    local a = args[i]
    if a == "--" then i = i + 1 break end
    if a == "--now" then
      -- check as of this time: "YYYY-MM-DD HH:MM" (Beijing time) or epoch seconds
      local v = args[i + 1] or ""
      now = tonumber(v)
      if not now then
        local ok, t = pcall(require("wechatpay.favor").at, v)
        now = ok and validate.rfc3339(t) or nil
      end
      if not now then
        io.stderr:write("quan check: --now expects \"YYYY-MM-DD HH:MM\" or epoch seconds, got '", v, "'\n")
        return 2
      end
      i = i + 2
    elseif a == "--log-format" or a:match("^%-%-log%-format=") then
      -- a batch's log, as `quan run` takes it
      local v = a:match("=(.*)$")
      i = i + (v and 1 or 2)
      v = v or args[i - 1]
      if not LOG_FORMATS[v or ""] then
        io.stderr:write("quan check: --log-format ",
          v and ("must be one of bar, json, text, got '" .. v .. "'") or "needs a value", "\n")
        return 2
      end
      log_format = v
    elseif a == "--json" then
      as_json, i = true, i + 1 -- a campaign file's plan as JSON
    elseif a == "--profile" or a == "--config" then
      i = i + 2          -- accepted for symmetry with `quan run`; check uses no profile
    elseif a:match("^%-%-profile=") or a:match("^%-%-config=") or a == "--verbose" or a == "--sandbox"
      or a == "--dry-run" then
      i = i + 1
    else
      io.stderr:write("quan check: unknown option '", a, "'\n", USAGE, "\n")
      return 2
    end
  end
  local script = args[i]
  if not script then
    io.stderr:write(USAGE, "\n")
    return 2
  end
  local rest = table.move(args, i + 1, #args, 1, {})
  local out = io.stdout
  local n = 0
  if log_format then require("quan.batch").log_format = log_format end
  local report = M.run(script, rest, {
    now = now,
    on_request = function(e)
      n = n + 1
      out:write(("%d. %s %s%s: %s\n"):format(n, e.method, e.path,
        e.title and ("  (" .. e.title .. ")") or "",
        e.ok and (e.known and "valid" or "not a favor endpoint, not checked")
          or (#e.findings .. " finding" .. (#e.findings == 1 and "" or "s"))))
      if e.body ~= "" then
        if e.body:find("[%z\1-\8\14-\31\127]") or #e.body > 4096 then
          out:write("   body: <", #e.body, " bytes>\n")
        else
          out:write("   body: ", e.body, "\n")
        end
      end
      if not e.ok then
        for line in (validate.format(e.findings) .. "\n"):gmatch("([^\n]*)\n") do
          out:write("   - ", line, "\n")
        end
      end
      out:flush()
    end,
  })
  if not report.error and require("quan.campaign").is_declaration(report.returned) then
    -- a campaign file: its plan, as quan plan shows it, without the API
    return require("quan.campaign.plan").check(script, report.returned, { now = now, json = as_json })
  end
  if as_json then io.stderr:write("quan check: --json is for campaign files; ", script, " is a script\n") end
  local bad = 0
  for _, e in ipairs(report.requests) do if not e.ok then bad = bad + 1 end end
  if report.error then
    io.stderr:write("quan check: ", script, ": ", tostring(report.error), "\n")
  end
  out:write(("quan check: %d request%s, %d invalid%s\n"):format(#report.requests,
    #report.requests == 1 and "" or "s", bad, report.error and ", script failed" or ""))
  if report.error or bad > 0 then return 1 end
  return 0
end

return M
