-- tests.support.receiver: `quan serve` as a child process for the specs,
-- with a sandbox's profile (h.config_path), and what the specs read back.
--
--   local receiver = require "tests.support.receiver"
--   local r = receiver.start(h, {store =, handler =, listen =, args = {...}})
--   r.url, r.pid, r:log() (the JSON lines of its stderr, decoded), r:term(),
--   r:kill9(), r:wait() -> how, code
--   receiver.free_port() -> a port nothing listens on now
--   receiver.rows(store_path) -> every event row of a store, in arrival order
--   receiver.wait_until(fn, seconds, what) -> fn's value; raises after seconds
local M = {}

local qos = require "quan.os"
local sh = require "tests.support.sh"
local cjson = require "cjson.safe"
local qpath = require "quan.path"

-- a file not there (yet) reads as ""
local function read(path) return qpath.read(path) or "" end
M.read = read

-- wait_until(fn, seconds, what) -> the first true value fn returns
function M.wait_until(fn, seconds, what)
  local deadline = qos.now() + (seconds or 20)
  while true do
    local v = fn()
    if v then return v end
    if qos.now() > deadline then error("timed out waiting for " .. (what or "a condition"), 2) end
    qos.sleep(0.05)
  end
end

local Receiver = {}
Receiver.__index = Receiver

-- start(h, o) -> receiver, listening (raises when it exits first). o.store,
-- o.handler (a file), o.campaign (a file), o.listen (default 127.0.0.1:0),
-- o.args (more words), o.dir (where its files go), o.env ("NAME=value ...")
function M.start(h, o)
  o = o or {}
  local dir = o.dir or sh.tmpdir()
  local ready = dir .. "/serve.url." .. qos.getpid()
  os.remove(ready)
  local words = { sh.quan, "--config", h.config_path, "serve", "--listen", o.listen or "127.0.0.1:0", "--ready-file", ready }
  if o.store then table.move({ "--store", o.store }, 1, 2, #words + 1, words) end
  if o.handler then table.move({ "--handler", o.handler }, 1, 2, #words + 1, words) end
  for _, w in ipairs(o.args or {}) do words[#words + 1] = w end
  if o.campaign then words[#words + 1] = o.campaign end
  local quoted = {}
  for i, w in ipairs(words) do quoted[i] = sh.quote(w) end
  local self = setmetatable({ dir = dir, err_path = dir .. "/serve.err", out_path = dir .. "/serve.out" }, Receiver)
  -- sh -c: the environment of o.env, and the receiver's working directory
  self.pid = assert(qos.spawn({ "sh", "-c", "cd " .. sh.quote(o.cwd or dir) .. " && exec env " .. (o.env or "")
    .. " QUAN_LOG_FORMAT=" .. (o.log_format or "json") .. " " .. table.concat(quoted, " ") },
    { stdout = self.out_path, stderr = self.err_path }))
  local deadline = qos.now() + 30
  while true do
    local url = read(ready):match("^(%S+)\n")
    if url then
      self.url = url
      break
    end
    local how, code = qos.wait(self.pid, true)
    if how then
      self.pid = nil
      error(("receiver exited (%s %s) before it listened: %s"):format(how, tostring(code), read(self.err_path)), 2)
    end
    if qos.now() > deadline then
      self:kill9()
      error("receiver not listening after 30 s: " .. read(self.err_path), 2)
    end
    qos.sleep(0.02)
  end
  self.port = tonumber(self.url:match(":(%d+)$"))
  return self
end

-- receiver:log([event]) -> the decoded JSON lines of its stderr (of one event)
function Receiver:log(event)
  local list = {}
  for line in read(self.err_path):gmatch("[^\n]+") do
    local t = cjson.decode(line)
    if type(t) == "table" and (event == nil or t.event == event) then list[#list + 1] = t end
  end
  return list
end

-- receiver:wait([seconds]) -> how, code: waits for its exit (SIGKILL after
-- `seconds`, default 15, so that a case fails instead of hanging)
function Receiver:wait(seconds)
  if not self.pid then return self.how, self.code end
  local deadline = qos.now() + (seconds or 15)
  local how, code = qos.wait(self.pid, true)
  while not how and qos.now() < deadline do
    qos.sleep(0.02)
    how, code = qos.wait(self.pid, true)
  end
  if not how then
    qos.kill(self.pid, "KILL")
    how, code = qos.wait(self.pid)
    how = "killed after " .. (seconds or 15) .. " s"
  end
  self.pid, self.how, self.code = nil, how, code
  return how, code
end

-- receiver:term() -> how, code: SIGTERM and its exit
function Receiver:term()
  if self.pid then qos.kill(self.pid, "TERM") end
  return self:wait()
end

-- receiver:kill9(): SIGKILL, reaped
function Receiver:kill9()
  if self.pid then
    qos.kill(self.pid, "KILL")
    qos.wait(self.pid)
    self.pid, self.how, self.code = nil, "signal", 9
  end
end
Receiver.__gc = Receiver.kill9
Receiver.__close = Receiver.kill9

-- free_port() -> a loopback port nothing listened on a moment ago
function M.free_port()
  local srv = assert(require("quan.server").start { handler = "tests.support.echo_handler", workers = 1 })
  local port = srv:port()
  srv:stop()
  return port
end

-- rows(path) -> every event of the store at path, in arrival order
function M.rows(path)
  local db = assert(require("quan.sqlite").open(path))
  local list = {}
  for r in db:rows("SELECT * FROM events ORDER BY seq") do list[#list + 1] = r end
  db:close()
  return list
end

-- post(url, note[, extra_headers]) -> res | nil, err: a notification {headers, body}
-- POSTed as WeChat Pay does
function M.post(url, note, extra)
  local lines = {}
  for k, v in pairs(note.headers) do lines[#lines + 1] = k .. ": " .. v end
  for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
  lines[#lines + 1] = "Content-Type: application/json"
  return require("quan.http").request { method = "POST", url = url, headers = lines, body = note.body, timeout = 10 }
end

return M
