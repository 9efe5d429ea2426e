-- quan.batch.csv: a streaming CSV reader (RFC 4180) with a header row.
--
-- Reads one record at a time from a file, so memory stays flat however long
-- the file is. Quoted fields may hold separators, doubled quotes and line
-- breaks; CRLF and LF line ends are both accepted; a UTF-8 byte-order mark
-- before the header is dropped; blank lines are skipped.
--
--   local r = assert(csv.open("users.csv"))
--   for rec, n in r:records() do print(n, rec.openid) end
--   r:close()
local M = {}

local find, sub, gsub, byte = string.find, string.sub, string.gsub, string.byte

local Reader = {}
Reader.__index = Reader

-- split(line, sep) -> array of fields of a line that has no quote character
local function split(line, sep, out)
  local n, pos = 0, 1
  while true do
    local s = find(line, sep, pos, true)
    n = n + 1
    if not s then
      out[n] = sub(line, pos)
      return out, n
    end
    out[n] = sub(line, pos, s - 1)
    pos = s + 1
  end
end

-- strip the line end (LF or CRLF) of a line read with "L"
local function chomp(line)
  if byte(line, -1) == 10 then
    if byte(line, -2) == 13 then return sub(line, 1, -3) end
    return sub(line, 1, -2)
  end
  return line
end

-- Reader:_failed(err) -> nil, message of a file that could not be read (a
-- directory, an I/O error): never taken for the end of the input
function Reader:_failed(err)
  return nil, "csv: " .. (self.name and (self.name .. ": ") or "") .. tostring(err)
end

-- Reader:_fields() -> array of fields of the next record, or nil at the end,
-- or nil, message on malformed input or a read that failed. Blank lines are
-- skipped.
function Reader:_fields()
  local f, sep = self.file, self.sep
  local line, err
  repeat
    line, err = f:read("L")
    if not line then
      if err then return self:_failed(err) end
      return nil
    end
    self.line = self.line + 1
    line = chomp(line)
  until line ~= ""
  if not find(line, '"', 1, true) then
    return (split(line, sep, {}))
  end
  -- the general case: a small state machine over the record, reading more
  -- lines while a quoted field is open
  local fields, n = {}, 0
  local buf, nb = {}, 0
  local pos, len = 1, #line
  local start_line = self.line
  while true do
    -- at the start of a field
    if byte(line, pos) == 34 then -- opening quote
      pos = pos + 1
      while true do
        local q = find(line, '"', pos, true)
        if not q then -- field continues on the next line
          nb = nb + 1; buf[nb] = sub(line, pos)
          nb = nb + 1; buf[nb] = "\n"
          local more, rerr = f:read("L")
          if not more then
            if rerr then return self:_failed(rerr) end
            return nil, ("csv: line %d: unterminated quoted field"):format(start_line)
          end
          self.line = self.line + 1
          line, pos = chomp(more), 1
          len = #line
        elseif byte(line, q + 1) == 34 then -- doubled quote
          nb = nb + 1; buf[nb] = sub(line, pos, q)
          pos = q + 2
        else
          nb = nb + 1; buf[nb] = sub(line, pos, q - 1)
          pos = q + 1
          break
        end
      end
      -- after the closing quote: a separator, the end, or junk we keep
      local s = find(line, sep, pos, true)
      local rest = sub(line, pos, (s or len + 1) - 1)
      if rest ~= "" then
        return nil, ("csv: line %d: unexpected text after a quoted field"):format(self.line)
      end
      n = n + 1; fields[n] = table.concat(buf, "", 1, nb)
      buf, nb = {}, 0
      if not s then return fields end
      pos = s + 1
    else
      local s = find(line, sep, pos, true)
      local v = sub(line, pos, (s or len + 1) - 1)
      if find(v, '"', 1, true) then
        return nil, ("csv: line %d: quote inside an unquoted field"):format(self.line)
      end
      n = n + 1; fields[n] = v
      if not s then return fields end
      pos = s + 1
    end
  end
end

-- reader:read() -> record, n | nil (end) | nil, message
-- record maps each header name to its field (missing fields are nil) and
-- keeps the fields in order at [1], [2], ...; n counts data records from 1.
function Reader:read()
  if self.closed then error("csv: read from a closed reader", 2) end
  local fields, err = self:_fields()
  if not fields then return nil, err end
  self.count = self.count + 1
  local header = self.header
  if header then
    if #fields > #header then
      return nil, ("csv: line %d: %d fields, the header has %d"):format(self.line, #fields, #header)
    end
    for i = 1, #header do fields[header[i]] = fields[i] end
  end
  return fields, self.count
end

-- reader:records() -> iterator of record, n; raises on malformed input
-- (use read() to get nil, message instead)
function Reader:records()
  return function()
    local rec, n = self:read()
    if rec then return rec, n end
    if n then error(n, 0) end
    return nil
  end
end

function Reader:close()
  if not self.closed then
    self.closed = true
    if self.owned then self.file:close() end
  end
end

Reader.__close = Reader.close

local defaults = { sep = ",", header = true }

-- open(source [, opts]) -> reader | nil, message
-- source: a path or an open file. opts.sep (",") is the separator;
-- opts.header (true) reads the first record as column names, false gives
-- records with [i] only.
function M.open(source, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("csv.open: opts must be a table", 2) end
  for k in pairs(opts) do
    if defaults[k] == nil then error("csv.open: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local sep = opts.sep or ","
  if type(sep) ~= "string" or #sep ~= 1 or sep == '"' or sep == "\n" or sep == "\r" then
    error("csv.open: sep must be one character other than a quote or line end", 2)
  end
  local file, owned, name = source, false, nil
  if type(source) == "string" then
    local f, err = io.open(source, "rb")
    if not f then return nil, "csv: " .. err end
    file, owned, name = f, true, source
  elseif io.type(source) ~= "file" then
    error("csv.open: source must be a path or an open file", 2)
  end
  local self = setmetatable({ file = file, owned = owned, name = name, sep = sep, line = 0, count = 0 }, Reader)
  if opts.header ~= false then
    local fields, err = self:_fields()
    if not fields then
      self:close()
      return nil, err or "csv: no header line"
    end
    fields[1] = gsub(fields[1], "^\239\187\191", "") -- byte-order mark
    local seen = {}
    for i, name in ipairs(fields) do
      if seen[name] then
        self:close()
        return nil, ("csv: header: column '%s' appears twice"):format(name)
      end
      seen[name] = i
    end
    self.header = fields
    self.columns = seen
  end
  return self
end

-- count_lines(path) -> number of lines, read in blocks (fast, flat memory;
-- an estimate of records: a quoted line break counts as a line), or nil, message
function M.count_lines(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "csv: " .. err end
  local n, last = 0, "\n"
  while true do
    local block = f:read(1 << 16)
    if not block then break end
    local pos = 1
    while true do
      local s = find(block, "\n", pos, true)
      if not s then break end
      n = n + 1
      pos = s + 1
    end
    last = sub(block, -1)
  end
  f:close()
  if last ~= "\n" then n = n + 1 end
  return n
end

return M
