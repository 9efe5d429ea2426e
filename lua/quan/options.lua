-- quan.options: the one option parser of quan's commands (their specs are
-- the entries of quan.cli's command table) and of the scripts quan runs.
-- See docs/cli.md.
--
-- A spec:
--   program     = "quan check"  names the command in messages ("quan check: ...")
--   usage       = "quan check [options] script.lua [args...]"
--                 (optional: made from program, options and arguments)
--   summary     = one line, shown under the usage
--   options     = { { "--now TIME", "what it does" [, choices = {...}]
--                     [, check = fn] [, default = v] }, ... }
--                 a placeholder after the name ("TIME") means the option takes
--                 a value (`--now X` or `--now=X`); without one it is a flag
--                 (true when given). `choices` lists the values it takes
--                 (an array, or a set: { bar = true, ... });
--                 `check(value) -> converted | nil, reason` converts and
--                 checks it ("wants a positive integer"). The result's key is
--                 the name without dashes, `-` as `_` (--ready-file: ready_file).
--   arguments   = { "STOCK_ID", "USERS.csv", "[JOURNAL]" }: "[X]" optional,
--                 "X..." or "[X...]" (last only) any number
--   passthrough = true: the words after the first argument are passed on
--                 untouched, options or not (a script's own arguments);
--                 otherwise options may come between arguments
--   footer      = text printed after the options
--   subcommands = { { name =, summary = }, ... }: listed after the footer
--                 (quan.cli runs them)
-- -h and --help are every spec's; `--` ends the options.
--
--   options.parse(spec, argv)   -> opts, arguments | nil, message, kind
--   options.usage(spec)         -> the help text: usage, summary, options
--   options.read(spec, argv)    -> opts, arguments | nil, exit status (printed)
--   options.read_or_exit(spec, argv) -> opts, arguments (or os.exit)
--   options.positive_integer, options.positive_number: `check` functions
local suggest = require "quan.suggest"

local M = {}

M.EXIT_USAGE = 2 -- every usage error of every command and script

-- option(entry) -> { name = "--now", value = "TIME"|nil, key = "now", ... }
local function option(entry)
  local flag = entry[1]
  local name, value = flag:match("^(%-%-[%w][%w%-]*)%s+(%S+)$")
  name = name or flag:match("^(%-%-[%w][%w%-]*)$")
  if not name then error("quan.options: bad option name '" .. tostring(flag) .. "'", 3) end
  return { name = name, value = value, key = name:sub(3):gsub("%-", "_"), help = entry[2] or "",
    choices = entry.choices, check = entry.check, default = entry.default }
end

-- compile(spec) -> { by_name = {...}, list = {...}, required = n, optional = n, variadic = bool }
-- (kept on the spec, which is data that lives as long as its program)
local compiled = setmetatable({}, { __mode = "k" })
local function compile(spec)
  if type(spec) ~= "table" then error("quan.options: spec must be a table", 3) end
  local c = compiled[spec]
  if c then return c end
  c = { by_name = {}, list = {}, required = 0, optional = 0, variadic = false }
  for _, entry in ipairs(spec.options or {}) do
    local o = option(entry)
    if o.choices and o.choices[1] == nil then -- a set: its keys, sorted
      local list = {}
      for choice in pairs(o.choices) do list[#list + 1] = choice end
      table.sort(list)
      o.choices = list
    end
    c.by_name[o.name] = o
    c.list[#c.list + 1] = o
  end
  for i, a in ipairs(spec.arguments or {}) do
    if a:match("%.%.%.%]?$") then
      if i ~= #spec.arguments then error("quan.options: only the last argument may repeat", 3) end
      c.variadic = true
    elseif a:match("^%[") then
      c.optional = c.optional + 1
    else
      c.required = c.required + 1
    end
  end
  compiled[spec] = c
  return c
end

local function program(spec) return spec.program or "quan" end

-- value_of(o, text) -> converted | nil, message
local function value_of(o, text)
  if o.choices then
    for _, choice in ipairs(o.choices) do
      if choice == text then return text end
    end
    return nil, ("%s must be one of %s, got '%s'"):format(o.name, table.concat(o.choices, ", "), text)
  end
  if o.check then
    local v, reason = o.check(text)
    if v == nil then return nil, o.name .. " " .. tostring(reason) end
    return v
  end
  return text
end

-- parse(spec, argv) -> opts, arguments | nil, message, kind
-- opts holds every option given (and the defaults of the others), by key;
-- opts.help is true when -h or --help came (the rest is then not read).
-- kind is "usage" (an unknown option, a missing value, too few or too many
-- arguments: the caller shows the usage) or "value" (a value the option
-- does not take: the message says what it takes).
function M.parse(spec, argv)
  local c = compile(spec)
  if type(argv) ~= "table" then error("quan.options.parse: argv must be a table", 2) end
  local opts, arguments = {}, {}
  for _, o in ipairs(c.list) do opts[o.key] = o.default end
  local i, n = 1, #argv
  local options_end = false
  while i <= n do
    local word = argv[i]
    if options_end or word == "-" or word:sub(1, 1) ~= "-" then
      arguments[#arguments + 1] = word
      if spec.passthrough and #arguments == 1 then
        table.move(argv, i + 1, n, 2, arguments)
        break
      end
    elseif word == "--" then
      options_end = true
    else
      local name, inline = word:match("^(%-%-[^=]+)=(.*)$")
      name = name or word
      local o = c.by_name[name]
      if name == "-h" or name == "--help" then
        opts.help = true
        return opts, {}
      elseif not o then
        local names = {}
        for _, known in ipairs(c.list) do names[#names + 1] = known.name end
        names[#names + 1] = "--help"
        local close = name:sub(1, 2) == "--" and suggest.closest(name, names)
        return nil, ("unknown option '%s'%s"):format(name, close and (" (did you mean " .. close .. "?)") or ""), "usage"
      end
      if not o.value then
        if inline then return nil, o.name .. " takes no value", "usage" end
        opts[o.key] = true
      else
        local text = inline
        if text == nil then
          i = i + 1
          text = argv[i]
          if text == nil then return nil, o.name .. " needs a value", "usage" end
        end
        local v, err = value_of(o, text)
        if v == nil then return nil, err, "value" end
        opts[o.key] = v
      end
    end
    i = i + 1
  end
  local most = c.required + c.optional
  if #arguments > most and not c.variadic then
    return nil, ("unexpected argument '%s'"):format(arguments[most + 1]), "usage"
  end
  if #arguments < c.required then
    return nil, "expected " .. table.concat(spec.arguments, " "), "usage"
  end
  return opts, arguments
end

-- usage_line(spec) -> "quan check [options] script.lua [args...]"
local function usage_line(spec)
  if spec.usage then return spec.usage end
  local parts = { program(spec) }
  if spec.options and #spec.options > 0 then parts[#parts + 1] = "[options]" end
  for _, a in ipairs(spec.arguments or {}) do parts[#parts + 1] = a end
  return table.concat(parts, " ")
end

-- usage(spec) -> the help text: "usage: ...", the summary, the options (one
-- a line, -h/--help last), the footer; ends with a newline
function M.usage(spec)
  local c = compile(spec)
  local out = { "usage: " .. usage_line(spec):gsub("\n", "\n       ") }
  if spec.summary then out[#out + 1] = spec.summary end
  local rows = {}
  for _, o in ipairs(c.list) do
    local help = o.help
    if o.choices then help = help .. (help ~= "" and " " or "") .. "(one of " .. table.concat(o.choices, ", ") .. ")" end
    if o.default ~= nil then help = help .. " (default " .. tostring(o.default) .. ")" end
    rows[#rows + 1] = { o.name .. (o.value and (" " .. o.value) or ""), help }
  end
  rows[#rows + 1] = { "-h, --help", "show this help" }
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
  out[#out + 1] = "options:"
  for _, r in ipairs(rows) do
    out[#out + 1] = ("  %-" .. width .. "s  %s"):format(r[1], r[2]):gsub("%s+$", "")
  end
  if spec.footer then out[#out + 1] = spec.footer end
  if spec.subcommands then
    out[#out + 1] = "sub-commands:"
    local width = 0
    for _, sub in ipairs(spec.subcommands) do width = math.max(width, #sub.name) end
    for _, sub in ipairs(spec.subcommands) do -- the summaries in one column
      out[#out + 1] = ("  %s %-" .. width .. "s  %s"):format(program(spec), sub.name, sub.summary)
    end
    out[#out + 1] = ("'%s WORD --help' shows a sub-command's usage."):format(program(spec))
  end
  return table.concat(out, "\n") .. "\n"
end

-- read(spec, argv) -> opts, arguments | nil, exit status
-- parse, answering what the user does not need the program for: --help
-- prints the usage on stdout (status 0); a usage error prints
-- "<program>: <message>" and the usage on stderr, a bad value the message
-- alone (status 2)
function M.read(spec, argv)
  local opts, arguments, kind = M.parse(spec, argv)
  if opts and opts.help then
    io.stdout:write(M.usage(spec))
    io.stdout:flush()
    return nil, 0
  end
  if opts then return opts, arguments end
  io.stderr:write(program(spec), ": ", arguments, "\n", kind == "usage" and M.usage(spec) or "")
  io.stderr:flush()
  return nil, M.EXIT_USAGE
end

-- read_or_exit(spec, argv) -> opts, arguments; for a script: where read
-- returns a status, the process exits with it
function M.read_or_exit(spec, argv)
  local opts, arguments = M.read(spec, argv)
  if not opts then os.exit(arguments) end
  return opts, arguments
end

-- positive_integer(text) -> n | nil, reason (a `check` function)
function M.positive_integer(text)
  local n = math.tointeger(tonumber(text))
  if not n or n <= 0 then return nil, "wants a positive integer" end
  return n
end

-- positive_number(text) -> n | nil, reason (a `check` function; finite)
function M.positive_number(text)
  local n = tonumber(text)
  if not n or n <= 0 or n == math.huge then return nil, "wants a positive number" end
  n = math.tointeger(n) or n
  return n
end

return M
