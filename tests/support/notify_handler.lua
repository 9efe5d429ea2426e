-- tests.support.notify_handler: a quan.server handler standing for a
-- merchant's notify_url. new(spec) returns a handler that appends each
-- request it gets to the file at the spec's path, one JSON line {headers,
-- body}, and answers 200 {"code":"SUCCESS"} as WeChat Pay expects. With a
-- spec "PATH#fail=N" it answers 500 {"code":"FAIL"} to the first N requests
-- (counted in the file, so across connections).
local M = {}

local cjson = require "cjson"

function M.new(spec)
  local path, fail = spec:match("^(.*)#fail=(%d+)$")
  path, fail = path or spec, tonumber(fail) or 0
  return function(req)
    local f = assert(io.open(path, "a+b"))
    local n = 1
    f:seek("set")
    for _ in f:lines() do n = n + 1 end
    f:seek("end")
    f:write(cjson.encode { method = req.method, path = req.path, headers = req.headers, body = req.body }, "\n")
    f:close()
    if n <= fail then return 500, { ["Content-Type"] = "application/json" }, '{"code":"FAIL","message":"not now"}' end
    return 200, { ["Content-Type"] = "application/json" }, '{"code":"SUCCESS"}'
  end
end

return M
