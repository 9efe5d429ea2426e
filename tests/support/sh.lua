-- tests.support.sh: run commands from specs.
local M = {}

M.quan = os.getenv("QUAN_ABS") or "build/quan"

-- quote(s) -> s quoted for /bin/sh
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- run(cmd) -> stdout, stderr, exit code
function M.run(cmd)
  local err = os.tmpname()
  local p = assert(io.popen(cmd .. " 2>" .. err, "r"))
  local out = p:read("a")
  local _, _, code = p:close()
  local f = assert(io.open(err))
  local errout = f:read("a")
  f:close()
  os.remove(err)
  return out, errout, code
end

-- tmpdir() -> a fresh private directory under $QUAN_SPEC_TMP (tests/run
-- points it at the run's temporary home and removes that at the end), else
-- under /tmp (left behind)
function M.tmpdir()
  local base = os.getenv("QUAN_SPEC_TMP")
  if not base or base == "" then base = "/tmp" end
  local d = assert(require("quan.os").mkdtemp(base .. "/quan-spec-"))
  return d
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- interrupt(script | {command words}, ready[, signal = "INT"]) -> how, code, stdout, stderr
-- Runs quan on the script, waits (20 s at most) until the file `ready`
-- exists (the script makes it once what is to be interrupted has begun: no
-- fixed sleep), sends the signal and waits for the end: how and code as
-- quan.os.wait gives them. A process still running 5 s after the signal is
-- killed (how "signal", code 9), so a case that does not stop fails
-- instead of hanging the suite.
function M.interrupt(script, ready, signal)
  local qos = require "quan.os"
  local dir = M.tmpdir()
  local argv = type(script) == "table" and { M.quan, table.unpack(script) } or { M.quan, script } -- a command's words
  local pid = assert(qos.spawn(argv, { stdout = dir .. "/out", stderr = dir .. "/err" }))
  local deadline = qos.now() + 20
  local function exists(path)
    local f = io.open(path)
    if f then f:close() end
    return f ~= nil
  end
  while not exists(ready) and qos.now() < deadline do qos.sleep(0.05) end
  qos.kill(pid, signal or "INT")
  deadline = qos.now() + 5
  local how, code = qos.wait(pid, true)
  while not how and qos.now() < deadline do
    qos.sleep(0.05)
    how, code = qos.wait(pid, true)
  end
  if not how then
    qos.kill(pid, "KILL")
    how, code = qos.wait(pid)
  end
  return how, code, M.read(dir .. "/out"), M.read(dir .. "/err")
end

function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

return M
