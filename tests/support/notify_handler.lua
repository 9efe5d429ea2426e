-- tests.support.notify_handler: a quan.server handler standing for a
-- merchant's notify_url. new(path) returns a handler that appends each
-- request it gets to the file at path, one JSON line {headers, body}, and
-- answers 200 {"code":"SUCCESS"} as WeChat Pay expects.
local M = {}

local cjson = require "cjson"

function M.new(path)
  return function(req)
    local f = assert(io.open(path, "ab"))
    f:write(cjson.encode { method = req.method, path = req.path, headers = req.headers, body = req.body }, "\n")
    f:close()
    return 200, { ["Content-Type"] = "application/json" }, '{"code":"SUCCESS"}'
  end
end

return M
