-- tests.support.mdexamples: the ```lua blocks of a docs page, so specs run
-- the examples the docs show.
local M = {}

-- blocks(path) -> array of {code = text, line = first line number}
function M.blocks(path)
  local f = assert(io.open(path))
  local out, cur, n = {}, nil, 0
  for line in f:lines() do
    n = n + 1
    if cur then
      if line:match("^```%s*$") then
        out[#out + 1] = cur
        cur = nil
      else
        cur.code = cur.code .. line .. "\n"
      end
    elseif line:match("^```lua%s*$") then
      cur = {code = "", line = n + 1}
    end
  end
  f:close()
  return out
end

-- run(path, i [, env]) -> results of running block i of path (raises on
-- error); env defaults to a fresh table that reads through to _G.
function M.run(path, i, env)
  local b = M.blocks(path)[i]
  assert(b, path .. ": no lua block " .. i)
  env = env or setmetatable({}, {__index = _G})
  local chunk = assert(load(b.code, "@" .. path .. ":" .. b.line, "t", env))
  return chunk()
end

return M
