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

-- tmpdir() -> a fresh directory removed at exit of the process
function M.tmpdir()
  local d = assert(require("quan.os").mkdtemp("/tmp/quan-spec-"))
  return d
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

return M
