-- wechatpay.multipart: the body of an image upload. The meta part comes
-- first and holds {"filename":...,"sha256":...}; that same string is what
-- the request signature covers. Then the file part with its content type.
local json = require "wechatpay.json"

local M = {}

local TYPES = {
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", bmp = "image/bmp",
  gif = "image/gif", mp4 = "video/mp4",
}

-- content_type(filename) -> MIME type from the extension
function M.content_type(name)
  local ext = name:match("%.([^./]+)$")
  return ext and TYPES[ext:lower()] or "application/octet-stream"
end

-- basename(path) -> last path component
function M.basename(path)
  return path:match("([^/]+)$") or path
end

-- meta(filename, sha256_hex) -> the meta JSON, keys in a fixed order
function M.meta(filename, sha256)
  return '{"filename":' .. json.string(filename) .. ',"sha256":"' .. sha256 .. '"}'
end

-- build{meta=, filename=, data=, content_type=, boundary=} ->
--   body, "multipart/form-data; boundary=..."
function M.build(t)
  local b = t.boundary
  local filename = t.filename:gsub('["\r\n]', "_")
  local body = table.concat {
    "--", b, "\r\n",
    'Content-Disposition: form-data; name="meta"\r\n',
    "Content-Type: application/json\r\n\r\n",
    t.meta, "\r\n",
    "--", b, "\r\n",
    'Content-Disposition: form-data; name="file"; filename="', filename, '"\r\n',
    "Content-Type: ", t.content_type, "\r\n\r\n",
    t.data, "\r\n",
    "--", b, "--\r\n",
  }
  return body, "multipart/form-data; boundary=" .. b
end

return M
