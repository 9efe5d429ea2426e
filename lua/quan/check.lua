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
--   check.main(opts, arguments) -> exit status: 0 all valid, 1 findings or a
--                            script error (quan.cli parses the command line)
--   check.parse_now(text) -> epoch seconds | nil, reason (the value of --now)
--   check.run(path, args [, opts]) -> report { requests = {...}, error = msg|nil }
--   check.response(p)     -> the synthetic response for a prepared request
local schema = require "wechatpay.favor.schema"
local validate = require "wechatpay.favor.validate"
local json = require "wechatpay.json"
local time = require "quan.time"
local url = require "quan.url"

local M = {}

-- ---------------------------------------------------------------------------
-- synthetic responses

local counter, requests = 0, 0
local huge = math.huge

-- placeholder(node, name, echo) -> a Lua value for node: the request's
-- value when a scalar field is named like one of them (echo), else a
-- placeholder of the node's type (ids CHECK-0001, ..., times now, enums
-- their first value, arrays empty)
local function placeholder(node, name, echo)
  local t = node.type
  local v = name and echo[name]
  if v ~= nil then
    if t == "string" then
      local s = tostring(v)
      if utf8.len(s) then return s end
    elseif t == "boolean" then
      if type(v) == "boolean" then return v end
    elseif t == "integer" or t == "number" then
      local x = tonumber(v)
      if x and x > -huge and x < huge then return math.tointeger(x) or x end
    end
  end
  if t == "object" then
    local o = {}
    for _, f in ipairs(node.fields or {}) do o[f.name] = placeholder(f, f.name, echo) end
    return o
  elseif t == "array" then
    return json.empty_array
  elseif t == "string" then
    if node.enum then return node.enum[1] end
    if node.format == "rfc3339" then return time.beijing(os.time()) end
    if name == "url" then return "https://check.invalid/download.csv" end
    if name == "media_url" then return "https://check.invalid/image.png" end
    if name and name:match("_id$") then
      counter = counter + 1
      return ("CHECK-%04d"):format(counter)
    end
    return "CHECK"
  elseif t == "integer" or t == "number" then
    return node.enum and node.enum[1] or 0
  elseif t == "boolean" then
    return false
  end
  return json.null
end

local function parse_query(path)
  return url.query(path:match("%?(.*)$"))
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
  -- a download link (a flow file's `url`) on the API the request went to, as
  -- WeChat Pay's are: wx:download refuses any other, which raised under a dry run
  local origin = type(p.url) == "string" and p.url:match("^(https://[^/]+)")
  if origin and echo.url == nil then echo.url = origin .. "/v3/billdownload/file?token=CHECK" end
  local body = ep and ep.response and json.encode(placeholder(ep.response, nil, echo)) or "{}"
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
  local hooks = wechatpay.hooks
  local saved_hook, saved_validate = hooks.before_send, hooks.validate
  local saved_client = wechatpay.client
  local saved_simulation = wechatpay.simulation
  local client

  hooks.before_send = function(p)
    local body = p.json
    if body == nil and type(p.upload_meta) == "string" then
      body = require("cjson.safe").decode(p.upload_meta)    -- multipart: the signed meta part
    elseif body == nil and p.body and p.body ~= "" and (p.body:sub(1, 1) == "{") then
      body = require("cjson.safe").decode(p.body)
    end
    local ep = p.endpoint
    local ok, findings = true, nil
    if ep then ok, findings = validate.check(ep, body, { now = opts.now, query = parse_query(p.path or "") }) end
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
  hooks.validate = function() return true end
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
  hooks.before_send, hooks.validate = saved_hook, saved_validate
  wechatpay.client = saved_client
  wechatpay.simulation = saved_simulation
  if not ok and getmetatable(err) == Exit then
    local code = err.code
    if code == nil or code == true or code == 0 then ok = true
    else err = "script called os.exit(" .. tostring(code) .. ")" end
  end
  if not ok then report.error = err end
  return report
end

-- parse_now(text) -> epoch seconds | nil, reason: the value of --now,
-- "YYYY-MM-DD HH:MM" (Beijing time) or epoch seconds
function M.parse_now(text)
  local now = tonumber(text)
  if not now then
    local ok, t = pcall(require("wechatpay.favor").at, text)
    now = ok and time.parse(t) or nil
  end
  -- epoch seconds of the years 1970 to 9999 (1e20 made every date an error further on)
  if not now or now ~= now or now < 0 or now >= 253402300800 then
    return nil, ("expects \"YYYY-MM-DD HH:MM\" or epoch seconds, got '%s'"):format(text)
  end
  return now
end

-- main(opts, arguments) -> exit status; the `quan check` command (its
-- options: quan.cli's table): arguments = { script, script's args... }
function M.main(opts, arguments)
  local script = arguments[1]
  local rest = table.move(arguments, 2, #arguments, 1, {})
  local now, log_format = opts.now, opts.log_format
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
    return require("quan.campaign.plan").check(script, report.returned, { now = now, json = opts.json })
  end
  if opts.json then io.stderr:write("quan check: --json is for campaign files; ", script, " is a script\n") end
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
