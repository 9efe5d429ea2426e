-- quan.batch.input: the rows of a batch, read one at a time.
--
-- An input is a CSV file with a header line, an open quan.batch.csv reader,
-- or an iterator function returning a record per call and nil at the end.
-- Each row read is numbered (from 1) and has a key: a column of the record,
-- what a key function makes of it, or the record itself when it is a
-- string. The spaces around a key are dropped (" oUser1 " in a hand-edited
-- CSV is the openid oUser1).
--
--   local rows = assert(input.open("users.csv", { key = "openid" }))
--   while true do
--     local key, row, record = rows:read()
--     if not row then break end -- rows.error says whether a line was unreadable
--     ...
--   end
--   rows:close()
local M = {}

local csv = require "quan.batch.csv"

local Input = {}
Input.__index = Input

-- is_source(v) -> true when v is something open() reads: a path, a csv
-- reader or an iterator function
function M.is_source(v)
  return type(v) == "string" or type(v) == "function"
    or (type(v) == "table" and getmetatable(v) ~= nil and v.read ~= nil)
end

-- key_function(key) -> function(record) -> key: key is a column name or
-- already a function
local function key_function(column)
  if type(column) == "function" then return column end
  return function(record)
    if type(record) == "string" then return record end
    return record[column]
  end
end

-- missing_column(source, column, header) -> the message for a CSV without
-- the key column: the columns it has, the closest, how to choose another
local function missing_column(source, column, header)
  local names = {}
  for i, name in ipairs(header or {}) do names[i] = ("'%s'"):format(name) end
  local close = require("quan.suggest").closest(column, header or {})
  return ("input %s: no column '%s' in the header; its columns: %s%s; choose the key column with --key COLUMN (a campaign's send: key = COLUMN)")
    :format(source, column, #names > 0 and table.concat(names, ", ") or "(none)",
            close and (" (did you mean '" .. close .. "'?)") or "")
end

-- open(source, {key = "openid", total = n, sep = ","}) -> input | nil, message
-- source: see is_source. total: the rows expected (default for a CSV path
-- of a regular file: its line count less the header; unknown for a pipe).
-- A CSV whose header lacks the key column is refused. The input's fields,
-- read by the engine:
--   total   rows expected, or nil when unknown
--   rows    rows read so far
--   eof     true once reading has ended (the last row, or an error)
--   error   the message of an input line that could not be read, if any
function M.open(source, opts)
  opts = opts or {}
  local column = opts.key or "openid"
  local self = setmetatable({ rows = 0, eof = false, error = nil, total = opts.total,
                              key_of = key_function(column) }, Input)
  if type(source) == "string" then
    local reader, err = csv.open(source, { sep = opts.sep })
    if not reader then return nil, "input " .. source .. ": " .. err end
    if type(column) == "string" and not reader.columns[column] then
      reader:close()
      return nil, missing_column(source, column, reader.header)
    end
    -- the rows expected, counted ahead in a regular file only: a pipe, a
    -- FIFO or /dev/stdin read twice would give the count the rows the
    -- reader had not buffered yet, and the run would end "all done" there
    local st = self.total == nil and require("quan.os").stat(source)
    if st and st.kind == "file" then
      local n = csv.count_lines(source)
      self.total = n and math.max(0, n - 1)
    end
    self.next_record = function() return reader:read() end
    self.close_source = function() reader:close() end
  elseif type(source) == "function" then
    self.next_record = source
  elseif M.is_source(source) then
    self.next_record = function() return source:read() end
  else
    error("input.open: source must be a path, a csv reader or an iterator function", 2)
  end
  return self
end

-- input:read() -> key, row, record | nil at the end (eof set; error set
-- when a line could not be read). key is a string or nil (a row without
-- one).
function Input:read()
  if self.eof then return nil end
  local record, err = self.next_record()
  if record == nil then
    self.eof = true
    if err then self.error = err end
    return nil
  end
  self.rows = self.rows + 1
  local key = self.key_of(record)
  if key ~= nil and type(key) ~= "string" then key = tostring(key) end
  if key and (key:find("^%s") or key:find("%s$")) then key = key:match("^%s*(.-)%s*$") end
  return key, self.rows, record
end

-- input:close(): closes a CSV file the input opened (a reader or an
-- iterator given to open() is the caller's); idempotent
function Input:close()
  local close = self.close_source
  self.close_source = nil
  if close then close() end
end

return M
