-- quan.repl: the interactive loop, with lua.c's semantics: a line is first
-- tried as `return <line>`, its values printed; an incomplete chunk continues
-- on the next line; _PROMPT and _PROMPT2 are honoured.
local M = {}

local function incomplete(msg)
  return msg and msg:sub(-#"<eof>") == "<eof>"
end

-- compile(lines) -> function | nil, message, incomplete?
function M.compile(src)
  local f = load("return " .. src, "=stdin")
  if f then return f end
  local g, err = load(src, "=stdin")
  if g then return g end
  return nil, err, incomplete(err)
end

local function report(ok, ...)
  if not ok then
    io.stderr:write(tostring((...)), "\n")
  elseif select("#", ...) > 0 then
    local out = {}
    for i = 1, select("#", ...) do out[i] = tostring((select(i, ...))) end
    print(table.concat(out, "\t"))
  end
end

function M.main()
  while true do
    io.stdout:write(tostring(rawget(_G, "_PROMPT") or "> "))
    io.stdout:flush()
    local line = io.read("L")
    if not line then io.stdout:write("\n") return 0 end
    if line:sub(1, 1) == "=" then line = "return " .. line:sub(2) end
    local src = line
    local f, err, more = M.compile(src)
    while not f and more do
      io.stdout:write(tostring(rawget(_G, "_PROMPT2") or ">> "))
      io.stdout:flush()
      local next_line = io.read("L")
      if not next_line then break end
      src = src .. next_line
      f, err, more = M.compile(src)
    end
    if f then
      report(xpcall(f, debug.traceback))
    else
      io.stderr:write(err, "\n")
    end
  end
end

return M
