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

function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

return M
