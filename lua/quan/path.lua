-- quan.path: file paths as the commands take them from a user. Core layer:
-- requires only quan.os (and quan.crypto, for write's temporary names).
--
--   path.absolute(p)    -> p made absolute against the current directory
--                          (a leading "./" dropped; nothing resolved)
--   path.dir(p)         -> the folder p is in ("." for a bare name)
--   path.beside(file, p) -> p, relative to the folder of file (an absolute p as is)
--   path.read(p)        -> the file's bytes | nil, message
--   path.write(p, text [, mode]) -> true | nil, message: p holds text, whole
--                          or not at all (a temporary file beside it, then
--                          renamed over it); mode: its permission bits
--   path.unwritable(p)  -> why a file cannot be written at p (a folder, a
--                          folder that is not there) | nil: for an output
--                          option checked before a command does its work
--   path.replaceable(p) -> true | nil, message: p is not there, or is a regular
--                          file: what a command may replace by renaming a
--                          file over it, and remove (a ready file); never a
--                          device, a fifo, a socket or a folder
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

function M.read(p)
  local f, err = io.open(p, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

function M.write(p, text, mode)
  local tmp = ("%s.tmp.%d.%s"):format(p, qos.getpid(), require("quan.crypto").nonce(8)) -- writers never share one
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  ok = ok and f:close()
  if ok and mode then ok, werr = qos.chmod(tmp, mode) end
  if ok then ok, werr = os.rename(tmp, p) end
  if not ok then
    os.remove(tmp)
    return nil, werr
  end
  return true
end

function M.unwritable(p)
  local st = qos.stat(p)
  if st and st.kind == "directory" then return "is a directory" end
  local folder = M.dir(p)
  local fs = qos.stat(folder)
  if not fs or fs.kind ~= "directory" then return "no folder " .. folder .. " to write it in" end
  return nil
end

function M.replaceable(p)
  local st = qos.stat(p)
  if not st or st.kind == "file" then return true end
  return nil, ("%s is a %s, not a file: it would be replaced, then removed"):format(p,
    ({ char = "character device", block = "block device" })[st.kind] or st.kind)
end

return M
