-- tests.support.echo_handler: a quan.server handler for tests. new(arg)
-- returns a handler that echoes the request as JSON; paths choose special
-- answers: /drop (close without answer), /error (raises), /sleep (0.3 s),
-- /headers (array-form headers), /state (a per-thread counter).
local M = {}

local cjson = require "cjson"
local qos = require "quan.os"

function M.new(arg)
  local count = 0
  return function(req)
    count = count + 1
    if req.path == "/drop" then return "drop" end
    if req.path == "/error" then error("handler failed on purpose") end
    if req.path == "/nostatus" then return nil end
    if req.path == "/sleep" then qos.sleep(0.3) end
    if req.path == "/headers" then return 201, {"X-One: 1", "X-Two: two"}, "" end
    return 200, {["Content-Type"] = "application/json", ["X-Arg"] = arg or "none"}, cjson.encode {
      method = req.method, path = req.path, url = req.url, body = req.body, headers = req.headers,
      remote = req.remote, count = count,
    }
  end
end

return M
