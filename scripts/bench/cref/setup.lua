-- scripts/bench/cref/setup.lua: what scripts/bench/cref.lua, versus.lua and
-- their spec share: the loopback server both clients talk to, the arguments
-- both clients (client.c and client.lua) take, a run and its medians.
local qos = require "quan.os"

local M = {}

-- server() -> options for wechatpay.new, the server's name, stop(): the
-- embedded sandbox, or the python stand-in of the tests when the sandbox is
-- not built in or QUAN_BENCH_SERVER=python (as scripts/bench/client.lua)
function M.server()
  local have_sandbox, sandbox = pcall(require, "quan.sandbox")
  if have_sandbox and os.getenv("QUAN_BENCH_SERVER") ~= "python" then
    local h = assert(sandbox.start {})
    return M.sandbox_options(h), "sandbox", function() h:stop() end
  end
  local fake = require("tests.support.wxfake").start()
  return fake.options(), "python stand-in", fake.stop
end

-- sandbox_options(h) -> options for wechatpay.new from a started sandbox
function M.sandbox_options(h)
  local config = require "wechatpay.config"
  local p = config.profile(config.read(h.config_path), h.profile, h.config_path)
  local options = {}
  for _, k in ipairs { "mchid", "serial", "private_key", "certs", "base_url", "ca_file" } do
    options[k] = p[k]
  end
  return options
end

-- user_agent() -> the User-Agent quan's client sends (quan.http's), which
-- the C client is told to send too: the same bytes on the wire
function M.user_agent()
  return require("quan.http").USER_AGENT
end

local function path_of(src, what)
  local path = type(src) == "string" and src:match("^file://(.+)$")
  if not path then error("cref: " .. what .. " must be a file:// path (the C client reads files)", 2) end
  return path
end

-- window() -> begin, end: a stock window from tomorrow (Beijing) for 30 days
function M.window()
  local begin = ((os.time() + 8 * 3600) // 86400 + 1) * 86400 - 8 * 3600
  local function at(t) return os.date("!%Y-%m-%dT%H:%M:%S+08:00", t + 8 * 3600) end
  return at(begin), at(begin + 30 * 86400 - 1)
end

-- argv(options[, prefix]) -> the arguments both clients take for the
-- server of options, their out_request_no starting with prefix (when not
-- given, the caller adds --prefix)
function M.argv(options, prefix)
  local t0, t1 = M.window()
  local a = {
    "--base-url", options.base_url, "--mchid", tostring(options.mchid), "--serial", options.serial,
    "--private-key", path_of(options.private_key, "private_key"),
    "--begin", t0, "--end", t1, "--user-agent", M.user_agent(),
  }
  if prefix then
    a[#a + 1] = "--prefix"
    a[#a + 1] = prefix
  end
  if options.ca_file then
    a[#a + 1] = "--ca-file"
    a[#a + 1] = options.ca_file
  end
  local names = {}
  for name in pairs(options.certs) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    a[#a + 1] = "--cert"
    a[#a + 1] = name .. "=" .. path_of(options.certs[name], "certs[" .. name .. "]")
  end
  return a
end

-- binaries() -> the command (an argv prefix) of each client: quan = the
-- running quan with client.lua, c = the cref built beside it
function M.binaries()
  local exe = qos.exe()
  local dir = exe:match("^(.*)/[^/]*$") or "."
  local here = debug.getinfo(1, "S").source:gsub("^@", ""):match("^(.*)/[^/]*$") or "."
  local cref = dir .. "/cref"
  if not qos.stat(cref) then error("cref: " .. cref .. " is missing: run `make cref`", 2) end
  return { quan = { exe, here .. "/client.lua" }, c = { cref } }
end

-- median(list), spread(list) -> the median; the least and the greatest
function M.median(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

function M.spread(list)
  return math.min(table.unpack(list)), math.max(table.unpack(list))
end

-- join(a, b, ...) -> a new array: the elements of a, then b, ...
function M.join(...)
  local out = {}
  for _, t in ipairs { ... } do
    for _, v in ipairs(t) do out[#out + 1] = v end
  end
  return out
end

-- run(argv[, dir]) -> the `name value` lines the client printed as a table,
-- the wall seconds from spawn to exit | nil, message (status and stderr)
function M.run(argv, dir)
  local own = dir == nil
  dir = dir or assert(qos.mkdtemp("/tmp/quan-cref-"))
  local out, err = dir .. "/stdout", dir .. "/stderr"
  local w0 = qos.now()
  local pid, why = qos.spawn(argv, { stdout = out, stderr = err })
  if not pid then return nil, "cannot start " .. argv[1] .. ": " .. tostring(why) end
  local how, code = qos.wait(pid)
  local wall = qos.now() - w0
  local f = io.open(out)
  local text = f and f:read("a") or ""
  if f then f:close() end
  f = io.open(err)
  local etext = f and f:read("a") or ""
  if f then f:close() end
  if own then
    os.remove(out)
    os.remove(err)
    os.remove(dir)
  end
  if how ~= "exit" or code ~= 0 then
    local name = argv[1]:match("[^/]*$") .. (argv[2] and argv[2]:find("%.lua$") and " " .. argv[2] or "")
    return nil, ("%s ended (%s %s): %s"):format(name, how, tostring(code), etext ~= "" and etext or text)
  end
  local values = {}
  for name, value in text:gmatch("([%w_]+) (%S+)\n") do values[name] = tonumber(value) or value end
  return values, wall, text
end

return M
