-- quan.serve.log: the receiver's log on stderr, one line per event: JSON
-- lines when stderr is not a terminal (journald, a log shipper, a file),
-- short "event key=value" lines on a terminal; QUAN_LOG_FORMAT (`--log-format`)
-- chooses either (docs/notifications.md, "The log").
--
--   log.format(value, tty) -> "json" | "text"
--   log.new(format[, out]) -> write(event, fields): one line, written at once
--       (the receiver's workers write from several threads)
local M = {}

local progress = require "quan.batch.progress"
local qos = require "quan.os"

-- format(value, tty) -> "json" | "text": QUAN_LOG_FORMAT's json or text,
-- else (none, or a batch's "bar") text on a terminal and JSON elsewhere
function M.format(value, tty)
  if value == "json" or value == "text" then return value end
  return tty and "text" or "json"
end

-- new(format[, out]) -> write(event, fields)
function M.new(format, out)
  if format ~= "json" and format ~= "text" then error("log.new: format must be json or text", 2) end
  out = out or io.stderr
  return function(event, fields)
    local t = {}
    for k, v in pairs(fields or {}) do t[k] = v end
    t.event = event
    local line
    if format == "json" then
      t.ts = math.floor(qos.time() * 1000) / 1000
      line = progress.json_line(t):gsub("\\/", "/") -- cjson writes "/" as "\/"; both are JSON
    else
      line = "quan serve: " .. progress.text_line(t)
    end
    out:write(line .. "\n") -- one write: lines of several threads do not mix
    out:flush()
  end
end

return M
