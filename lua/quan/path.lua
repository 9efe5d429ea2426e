-- quan.path: file paths as the commands take them from a user. Core layer:
-- requires only quan.os.
--
--   path.absolute(p)    -> p made absolute against the current directory
--                          (a leading "./" dropped; nothing resolved)
--   path.dir(p)         -> the folder p is in ("." for a bare name)
--   path.beside(file, p) -> p, relative to the folder of file (an absolute p as is)
local M = {}

local qos = require "quan.os"

function M.absolute(p)
  if p:sub(1, 1) == "/" then return p end
  return assert(qos.cwd()) .. "/" .. p:gsub("^%./", "")
end

function M.dir(p)
  return p:match("^(.*)/[^/]*$") or "."
end

function M.beside(file, p)
  if p:sub(1, 1) == "/" then return p end
  return M.dir(file) .. "/" .. p
end

return M
