-- wechatpay.client: the client object, the API tree and one request's path
-- from options to result:
--   options -> path + query -> body (JSON | raw | multipart) -> validate ->
--   sign -> [hook | send] -> verify (2xx) -> decode -> result | error table
--
-- Policy (docs/client.md): construction problems raise a "config" error
-- table; a wrong argument (not a table, unknown option, missing path
-- variable) raises a string at the caller's level; everything the world
-- causes (network, an API error answer, a failed verification, a request
-- the validator rejects) is returned as `nil, err` by the plain verbs and
-- rejects the promise of the ...Async verbs (`:wait()` re-raises it).
local chain = require "wechatpay.chain"
local config = require "wechatpay.config"
local errors = require "wechatpay.errors"
local json = require "wechatpay.json"
local sign = require "wechatpay.sign"
local verify = require "wechatpay.verify"
local multipart = require "wechatpay.multipart"
local trace = require "wechatpay.trace"
local decode_query = require("quan.url").query
local suggest = require "quan.suggest"

local M = {}

local qos = require "quan.os"

-- quan's version, defined once in C (src/quan.h) and read from the host
M.VERSION = qos.VERSION
M.BASE_URL = "https://api.mch.weixin.qq.com"
M.TIMEOUT = 30
M.UPLOAD_LIMIT = 2 * 1024 * 1024 -- bytes: image-upload takes at most 2 MB
M.DOWNLOAD_LIMIT = 1024 * 1024 * 1024 -- bytes of a file wx:download keeps

-- The other natives (quan.crypto, quan.http through quan.async) are
-- required where they are first used: loading the client does not start
-- OpenSSL or libcurl; require keeps them once loaded.

-- validate(endpoint, body, query) -> true | false, findings: the default
-- validation hook, the favor validator (loaded on the first request that
-- is validated)
local VALIDATE_OPTIONS = {} -- check's options, one table for every call: check keeps no reference
local function validate(endpoint, body, query)
  VALIDATE_OPTIONS.query = query
  return require("wechatpay.favor.validate").check(endpoint, body, VALIDATE_OPTIONS)
end

-- hooks: wechatpay.hooks (docs/client.md, "Hooks"): before_send, validate,
-- and private_sandbox (read by init.lua); the tools set them, the client
-- never loads a tool
M.hooks = { validate = validate }

local conferr = errors.config
local usage = errors.usage

local Client = {}
local Node = {}
local state = setmetatable({}, { __mode = "k" }) -- client -> private state

local VERBS = { get = "GET", post = "POST", put = "PUT", patch = "PATCH", delete = "DELETE" }

local OPTIONS = {
  json = true, body = true, query = true, headers = true, timeout = true,
  validate = true, file = true, filename = true, content_type = true, retry = true,
}

-- the options that make a body: a GET has none
local BODY_OPTIONS = { json = true, body = true, file = true, filename = true, content_type = true }

-- options(method) -> sorted array of the option names a verb takes (its
-- path variables aside): what the REPL completes
function M.options(method)
  local list = {}
  for k in pairs(OPTIONS) do
    if not (method == "GET" and BODY_OPTIONS[k]) then list[#list + 1] = k end
  end
  table.sort(list)
  return list
end

---------------------------------------------------------------------------
-- construction

local NEW_KEYS = {
  mchid = true, serial = true, private_key = true, certs = true, apiv3_key = true,
  base_url = true, ca_file = true, timeout = true, proxy = true,
}
M.NEW_KEYS = NEW_KEYS

local function read_secret(src, what)
  local path = src:match("^file://(.*)$")
  if not path then return src end
  local s, err = require("quan.path").read(path)
  if not s then conferr("%s: cannot read %s: %s", what, path, tostring(err)) end
  return (s:gsub("\r?\n$", ""))
end

-- serial_eq(a, b) -> true when two hex serials name the same number
local function serial_eq(a, b)
  local na = a:upper():gsub("^0+", "")
  local nb = b:upper():gsub("^0+", "")
  return na == nb
end

-- load_certs(certs, merchant_serial) -> serial -> key map, advertised serial
local function load_certs(certs, own)
  local crypto = require("quan.crypto")
  if type(certs) ~= "table" then conferr("certs: expected a table { [serial or PUB_KEY_ID_...] = certificate or public key }") end
  local keys, pubkey_id, best, best_after = {}, nil, nil, nil
  local n = 0
  for name, src in pairs(certs) do
    n = n + 1
    if type(name) ~= "string" or name == "" then conferr("certs: keys must be serials or PUB_KEY_ID_... strings") end
    local where = ('certs["%s"]'):format(name)
    if own and serial_eq(name, own) then
      conferr("%s: is the merchant's own certificate serial (option 'serial'); certs holds WeChat Pay's platform certificates or public key", where)
    end
    local key, after
    if type(src) == "userdata" then
      key = src
    elseif type(src) == "string" then
      local cert = crypto.certificate(src)
      if cert then
        local cs = cert:serial()
        if not name:find("^PUB_KEY_ID_") and not serial_eq(cs, name) then
          conferr("%s: the certificate's serial is %s", where, cs)
        end
        if own and serial_eq(cs, own) then
          conferr("%s: is the merchant's own certificate (serial %s); certs holds WeChat Pay's platform certificates or public key", where, cs)
        end
        key, after = cert:public_key(), cert:not_after()
      else
        local k, err = crypto.public_key(src)
        if not k then conferr("%s: not a certificate or public key: %s", where, tostring(err)) end
        key = k
      end
    else
      conferr("%s: expected a PEM text, a file:// path or a key (got %s)", where, type(src))
    end
    keys[name] = key
    if name:find("^PUB_KEY_ID_") then
      if not pubkey_id or name > pubkey_id then pubkey_id = name end
    elseif not best or (after or 0) > (best_after or 0) or ((after or 0) == (best_after or 0) and name > best) then
      best, best_after = name, after
    end
  end
  -- n == 0: a merchant in certificate mode before its first certificate;
  -- wx:certificates() is then the one call whose answer can be verified
  return keys, pubkey_id or best
end

-- seconds(v) -> true when v is a timeout: a number > 0 and finite (NaN fails)
local function seconds(v)
  return type(v) == "number" and v > 0 and v < math.huge
end

local function copy_public(opts)
  local p = {}
  for k, v in pairs(opts) do
    if k ~= "private_key" and k ~= "apiv3_key" then p[k] = v end
  end
  return p
end

-- new(opts[, profile]) -> client; raises a config error table naming the key
function M.new(opts, profile)
  if type(opts) ~= "table" then conferr("wechatpay.new: expected a table of options, got %s", type(opts)) end
  for k in pairs(opts) do
    if not NEW_KEYS[k] then
      conferr("wechatpay.new: unknown option '%s'%s", tostring(k), config.hint(k, NEW_KEYS))
    end
  end
  local mchid = opts.mchid
  if math.type(mchid) == "integer" then mchid = ("%d"):format(mchid) end
  if type(mchid) ~= "string" or not mchid:find("^%d+$") then conferr("mchid: expected the merchant id (digits)") end
  local serial = opts.serial
  if type(serial) ~= "string" or not serial:find("^%x+$") then
    conferr("serial: expected the merchant certificate serial in hex")
  end
  serial = serial:upper()
  local src = opts.private_key
  if type(src) ~= "string" and type(src) ~= "userdata" then
    conferr("private_key: expected a file:// path or PEM text")
  end
  for _, k in ipairs { "private_key", "apiv3_key" } do
    local path = type(opts[k]) == "string" and opts[k]:match("^file://(.*)$")
    if path then config.secret(path, k) end
  end
  local key = src
  if type(src) == "string" then
    local err
    key, err = require("quan.crypto").private_key(src)
    if not key then conferr("private_key: %s", tostring(err)) end
  end
  if not key:is_private() then conferr("private_key: not a private key") end
  local keys, accept = load_certs(opts.certs, serial)
  local apiv3
  if opts.apiv3_key ~= nil then
    if type(opts.apiv3_key) ~= "string" then conferr("apiv3_key: expected a file:// path or the key text") end
    apiv3 = read_secret(opts.apiv3_key, "apiv3_key")
    if #apiv3 ~= 32 then conferr("apiv3_key: expected 32 bytes, got %d", #apiv3) end
  end
  local base = opts.base_url or M.BASE_URL
  if type(base) ~= "string" or not base:find("^https://[^/]") then
    conferr("base_url: expected https://host[:port], got %s", tostring(base))
  end
  base = base:gsub("/+$", "")
  -- a base URL with a path (a gateway) puts that prefix in the signed target
  local origin, prefix = base:match("^(https://[^/]+)(.*)$")
  if opts.ca_file ~= nil then
    if type(opts.ca_file) ~= "string" then conferr("ca_file: expected a path") end
    local f, err = io.open(opts.ca_file, "rb")
    if not f then conferr("ca_file: cannot read %s", tostring(err)) end
    f:close()
  end
  if opts.proxy ~= nil and type(opts.proxy) ~= "string" then conferr("proxy: expected a URL") end
  local timeout = opts.timeout or M.TIMEOUT
  if not seconds(timeout) then conferr("timeout: expected a positive, finite number of seconds, got %s", tostring(timeout)) end

  local wx = setmetatable({
    mchid = mchid,
    serial = serial,
    base_url = base,
    profile = copy_public(profile or opts),
  }, Client)
  state[wx] = {
    key = key, keys = keys, accept = accept, apiv3 = apiv3,
    ca_file = opts.ca_file, proxy = opts.proxy, timeout = timeout, verbose = trace.enabled(),
    origin = origin, prefix = prefix, fixed_strings = {}, fixed_n = 0,
  }
  return wx
end

---------------------------------------------------------------------------
-- the API tree

-- a node's client and segments live under private keys, so every string key
-- stays free for the API tree
local CLIENT, SEGMENTS, TEMPLATE = {}, {}, {}

local function node(client, segs)
  return setmetatable({ [CLIENT] = client, [SEGMENTS] = segs, [TEMPLATE] = table.concat(segs, "/") }, Node)
end

local function template(n)
  return rawget(n, TEMPLATE)
end

local verb_fns = {}

-- cacheable(k) -> whether a child node is kept on its parent: the segments of
-- a property chain are (a program names few of them); array-style paths and
-- values such as ids are made anew each time, so a long batch that indexes
-- wx["v3/.../stocks/" .. id] does not grow the tree without bound
local function cacheable(k)
  return k:find("^[%a_][%w_]*$") ~= nil
end

-- Typo hints for paths of a family the schema knows (/v3/marketing/favor):
-- a path that enters the family must follow one of its endpoints' templates,
-- else it is a usage error naming the closest segments; any other path
-- passes untouched, so every APIv3 endpoint stays callable.

-- family_tree() -> { prefix = {"v3", "marketing", "favor"}, tree = node }
-- from the schema's templates (built on the first check); a node is
-- { name = segment, kids = { segment -> node }, var = node of a {variable} }
local family
local function family_tree()
  if family then return family end
  local schema = require "wechatpay.favor.schema"
  local tree = { kids = {} }
  for _, ep in ipairs(schema.endpoints) do
    local at = tree
    for seg in ep.path:gmatch("[^/]+") do
      local is_var = seg:find("^{.*}$") ~= nil
      local sub = is_var and at.var or at.kids[seg]
      if not sub then
        sub = { name = seg, kids = {} }
        if is_var then at.var = sub else at.kids[seg] = sub end
      end
      at = sub
    end
  end
  local prefix = {}
  for seg in schema.family:gmatch("[^/]+") do prefix[#prefix + 1] = seg end
  family = { prefix = prefix, path = schema.family, tree = tree }
  return family
end

-- spelled(seg, path_style) -> a segment as the caller writes it:
-- "couponStocks", "_stock_id_" in a property chain, "coupon-stocks",
-- "{stock_id}" in a path
local function spelled(seg, path_style)
  if path_style then return seg end
  local var = seg:match("^{(.+)}$")
  if var then return "_" .. var .. "_" end
  return (seg:gsub("%-(%w)", string.upper))
end

-- misspelt(segs, typed) -> nil when segs is outside the family or on one of
-- its templates; else a message naming the first segment that is on none,
-- and the closest ones there. typed: the key as the caller wrote it (how
-- the suggestions are spelt)
local function misspelt(segs, typed)
  local f = family_tree()
  local path_style = typed:find("[-/{]") ~= nil
  local function where(i) return "/" .. table.concat(segs, "/", 1, i) end
  local at = f.tree
  for i, raw in ipairs(segs) do
    local seg = raw:gsub("%?.*$", "") -- a query written into the path
    local want = f.prefix[i]
    if want and seg ~= want then
      -- leaving the family's own path: a typo of it, or another family
      if i > 1 and suggest.closest(seg, { want }) then
        return ("%s: no such API path%s"):format(where(i),
          suggest.hint(spelled(seg, path_style), { spelled(want, path_style) }))
      end
      return nil
    end
    local var = seg:match("^{(.+)}$")
    local sub
    if var then
      sub = at.var
      if sub and sub.name ~= seg then
        return ("%s: the path variable here is %s, not %s"):format(where(i),
          spelled(sub.name, path_style), spelled(seg, path_style))
      end
    else
      sub = at.kids[seg] or at.var -- a value in a variable's place (an id)
    end
    if not sub then
      local names = {}
      for _, k in pairs(at.kids) do names[#names + 1] = spelled(k.name, path_style) end
      if at.var then names[#names + 1] = spelled(at.var.name, path_style) end
      table.sort(names)
      if #names == 0 then
        return ("%s: no endpoint of %s lies below %s"):format(where(i), f.path, where(i - 1))
      end
      return ("%s: no endpoint of %s has a segment '%s' here%s; known here: %s"):format(where(i), f.path,
        spelled(seg, path_style), suggest.hint(spelled(seg, path_style), names), table.concat(names, ", "))
    end
    at = sub
  end
  return nil
end

-- checked(client, segs, key, level) -> the node at segs; a path misspelt
-- raises error(message, level) as seen from checked's caller
local function checked(client, segs, key, level)
  local why = misspelt(segs, key)
  if why then error(why, level + 1) end
  return node(client, segs)
end

-- the methods of a node besides the verbs (Node.chain, Node.each, Node.curl)
local node_methods = {}

function Node.__index(n, k)
  local f = verb_fns[k] or node_methods[k]
  if f then return f end
  if type(k) ~= "string" then return nil end
  local segs = {}
  for i, s in ipairs(rawget(n, SEGMENTS)) do segs[i] = s end
  local child = checked(rawget(n, CLIENT), chain.split(k, segs), k, 2)
  if cacheable(k) then rawset(n, k, child) end
  return child
end

Node.__name = "wechatpay.node" -- how wechatpay.json recognizes a node put in a body

function Node.__tostring(n)
  return "wechatpay.node /" .. template(n)
end

-- node:chain("a/b") -> the node below
function node_methods.chain(n, path)
  if getmetatable(n) ~= Node then error("chain: call it with ':' (node:chain(\"...\"))", 2) end
  if type(path) ~= "string" then error("chain: expected a path string, got " .. type(path), 2) end
  local segs = {}
  for i, s in ipairs(rawget(n, SEGMENTS)) do segs[i] = s end
  return checked(rawget(n, CLIENT), chain.split(path, segs), path, 2)
end
Node.chain = node_methods.chain

-- fields a client may lack; reading them must not grow the API tree
local RESERVED = { sandbox = true, profile_name = true }

-- the names a client answers to, for "did you mean": its fields, its
-- methods and the root of the API tree
local function client_names()
  local names = { "mchid", "serial", "base_url", "profile", "sandbox", "profile_name", "v3" }
  for k, v in pairs(Client) do
    if type(v) == "function" and not k:find("^__") then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

-- wx.v3 (and wx["v3/..."]) is the API tree; any other key that is not a
-- field or a method is a usage error: wx.mchId is a typo, not a path /mch-id
function Client.__index(wx, k)
  local m = Client[k]
  if m then return m end
  if type(k) ~= "string" or RESERVED[k] then return nil end
  local segs = chain.split(k)
  if segs[1] ~= "v3" then
    error(("wx.%s: a client has no field '%s'%s; the API tree starts at wx.v3"):format(k, k,
      suggest.hint(k, client_names())), 2)
  end
  local child = checked(wx, segs, k, 2)
  if cacheable(k) then rawset(wx, k, child) end
  return child
end

function Client.__tostring(wx)
  return "wechatpay.client " .. wx.mchid .. " " .. wx.base_url
end

-- wx:chain("v3/marketing/favor/coupon-stocks") -> node
function Client.chain(wx, path)
  if getmetatable(wx) ~= Client then error("chain: call it with ':' (wx:chain(\"...\"))", 2) end
  if type(path) ~= "string" then error("chain: expected a path string, got " .. type(path), 2) end
  return checked(wx, chain.split(path), path, 2)
end
---------------------------------------------------------------------------
-- one request

local function context(method, target)
  return method .. " " .. target
end

-- read_file(path) -> the bytes of a regular file of 1..UPLOAD_LIMIT bytes;
-- a directory, a device or a pipe is refused before it is opened, and no
-- more than UPLOAD_LIMIT + 1 bytes are read
local function read_file(path)
  local st, why = require("quan.os").stat(path)
  if not st then usage("option 'file': cannot read " .. tostring(why)) end
  if st.kind ~= "file" then usage("option 'file': " .. path .. " is not a regular file") end
  local limit = M.UPLOAD_LIMIT
  local function too_big(size)
    usage(("option 'file': %s is %s bytes, over the upload limit of %d bytes (%d MB)"):format(
      path, size, limit, limit // 1048576))
  end
  if st.size > limit then too_big(("%d"):format(st.size)) end
  local f, err = io.open(path, "rb")
  if not f then usage("option 'file': cannot read " .. tostring(err)) end
  local s, rerr = f:read(limit + 1)
  f:close()
  if s == nil and rerr then usage("option 'file': cannot read " .. path .. ": " .. tostring(rerr)) end
  if s == nil or s == "" then usage("option 'file': " .. path .. " is empty") end
  if #s > limit then too_big("more than " .. limit) end -- grown since stat
  return s
end

-- printable(s) -> s with control bytes written as \xHH, for a message
local function printable(s)
  return (s:gsub("%c", function(c) return ("\\x%02X"):format(c:byte()) end))
end

-- check_header(name, value) -> name, or a usage error naming the header:
-- the name an HTTP token, the value free of CR, LF and NUL (a line break
-- would start another header, or end them)
local function check_header(name, value)
  if name == "" then usage("header '': the name is empty") end
  if not name:find("^[%w!#$%%&'*+%-.^_`|~]+$") then
    usage("header '" .. printable(name) .. "': the name is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)")
  end
  if name:lower() == "authorization" then usage("header 'Authorization' is the client's to set") end
  if value:find("[\r\n%z]") then usage("header '" .. name .. "': the value has a CR, LF or NUL byte") end
  return name
end

local function add_header(list, index, name, value)
  local lname = name:lower()
  local line = name .. ": " .. value
  if index[lname] then list[index[lname]] = line else
    list[#list + 1] = line
    index[lname] = #list
  end
end

-- user_agent() -> "quan/<version>": the User-Agent quan.http sends by
-- default (defined in C), written into every request's headers
local function user_agent()
  return require("quan.http").USER_AGENT
end

-- NO_QUERY: the query a hook sees for a request without one: {}, read-only
local NO_QUERY = setmetatable({}, {
  __newindex = function() error("the query of a request without one is read-only", 2) end,
})

-- body_text(endpoint, body, query) -> the body's JSON text when validate
-- would pass it in its common case (favor.validate.text), else nil (also
-- for a validator put in package.loaded without text, as a spec does)
local function body_text(endpoint, body, query)
  local text = require("wechatpay.favor.validate").text
  if text == nil then return nil end
  VALIDATE_OPTIONS.query = query or NO_QUERY
  return text(endpoint, body, VALIDATE_OPTIONS)
end

-- validation(endpoint, body, query, ctx) -> nil | validation error table:
-- the validate hook's findings (none without a hook); query: the parameters
-- as the server reads them, {} when there are none, so a missing required
-- one is found
local function validation(endpoint, body, query, ctx)
  local hook = M.hooks.validate
  if hook == nil then return nil end
  local good, findings = hook(endpoint, body, query)
  if good then return nil end
  return errors.new {
    kind = "validation", code = "validation", detail = findings,
    message = ctx .. ": invalid request:\n" .. require("wechatpay.favor.validate").format(findings),
  }
end

-- retry_policy(method, tpl, opts) -> the policy of option 'retry': a count
-- of retries after the first try (an integer >= 0) or a wechatpay.retry
-- policy; a usage error for a call that cannot be repeated safely
local function retry_policy(method, tpl, opts)
  local r = opts.retry
  local retry = require("wechatpay.retry")
  local ok, why = retry.idempotent(method, tpl, opts.json)
  if not ok then
    usage("option 'retry': this call cannot be repeated safely (" .. why .. "); only GETs, a stock's start, "
      .. "pause, restart and stop, and POSTs carrying an out_request_no are retried")
  end
  if retry.is_policy(r) then return r end
  if math.type(r) ~= "integer" or r < 0 or r > 100 then
    usage("option 'retry' must be a count of retries (an integer from 0 to 100) or a wechatpay.retry policy, got "
      .. tostring(r))
  end
  if r == 0 then return nil end
  return retry.policy { attempts = r + 1 }
end

-- check_options(method, tpl, opts, extra) -> the template's variables; a
-- usage error for an option the verb does not take (with the closest
-- names: the verb's options, the path's variables and `extra`'s keys)
local function check_options(method, tpl, opts, extra)
  local vars = chain.variables(tpl)
  for k in pairs(opts) do
    local body_less = method == "GET" and BODY_OPTIONS[k]
    if body_less then usage("option '" .. k .. "': a GET request has no body") end
    if not OPTIONS[k] and not vars[k] and not (extra and extra[k]) then
      local names = M.options(method)
      for v in pairs(vars) do names[#names + 1] = v end
      for v in pairs(extra or {}) do names[#names + 1] = v end
      usage("unknown option '" .. tostring(k) .. "'" .. suggest.hint(k, names))
    end
  end
  return vars
end

-- signature(wx, method, target, signed) -> string to sign, Authorization
-- value: a new timestamp (now) and nonce, signed with the merchant key;
-- raises when OpenSSL cannot sign
local function signature(wx, method, target, signed)
  local timestamp = ("%d"):format(math.floor(qos.time()))
  local nonce = require("quan.crypto").nonce(32)
  local message = sign.message(method, target, timestamp, nonce, signed)
  local signed_b64, why = state[wx].key:sign(message)
  if not signed_b64 then error("cannot sign the request: " .. tostring(why), 0) end
  return message, sign.authorization(wx.mchid, wx.serial, timestamp, nonce, signed_b64)
end

-- fixed_strings(st, tpl) -> the strings a request to a template without
-- variables writes, made once per client: { path = prefix/tpl, template =
-- /tpl, url = origin .. path, queried = whether tpl holds a query,
-- unsigned = whether its answers go unverified, [method] = "METHOD path" }.
-- At most 256 are kept (a program that writes ids into its paths makes a
-- new template each time).
local function fixed_strings(st, tpl)
  local all = st.fixed_strings
  local s = all[tpl]
  if s == nil then
    local path = st.prefix .. "/" .. tpl
    s = { path = path, template = "/" .. tpl, url = st.origin .. path, queried = tpl:find("?", 1, true) ~= nil,
      unsigned = verify.skip(path) }
    if st.fixed_n >= 256 then all, st.fixed_n = {}, 0; st.fixed_strings = all end
    all[tpl], st.fixed_n = s, st.fixed_n + 1
  end
  return s
end

-- prepare(wx, method, tpl, opts[, raw]) -> prepared request | nil,
-- validation error; `raw` is a ready path+query used instead of tpl/query
local function prepare(wx, method, tpl, opts, raw)
  local st = state[wx]
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then usage("expected a table of options, got " .. type(opts)) end
  local vars = check_options(method, tpl, opts)
  local strings = not raw and next(vars) == nil and fixed_strings(st, tpl) or nil
  local path = raw and raw:gsub("%?.*", "")
    or strings and strings.path or st.prefix .. "/" .. chain.expand(tpl, opts)
  local target = raw or path
  local query -- the query as the server reads it, for validation
  if opts.query ~= nil then
    local q
    q, query = chain.query(opts.query)
    if q ~= "" then target = path .. "?" .. q end
  end
  local in_path -- a query written into the path
  if strings then in_path = strings.queried else in_path = not raw and tpl:find("?", 1, true) end
  if in_path then
    query = decode_query(target:match("%?(.*)$"))
  end
  local n = (opts.json ~= nil and 1 or 0) + (opts.body ~= nil and 1 or 0) + (opts.file ~= nil and 1 or 0)
  if n > 1 then usage("options 'json', 'body' and 'file' exclude each other") end
  local template = strings and strings.template or "/" .. tpl
  -- the endpoint, looked up once: for the validator and the hooks
  local endpoint = require("wechatpay.favor.schema").lookup(method, raw and path or template)
  -- whether the body is still to be validated (the validate hook, below)
  local validating = endpoint and opts.validate ~= false and opts.file == nil and not raw
  local body, signed, ctype, upload_meta, upload_filename, upload_type
  if opts.json ~= nil then
    if type(opts.json) ~= "table" then usage("option 'json' must be a table") end
    -- the default validator passes the common body and writes its text in
    -- the same walk; else the body is encoded, and validated below
    local s = validating and M.hooks.validate == validate and body_text(endpoint, opts.json, query)
    if s then
      validating = false
    else
      local ok
      ok, s = pcall(json.encode, opts.json)
      if not ok and qos.is_interrupt(s) then error(s, 0) end -- a Ctrl-C, not a bad option
      if not ok then usage("option 'json': " .. tostring(s):gsub("^.-json: ", "")) end
    end
    body, signed, ctype = s, s, "application/json"
  elseif opts.body ~= nil then
    if type(opts.body) ~= "string" then usage("option 'body' must be a string") end
    body, signed, ctype = opts.body, opts.body, "application/json"
  elseif opts.file ~= nil then
    if type(opts.file) ~= "string" then usage("option 'file' must be a path string") end
    local data = read_file(opts.file)
    local filename = opts.filename or multipart.basename(opts.file)
    if type(filename) ~= "string" then usage("option 'filename' must be a string") end
    upload_filename = filename
    if not utf8.len(filename) then
      usage(opts.filename and "option 'filename' is not valid UTF-8"
        or "option 'file': the file's name is not valid UTF-8 (give option 'filename')")
    end
    local crypto = require("quan.crypto")
    upload_meta = multipart.meta(filename, crypto.sha256(data))
    upload_type = opts.content_type or multipart.content_type(filename)
    body, ctype = multipart.build {
      boundary = "quan-" .. crypto.nonce(24), meta = upload_meta, filename = filename,
      data = data, content_type = upload_type,
    }
    signed = upload_meta
  else
    body, signed, ctype = nil, "", "application/json"
  end
  if opts.timeout ~= nil and not seconds(opts.timeout) then
    usage("option 'timeout' must be a positive, finite number of seconds (got " .. tostring(opts.timeout) .. ")")
  end
  if opts.validate ~= nil and type(opts.validate) ~= "boolean" then usage("option 'validate' must be a boolean") end
  local headers, index
  if opts.headers == nil then
    -- the common case: the four fixed lines, as add_header would write them
    local fixed = st.fixed
    if fixed == nil then
      fixed = { ua_line = "User-Agent: " .. user_agent(),
        serial_line = st.accept and ("Wechatpay-Serial: " .. st.accept) } -- none: empty certs
      st.fixed = fixed
    end
    headers = { "Accept: application/json",
      ctype == "application/json" and "Content-Type: application/json" or "Content-Type: " .. ctype,
      fixed.ua_line, fixed.serial_line, nil } -- room for the Authorization line: no resize
  else
    if type(opts.headers) ~= "table" then usage("option 'headers' must be a table") end
    headers, index = {}, {}
    add_header(headers, index, "Accept", "application/json")
    add_header(headers, index, "Content-Type", ctype)
    add_header(headers, index, "User-Agent", user_agent())
    if st.accept then add_header(headers, index, "Wechatpay-Serial", st.accept) end
    local given = opts.headers
    local lines = #given
    local names = {}
    for k in pairs(given) do
      if type(k) == "string" then
        names[#names + 1] = k
      elseif math.type(k) ~= "integer" or k < 1 or k > lines then
        usage("option 'headers': key " .. printable(tostring(k)) .. " is neither a header name nor a line 1.." .. lines)
      end
    end
    table.sort(names)
    for _, k in ipairs(names) do
      local v = given[k]
      if type(v) == "number" then
        if v ~= v or v == math.huge or v == -math.huge then usage("header '" .. printable(k) .. "' must be a string or a finite number") end
        v = math.type(v) == "integer" and ("%d"):format(v) or tostring(math.tointeger(v) or v)
      elseif type(v) ~= "string" then
        usage("header '" .. printable(k) .. "' must be a string")
      end
      add_header(headers, index, check_header(k, v), v)
    end
    for i = 1, lines do
      local line = given[i]
      if type(line) ~= "string" then usage(("option 'headers': line %d must be a string 'Name: value'"):format(i)) end
      local k, v = line:match("^([^:]*):[ \t]*(.*)$")
      if not k then usage("header '" .. printable(line) .. "' is not 'Name: value'") end
      k = k:gsub("[ \t]+$", "")
      add_header(headers, index, check_header(k, v), v)
    end
  end
  local plain = strings and target == path -- no query: the strings made once serve
  local ctx = plain and strings[method]
  if not ctx then
    ctx = context(method, target)
    if plain then strings[method] = ctx end
  end
  local unsigned -- whether the answers go unverified (nil: finish asks verify.skip)
  if plain then unsigned = strings.unsigned end
  local policy = opts.retry ~= nil and retry_policy(method, tpl, opts) or nil
  if validating then
    local verr = validation(endpoint, opts.json, query or NO_QUERY, ctx)
    if verr then return nil, verr end
  end
  local message, auth = signature(wx, method, target, signed)
  -- opts.headers may not name Authorization: it is always a new last line
  headers[#headers + 1] = "Authorization: " .. auth
  return {
    method = method, url = plain and strings.url or st.origin .. target, path = target, target = target,
    template = template, headers = headers, body = body or "", string_to_sign = message,
    endpoint = endpoint, json = opts.json, upload_meta = upload_meta,
    upload = upload_meta and { file = opts.file, filename = upload_filename, content_type = upload_type },
    timeout = opts.timeout or st.timeout, context = ctx, ca_file = st.ca_file, proxy = st.proxy,
    retry = policy, unsigned = unsigned,
  }
end

-- resigned(wx, p) -> a copy of the prepared request p signed anew: a new
-- timestamp and nonce over the same method, target and body
local function resigned(wx, p)
  local q = {}
  for k, v in pairs(p) do q[k] = v end
  local message, auth = signature(wx, p.method, p.target, p.upload_meta or p.body)
  local headers = {}
  for i = 1, #p.headers - 1 do headers[i] = p.headers[i] end -- Authorization is the last line
  headers[#headers + 1] = "Authorization: " .. auth
  q.headers, q.string_to_sign = headers, message
  return q
end

local header = verify.header -- any spelling of the name

-- request_id(h) -> the Request-ID header (quan.http keys are lower case;
-- a before_send hook's fake response may use any case)
local function request_id_of(h)
  local v = h["request-id"]
  if type(v) ~= "string" then v = header(h, "Request-ID") end -- nil when not one string
  return v
end

-- result(res, request_id) -> result table, and the decoder's message when
-- a body is there that does not decode; a body of JSON null leaves r.json
-- nil (cjson.null is a userdata: res.json.x would raise in the caller's code)
local function result(res, request_id)
  local r = {
    status = res.status, headers = res.headers or {}, body = res.body or "",
    request_id = request_id, json = nil, -- room for json: no resize when it comes
  }
  local body = r.body
  if body ~= "" then
    local v, why = json.decode(body)
    if v == nil then return r, why or "not JSON" end
    if v ~= json.null then r.json = v end
  end
  return r
end

-- finish(wx, p, res, check) -> result | nil, err
local function finish(wx, p, res, check)
  local h = res.headers or {}
  local request_id = request_id_of(h)
  local status = res.status
  if type(status) ~= "number" then
    return nil, errors.new { kind = "http", code = "bad_response", message = p.context .. ": response without a status" }
  end
  if status >= 200 and status < 300 then
    local file = p.unsigned
    if file == nil then file = verify.skip(p.path) end
    if check and not file and not p.unchecked then
      local ok, code, why = verify.check(h, res.body or "", state[wx].keys, qos.time())
      if not ok and code == "unknown_serial" and next(state[wx].keys) == nil then
        why = why .. " (certs is empty: get the platform certificates with wx:certificates())"
      end
      if not ok then
        return nil, errors.new {
          kind = "verify", status = status, code = code, request_id = request_id,
          message = p.context .. ": verify: " .. why,
        }
      end
    end
    if p.output and res.output == nil then
      -- a hook's answer (a dry run) to a download that goes to a file
      local f, ferr = io.open(p.output, "wb")
      if not f then
        return nil, errors.new { kind = "network", code = "io", message = p.context .. ": cannot write " .. tostring(ferr) }
      end
      f:write(res.body or "")
      f:close()
      res = {status = res.status, headers = res.headers, body = "", output = p.output, size = #(res.body or "")}
    end
    local r, undecoded = result(res, request_id)
    r.path, r.size = rawget(res, "output"), rawget(res, "size") -- fields quan.http sets (its __index makes header_list)
    -- an answer that says JSON (or says nothing) must decode: a caller never
    -- gets a success whose res.json is silently missing
    local ctype = header(h, "Content-Type")
    if not file and undecoded and (ctype == nil or ctype:lower():find("json", 1, true)) then
      return nil, errors.new {
        kind = "http", status = status, code = "bad_json", request_id = request_id,
        message = p.context .. ": answer is not valid JSON: " .. undecoded, body = r.body, headers = r.headers,
      }
    end
    return r
  end
  local r = result(res, request_id)
  local j = type(r.json) == "table" and r.json or {}
  local code = type(j.code) == "string" and j.code or ("HTTP_" .. status)
  local text = type(j.message) == "string" and j.message or (r.body ~= "" and r.body:sub(1, 200)) or "no body"
  text = text:gsub("%s+", " ") -- one line, even for an HTML error page of a proxy
  return nil, errors.new {
    kind = "http", status = status, code = code, message = p.context .. ": " .. code .. ": " .. text,
    detail = j.detail, request_id = request_id, retryable = errors.retryable_status(status),
    body = r.body, headers = r.headers,
  }
end

-- what each result and error of a request came from, for a copy as curl:
-- result or error -> { wx, p } (p: the prepared request) or, for a request
-- the validator refused (never signed), { wx, nil, method, tpl, opts }
local origins = setmetatable({}, { __mode = "k" })

-- transfer(st, p) -> quan.http's result for the prepared request p; never
-- resent by libcurl (a resend would carry the same signature and nonce)
local function transfer(st, p)
  return require("quan.async").request {
    method = p.method, url = p.url, headers = p.headers, body = p.body, resend = false,
    timeout = p.timeout, cafile = st.ca_file, proxy = st.proxy, max_response = p.max_response, output = p.output,
  }
end

-- bodiless(p) -> whether quan.http sends p without a body (docs/http.md)
local function bodiless(p)
  local m = p.method
  return p.body == "" and m ~= "POST" and m ~= "PUT" and m ~= "PATCH"
end

-- send(wx, p) -> result | nil, err   (yields inside a quan.async task)
local function send(wx, p)
  local st = state[wx]
  local hook = M.hooks.before_send
  if hook ~= nil then
    local fake = hook(p)
    if type(fake) == "table" then return finish(wx, p, fake, false) end
  end
  local verbose = st.verbose
  if verbose then trace.request(p) end
  local t0 = verbose and qos.now()
  local res, msg, code = transfer(st, p)
  if not res and code == "recv" and bodiless(p) then
    -- the connection closed without an answer (a kept-alive one the server
    -- had closed, usually): a request without a body goes once more, signed
    -- anew, where libcurl would have resent the same nonce
    p = resigned(wx, p)
    res, msg, code = transfer(st, p)
  end
  if not res then
    local err = errors.new {
      kind = "network", code = code or "other", retryable = true,
      message = p.context .. ": " .. tostring(msg):gsub("^%u+ https?://%S+: ", ""),
    }
    if st.verbose then trace.failure(p, err) end
    return nil, err
  end
  if verbose then trace.response(p, res, qos.now() - t0) end
  local r, err = finish(wx, p, res, true)
  if not r and st.verbose and err.kind == "verify" then trace.failure(p, err) end
  return r, err
end

-- perform(wx, p) -> result | nil, err   (yields inside a quan.async task)
local function perform(wx, p)
  local r, err = send(wx, p)
  origins[r or err] = { wx, p }
  return r, err
end

-- prepared(level, wx, method, tpl, opts) -> prepare's results; a usage
-- error re-raised as errors.call would (the context string is built only
-- on that path)
local function prepared(level, wx, method, tpl, opts)
  local ok, p, err = pcall(prepare, wx, method, tpl, opts)
  if ok then
    if not p then origins[err] = { wx, nil, method, tpl, opts } end
    return p, err
  end
  errors.call(level + 1, context(method, "/" .. tpl) .. ": ", error, p, 0)
end

-- attempts(wx, p) -> result | nil, err: perform(p), and with option
-- 'retry' again after a retryable failure (network, 429, 5xx), signed anew
-- each time (a fresh nonce and timestamp), after the policy's backoff (a
-- quan.async sleep: it yields inside a task). The result or error then
-- carries `attempts`, the tries made.
local function attempts(wx, p)
  local policy = p.retry
  if not policy then return perform(wx, p) end
  local failed = 0
  while true do
    local r, err = perform(wx, p)
    if r then
      r.attempts = failed + 1
      return r
    end
    failed = failed + 1
    local wait = require("wechatpay.retry").retryable(err) and policy:delay(failed, err.code)
    if not wait then
      err.attempts = failed
      return nil, err
    end
    require("quan.async").sleep(wait)
    p = resigned(wx, p)
  end
end

-- run(wx, method, tpl, opts, level) -> result | nil, err
local function run(wx, method, tpl, opts, level)
  local p, err = prepared(level + 1, wx, method, tpl, opts)
  if not p then return nil, err end
  return attempts(wx, p)
end

-- promise(...) -> a quan.async task (a promise) settled with the result, or
-- rejected with the error table
local function promise(wx, method, tpl, opts, level)
  local p, err = prepared(level + 1, wx, method, tpl, opts)
  local async = require("quan.async")
  if not p then return async.rejected(err) end
  return async.spawn(function()
    local r, e = attempts(wx, p)
    if not r then error(e, 0) end
    return r
  end)
end

for name, method in pairs(VERBS) do
  verb_fns[name] = function(n, opts)
    if getmetatable(n) ~= Node then error(name .. ": call it with ':' (node:" .. name .. "{...})", 2) end
    local r, e = run(rawget(n, CLIENT), method, template(n), opts, 2)
    return r, e -- not a tail call: error levels count this frame
  end
  verb_fns[name .. "Async"] = function(n, opts)
    if getmetatable(n) ~= Node then error(name .. "Async: call it with ':' (node:" .. name .. "Async{...})", 2) end
    local p = promise(rawget(n, CLIENT), method, template(n), opts, 2)
    return p
  end
end

-- wx:request(method, path, opts) -> result | nil, err
function Client.request(wx, method, path, opts)
  if getmetatable(wx) ~= Client then error("request: call it with ':' (wx:request(...))", 2) end
  if type(method) ~= "string" or not VERBS[method:lower()] then
    error("request: bad method '" .. tostring(method) .. "'", 2)
  end
  if type(path) ~= "string" then error("request: expected a path string", 2) end
  local segs = chain.split(path)
  local why = misspelt(segs, path)
  if why then error("request: " .. why, 2) end
  local r, e = run(wx, method:upper(), table.concat(segs, "/"), opts, 2)
  return r, e
end

-- wx:download(url[, opts]) -> result | nil, err: a signed GET of a download
-- URL (use-flow / refund-flow files) on the same host; answers are not
-- verified. opts.path: the file goes there as it arrives (result.path,
-- result.size; result.body is empty); opts.timeout: seconds.
local DOWNLOAD_OPTIONS = { path = true, timeout = true }

function Client.download(wx, url, opts)
  if getmetatable(wx) ~= Client then error("download: call it with ':' (wx:download(url))", 2) end
  if type(url) ~= "string" then error("download: expected a URL string", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("download: opts must be a table", 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if not DOWNLOAD_OPTIONS[k] then error("download: unknown option '" .. tostring(k) .. "'", 2) end
  end
  if opts.path ~= nil and (type(opts.path) ~= "string" or opts.path == "") then
    error("download: opts.path must be a file path", 2)
  end
  if opts.timeout ~= nil and not (type(opts.timeout) == "number" and opts.timeout > 0 and opts.timeout < math.huge) then
    error("download: opts.timeout must be a positive, finite number of seconds", 2)
  end
  local target = url
  if url:find("^https://") then
    if url:sub(1, #wx.base_url + 1) ~= wx.base_url .. "/" then
      error("download: URL is not on " .. wx.base_url, 2)
    end
    target = url:sub(#state[wx].origin + 1)
  end
  if target:sub(1, 1) ~= "/" then error("download: expected an https:// URL or an absolute path", 2) end
  local p = errors.call(2, "GET " .. target .. ": ", prepare, wx, "GET", "", nil, target)
  p.unsigned = true
  p.max_response = M.DOWNLOAD_LIMIT -- a flow file (1 GiB), not an API answer (quan.http's 64 MiB)
  p.output, p.timeout = opts.path, opts.timeout or p.timeout
  local r, err = perform(wx, p)
  return r, err
end

-- wx:flow(kind, stock_id[, opts]) -> flow | nil, err: a stock's use-flow
-- or refund-flow file (kind "use-flow" | "refund-flow"): the signed GET of
-- its link (url, hash_value, hash_type), the file downloaded to opts.path
-- (default a temporary file, removed by flow:close()) as it arrives, then
-- opened by wechatpay.flow: its SHA1 checked against hash_value (a
-- mismatch is a verify error, hash_mismatch) and every line read. The
-- flow's rows() reads the rows, typed. opts.timeout: seconds, per request.
local FLOW_KINDS = { ["use-flow"] = true, ["refund-flow"] = true }
local FLOW_OPTIONS = { path = true, timeout = true }

function Client.flow(wx, kind, stock_id, opts)
  if getmetatable(wx) ~= Client then error("flow: call it with ':' (wx:flow(kind, stock_id))", 2) end
  if not FLOW_KINDS[kind] then error("flow: kind must be \"use-flow\" or \"refund-flow\", got " .. tostring(kind), 2) end
  if type(stock_id) ~= "string" or stock_id == "" then error("flow: expected a stock_id (a string)", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("flow: opts must be a table", 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if not FLOW_OPTIONS[k] then error("flow: unknown option '" .. tostring(k) .. "'", 2) end
  end
  if opts.path ~= nil and (type(opts.path) ~= "string" or opts.path == "") then error("flow: opts.path must be a file path", 2) end
  local res, err = run(wx, "GET", "v3/marketing/favor/stocks/{stock_id}/" .. kind,
    { stock_id = stock_id, timeout = opts.timeout }, 2)
  if not res then return nil, err end
  local link = res.json
  if type(link) ~= "table" or type(link.url) ~= "string" or type(link.hash_value) ~= "string" then
    return nil, errors.new { kind = "http", status = res.status, code = "bad_answer", request_id = res.request_id,
      message = "GET /v3/marketing/favor/stocks/" .. stock_id .. "/" .. kind .. ": the answer has no url and hash_value",
      body = res.body, headers = res.headers }
  end
  local path, temporary = opts.path, false
  if not path then path, temporary = os.tmpname(), true end
  local got
  got, err = Client.download(wx, link.url, { path = path, timeout = opts.timeout })
  local f
  if got then f, err = require("wechatpay.flow").open(path, link.hash_value, type(link.hash_type) == "string" and link.hash_type or nil) end
  if not f then
    if temporary then os.remove(path) end
    return nil, err
  end
  f.kind, f.stock_id, f.url, f.hash_value, f.temporary = kind, stock_id, link.url, link.hash_value, temporary
  return f
end

-- wx:decrypt{ciphertext=, nonce=, associated_data=} -> plaintext | nil, err
-- (AEAD_AES_256_GCM with the APIv3 key: notification resources); err is a
-- verify error, code "decrypt" (a wrong APIv3 key, or altered data)
function Client.decrypt(wx, resource)
  if getmetatable(wx) ~= Client then error("decrypt: call it with ':' (wx:decrypt{...})", 2) end
  if type(resource) ~= "table" or type(resource.ciphertext) ~= "string" or type(resource.nonce) ~= "string" then
    error("decrypt: expected {ciphertext=, nonce=, associated_data=}", 2)
  end
  local key = state[wx].apiv3
  if not key then error("decrypt: the client has no apiv3_key", 2) end
  local plain, why = require("quan.crypto").aes_gcm_decrypt(key, resource.nonce, resource.associated_data or "",
    resource.ciphertext)
  if not plain then
    return nil, errors.new { kind = "verify", code = "decrypt",
      message = "decrypt: the resource does not decrypt with the APIv3 key (a wrong apiv3_key, or altered data): "
        .. tostring(why) }
  end
  return plain
end

-- open(key, r) -> plaintext | nil, code, why: an AEAD_AES_256_GCM resource
-- ({algorithm, ciphertext, nonce, associated_data}) of a notification or a
-- certificate, decrypted with the APIv3 key
local function open(key, r, what)
  if type(r) ~= "table" or type(r.ciphertext) ~= "string" or type(r.nonce) ~= "string" or r.nonce == ""
    or #r.nonce > 128 or (r.associated_data ~= nil and type(r.associated_data) ~= "string") then
    return nil, "bad_resource", what .. " lacks a ciphertext, a nonce or a string associated_data"
  end
  if r.algorithm ~= "AEAD_AES_256_GCM" then
    return nil, "algorithm", what .. ".algorithm is " .. tostring(r.algorithm) .. ", expected AEAD_AES_256_GCM"
  end
  local plain, derr = require("quan.crypto").aes_gcm_decrypt(key, r.nonce, r.associated_data or "", r.ciphertext)
  if not plain then
    return nil, "decrypt", what .. " does not decrypt with the APIv3 key (a wrong apiv3_key, or altered data): "
      .. tostring(derr)
  end
  return plain
end

-- wx:notification(headers, body[, opts]) -> event | nil, err: a
-- notification WeChat Pay POSTed to the merchant's notify_url, verified as
-- an answer is (the four Wechatpay-* headers, a known serial, the timestamp
-- window, the signature over the exact body) and its resource decrypted
-- with the APIv3 key. event is the decoded body with event.data = the
-- decrypted resource (a table) and event.request_id.
-- opts: now (epoch seconds), max_skew (seconds, default 300; false: none).
local NOTIFICATION_OPTIONS = { now = true, max_skew = true }

function Client.notification(wx, headers, body, opts)
  if getmetatable(wx) ~= Client then error("notification: call it with ':' (wx:notification(headers, body))", 2) end
  if type(headers) ~= "table" then error("notification: expected the request's headers (a table)", 2) end
  if type(body) ~= "string" then error("notification: expected the request's raw body (a string)", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("notification: opts must be a table", 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if not NOTIFICATION_OPTIONS[k] then error("notification: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local skew = opts.max_skew
  if skew ~= nil and skew ~= false and not (type(skew) == "number" and skew >= 0) then
    error("notification: opts.max_skew must be seconds (>= 0) or false", 2)
  end
  local now = opts.now
  if now ~= nil and not (type(now) == "number" and now == now and now > -math.huge and now < math.huge) then
    error("notification: opts.now must be epoch seconds (a finite number)", 2)
  end
  local key = state[wx].apiv3
  if not key then error("notification: the client has no apiv3_key (it decrypts notifications)", 2) end
  local request_id = request_id_of(headers)
  local function fail(code, why)
    return nil, errors.new { kind = "verify", code = code, request_id = request_id, message = "notification: " .. why }
  end
  local stype, bad = header(headers, "Wechatpay-Signature-Type")
  if bad then return fail("bad_header", bad) end
  if stype ~= nil and stype ~= sign.SCHEME then
    return fail("signature_type", "unsupported Wechatpay-Signature-Type " .. stype)
  end
  local ok, code, why = verify.check(headers, body, state[wx].keys, now or require("quan.os").time(), skew)
  if not ok then return fail(code, (why:gsub("^response ", ""))) end
  local event = json.decode(body)
  if type(event) ~= "table" or event[1] ~= nil then return fail("bad_json", "the body is not a JSON object") end
  local plain
  plain, code, why = open(key, event.resource, "resource")
  if not plain then return fail(code, why) end
  local data = json.decode(plain)
  if type(data) ~= "table" or data[1] ~= nil then return fail("bad_plaintext", "the decrypted resource is not a JSON object") end
  event.data, event.request_id = data, request_id
  return event
end

-- wx:certificates() -> list | nil, err: WeChat Pay's platform certificates
-- (GET /v3/certificates), each {serial_no, effective_time, expire_time, pem,
-- certificate = a quan.crypto cert}, decrypted with the APIv3 key; the times
-- are the certificate's own. An answer signed under a serial the client
-- knows is verified first, with that key; one signed under a serial it does
-- not know yet, after decryption, with the certificate of that serial it
-- carries: how a merchant gets its first certificate, or the next one (PHP's
-- and Node's downloaders check it so too). A carried certificate never
-- stands in for a key the client holds.
function Client.certificates(wx)
  if getmetatable(wx) ~= Client then error("certificates: call it with ':' (wx:certificates())", 2) end
  local st = state[wx]
  if not st.apiv3 then error("certificates: the client has no apiv3_key (it decrypts the certificates)", 2) end
  local p = errors.call(2, "GET /v3/certificates: ", prepare, wx, "GET", "v3/certificates", nil)
  p.unchecked = true -- verified below: the signer may be among the certificates
  local res, err = perform(wx, p)
  if not res then return nil, err end
  local function fail(code, why)
    return nil, errors.new { kind = "verify", status = res.status, code = code, request_id = res.request_id,
      message = p.context .. ": " .. why }
  end
  local now = require("quan.os").time()
  local signer, bad = verify.header(res.headers, "Wechatpay-Serial")
  if bad then return fail("bad_header", "verify: response " .. bad) end
  local known = signer and verify.lookup(st.keys, signer)
  if known then -- the usual case: check the answer before reading it
    local ok, code, why = verify.check(res.headers, res.body, st.keys, now)
    if not ok then return fail(code, "verify: " .. why) end
  end
  local data = type(res.json) == "table" and res.json.data
  if type(data) ~= "table" or data[1] == nil then return fail("bad_json", "the answer has no certificates (data)") end
  local crypto, beijing = require("quan.crypto"), require("quan.time").beijing
  local list, carried, seen = {}, {}, {}
  for i, e in ipairs(data) do
    local where = ("data[%d]"):format(i)
    if type(e) ~= "table" or type(e.serial_no) ~= "string" or not e.serial_no:find("^%x+$") then
      return fail("bad_resource", where .. " has no hex serial_no")
    end
    local serial = e.serial_no:upper()
    if seen[serial] then return fail("bad_resource", where .. ": serial_no " .. serial .. " appears twice") end
    seen[serial] = true
    if serial_eq(serial, wx.serial) then
      return fail("bad_resource", where .. ": serial_no " .. serial .. " is the merchant's own certificate")
    end
    local pem, code, why = open(st.apiv3, e.encrypt_certificate, where .. ".encrypt_certificate")
    if not pem then return fail(code, why) end
    local cert = pem:find("^%s*%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-") and crypto.certificate(pem)
    if not cert then return fail("bad_plaintext", where .. " does not decrypt to a PEM certificate") end
    if not serial_eq(cert:serial(), serial) then
      return fail("bad_plaintext", ("%s: the certificate's serial is %s, not serial_no %s"):format(where, cert:serial(), serial))
    end
    local mine = verify.lookup(st.keys, serial)
    if mine and mine:pem_public() ~= cert:public_key():pem_public() then
      return fail("bad_plaintext", where .. ": certificate " .. serial .. " differs from the one in certs")
    end
    list[i] = { serial_no = serial, effective_time = beijing(cert:not_before()), expire_time = beijing(cert:not_after()),
      pem = pem, certificate = cert }
    carried[serial] = cert:public_key()
  end
  if not known then -- bootstrap: signed under a certificate it carries, or refused
    local ok, code, why = verify.check(res.headers, res.body, carried, now)
    if not ok then return fail(code, "verify: " .. why) end
  end
  return list
end

---------------------------------------------------------------------------
-- paging: node:each{...} walks every page of a list endpoint

-- Pager: the walk of one list endpoint (docs/client.md, "Paging"); a
-- callable object, so `for row in node:each{...} do` reads each row
local Pager = {}
Pager.__index = Pager
Pager.__name = "wechatpay.pager"

-- integer(v) -> v as an integer (an integral number or a decimal string),
-- or nil
local function integer(v)
  if type(v) == "string" and v:find("^%d+$") then v = tonumber(v) end
  return math.type(v) == "integer" and v or (type(v) == "number" and math.tointeger(v)) or nil
end

-- node:each([opts]) -> pager: the options of a GET (query, headers,
-- timeout, path variables, ...) plus `paging` ("page" or "item": how the
-- endpoint counts its offset, for an endpoint the schema does not know).
-- query.offset is the first page (0), query.limit the page size (the
-- schema's, else 10). Each page is a GET with the same options (all of
-- them, whatever the client's verbs take), made when the walk reaches it.
function node_methods.each(n, opts)
  if getmetatable(n) ~= Node then error("each: call it with ':' (node:each{...})", 2) end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then error("each: expected a table of options, got " .. type(opts), 2) end
  local wx, tpl = rawget(n, CLIENT), template(n)
  local ctx = "each GET /" .. tpl .. ": "
  errors.call(2, ctx, check_options, "GET", tpl, opts, { paging = true })
  local ep = require("wechatpay.favor.schema").lookup("GET", "/" .. tpl)
  local paging = ep and ep.paging
  local how = opts.paging or (paging and paging.offset)
  if how == nil then
    error(ctx .. "not a list endpoint of the schema; say how it pages: paging = \"page\" (offset counts pages) "
      .. "or \"item\" (offset counts rows)", 2)
  end
  if how ~= "page" and how ~= "item" then
    error(ctx .. "option 'paging' must be \"page\" or \"item\", got " .. tostring(how), 2)
  end
  local query = opts.query or {}
  if type(query) ~= "table" then error(ctx .. "option 'query' must be a table", 2) end
  local offset, limit = integer(query.offset or 0), integer(query.limit or (paging and paging.limit) or 10)
  if not offset or offset < 0 then error(ctx .. "query 'offset' must be an integer >= 0, got " .. tostring(query.offset), 2) end
  if not limit or limit < 1 then error(ctx .. "query 'limit' must be an integer >= 1, got " .. tostring(query.limit), 2) end
  local base = {}
  for k, v in pairs(opts) do if k ~= "paging" then base[k] = v end end
  local max_offset
  if ep and ep.query then
    for _, f in ipairs(ep.query.fields) do if f.name == "offset" then max_offset = f.max end end
  end
  return setmetatable({
    client = wx, template = tpl, endpoint = ep, paging = how, limit = limit, offset = offset,
    max_offset = max_offset, options = base, pages = 0, count = 0,
    rows = nil, at = 0, done = false,
  }, Pager)
end
Node.each = node_methods.each

-- fetch(pager) -> true | nil, err: the next page into pager.rows
local function fetch(self)
  local q = {}
  for k, v in pairs(self.options.query or {}) do q[k] = v end
  q.offset, q.limit = self.offset, self.limit
  local opts = {}
  for k, v in pairs(self.options) do opts[k] = v end
  opts.query = q
  local r, err = run(self.client, "GET", self.template, opts, 3)
  if not r then
    self.error = err
    return nil, err
  end
  local body = type(r.json) == "table" and r.json or {}
  local data = type(body.data) == "table" and body.data or {}
  local n = #data
  self.pages, self.last = self.pages + 1, r
  if self.pages == 1 then self.first = r end
  self.total_count = integer(body.total_count) or self.total_count
  self.rows, self.at = data, 0
  local seen = (self.paging == "page" and (self.offset + 1) * self.limit) or (self.offset + n)
  -- the end: an empty or short page, every row counted, or an answer that
  -- is not paged (more rows than asked for: list coupons by available_mchid)
  if n == 0 or n < self.limit or n > self.limit or (self.total_count and seen >= self.total_count) then
    self.done = true
  end
  self.offset = self.paging == "page" and self.offset + 1 or self.offset + n
  if not self.done and self.max_offset and self.offset > self.max_offset then
    self.done, self.truncated = true, true
  end
  return true
end

-- pager:peek() -> the answer of the first page (fetched now if it was not
-- yet) | nil, err
function Pager.peek(self)
  if self.first == nil and self.pages == 0 then
    local ok, err = fetch(self)
    if not ok then return nil, err end
  end
  return self.first
end

-- pager() -> the next row and its number (1, 2, ...), fetching the next page
-- when needed; nil at the end. A page that fails raises its error table, so
-- a loop never ends early in silence (pager:all() returns it instead)
function Pager.__call(self)
  while true do
    if self.rows and self.at < #self.rows then
      self.at = self.at + 1
      self.count = self.count + 1
      return self.rows[self.at], self.count
    end
    if self.done then
      if self.truncated then
        error(("each GET /%s: the API pages no further than offset %d; %d rows read of %s"):format(
          self.template, self.max_offset, self.count, tostring(self.total_count)), 2)
      end
      return nil
    end
    local ok, err = fetch(self)
    if not ok then error(err, 0) end
  end
end

-- pager:all() -> array of every row left | nil, err
function Pager.all(self)
  local list = {}
  local ok, err = pcall(function()
    for row in self do list[#list + 1] = row end
  end)
  if not ok then
    if errors.is(err) then return nil, err end
    error(err, 0)
  end
  return list
end

function Pager.__tostring(self)
  local what = "wechatpay.pager GET /" .. self.template
  if self.total_count then
    return ("%s (%d rows, %d read)"):format(what, self.total_count, self.count)
  end
  return what .. " (no page read yet)"
end

M.Pager = Pager

---------------------------------------------------------------------------
-- copy as curl

-- copy(wx, p) -> a shell command that sends p again, signed anew
local function copy(wx, p)
  return require("wechatpay.curl").command(resigned(wx, p))
end

-- copy_of(x) -> the command for the request a result or an error table
-- came from, signed anew | nil, why
local function copy_of(x)
  local o = origins[x]
  if not o then return nil, "not the result or the error of a request of this process" end
  local wx, p = o[1], o[2]
  if p then return copy(wx, p) end
  -- a request the validator refused: prepared again, as it would be sent
  -- with validate = false
  local opts = {}
  for k, v in pairs(o[5] or {}) do opts[k] = v end
  opts.validate = false
  local ok, q = pcall(prepare, wx, o[3], o[4], opts)
  if not ok then return nil, type(q) == "table" and q.message or tostring(q) end
  return require("wechatpay.curl").command(q)
end
M.copy_of = copy_of

-- curl_of(level, wx, method, tpl, opts) -> the command of a request, signed
-- now, without sending it | nil, validation error
local function curl_of(level, wx, method, tpl, opts)
  local p, err = prepared(level + 1, wx, method, tpl, opts)
  if not p then return nil, err end
  return require("wechatpay.curl").command(p)
end

-- node:curl(verb[, opts]) -> text | nil, err: the shell command of
-- node:<verb>(opts), signed now; nothing is sent
function node_methods.curl(n, verb, opts)
  if getmetatable(n) ~= Node then error("curl: call it with ':' (node:curl(\"get\", {...}))", 2) end
  local method = type(verb) == "string" and VERBS[verb:lower()]
  if not method then error("curl: expected a verb (\"get\", \"post\", ...), got " .. tostring(verb), 2) end
  local text, err = curl_of(2, rawget(n, CLIENT), method, template(n), opts)
  return text, err
end
Node.curl = node_methods.curl

-- wx:curl(res_or_err) -> text | nil, why: the request a result or an error
-- came from, signed anew; wx:curl(method, path[, opts]) -> text | nil, err:
-- the command of wx:request(method, path, opts), nothing sent
function Client.curl(wx, x, path, opts)
  if getmetatable(wx) ~= Client then error("curl: call it with ':' (wx:curl(...))", 2) end
  if type(x) == "table" then
    local text, why = copy_of(x)
    return text, why
  end
  if type(x) ~= "string" or not VERBS[x:lower()] then
    error("curl: expected a result, an error, or a method and a path, got " .. tostring(x), 2)
  end
  if type(path) ~= "string" then error("curl: expected a path string", 2) end
  local segs = chain.split(path)
  local why = misspelt(segs, path)
  if why then error("curl: " .. why, 2) end
  local text, err = curl_of(2, wx, x:upper(), table.concat(segs, "/"), opts)
  return text, err
end

M.Client, M.Node = Client, Node
M.prepare = prepare -- for tests and `quan check`

return M
