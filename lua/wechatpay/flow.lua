-- wechatpay.flow: a stock's use-flow or refund-flow file (下载批次核销明细,
-- 下载批次退款明细), once downloaded: its SHA1 checked against the API's
-- hash_value and its rows read with typed fields, a line at a time, so a
-- file of any size is never held in memory. wx:flow (wechatpay.client)
-- downloads one and opens it here. See docs/client.md, "Flow files".
--
--   flow.open(path, hash_value[, hash_type]) -> flow | nil, err
--   flow.COLUMNS                              -> header text -> {field, type}
--   f.path, f.size, f.sha1, f.count, f.columns, f.fields
--   f:rows()                                  -> iterator of row tables
--   f:close()                                 -> removes a temporary file
--
-- The layout (a real use-flow file): a header line, one line per row whose
-- fields are comma-separated, some with a leading backquote (`), some
-- double-quoted ("" inside for a quote), CRLF line ends, then "总条数" and
-- the count of rows (`N). Columns are read by their header, so a file with
-- other or more columns (the sandbox's refund-flow, the per-day variants)
-- reads too: a known column becomes a typed field (COLUMNS), an unknown one
-- a text field named by its header. Errors are `verify` error tables
-- (wechatpay.errors): hash_mismatch, hash_type, bad_flow (a file that does
-- not read as a flow file), io.
local errors = require "wechatpay.errors"
local time = require "quan.time"

local M = {}

local concat, tonumber, type = table.concat, tonumber, type

M.CHUNK = 64 * 1024 -- bytes read at a time

-- COLUMNS: header text -> {field, type}; types: text, yuan (元 with two
-- decimals -> integer 分), time ("YYYY-MM-DD HH:MM:SS" Beijing time ->
-- RFC 3339 "YYYY-MM-DDTHH:MM:SS+08:00", as the API and its notifications
-- write times)
M.COLUMNS = {
  ["批次id"] = { "stock_id", "text" },
  ["优惠id"] = { "coupon_id", "text" },
  ["优惠类型"] = { "coupon_type", "text" },
  ["优惠金额（元）"] = { "coupon_amount", "yuan" },
  ["订单总金额（元）"] = { "order_amount", "yuan" },
  ["交易类型"] = { "trade_type", "text" },
  ["支付单号"] = { "transaction_id", "text" },
  ["消耗时间"] = { "consume_time", "time" },
  ["消耗商户号"] = { "consume_mchid", "text" },
  ["设备号"] = { "device_no", "text" },
  ["银行流水号"] = { "bank_serial_no", "text" },
  ["单品信息"] = { "goods_info", "text" },
  ["退款单号"] = { "refund_id", "text" },
  ["退款时间"] = { "refund_time", "time" },
}

local TRAILER = "总条数"
local BOM = "\239\187\191"

local function failure(code, message)
  return nil, errors.new { kind = "verify", code = code, message = message }
end

-- split(line) -> the raw fields of a line | nil, reason: comma-separated; a
-- field in double quotes may hold commas and "" (a quote); a leading
-- backquote is dropped from an unquoted field
local function split(line)
  local out, pos = {}, 1
  while true do
    if line:sub(pos, pos) == '"' then
      local parts, i = {}, pos + 1
      while true do
        local q = line:find('"', i, true)
        if not q then return nil, "a quoted field is not closed" end
        parts[#parts + 1] = line:sub(i, q - 1)
        if line:sub(q + 1, q + 1) ~= '"' then
          pos = q + 1
          break
        end
        parts[#parts + 1] = '"'
        i = q + 2
      end
      out[#out + 1] = concat(parts)
      local after = line:sub(pos, pos)
      if after == "" then return out end
      if after ~= "," then return nil, "text after a quoted field" end
      pos = pos + 1
    else
      local comma = line:find(",", pos, true)
      local field = line:sub(pos, (comma or #line + 1) - 1)
      if field:sub(1, 1) == "`" then field = field:sub(2) end
      out[#out + 1] = field
      if not comma then return out end
      pos = comma + 1
    end
  end
end

-- fen(text) -> integer 分 of an amount in 元 ("1.00", "2.5", "3") | nil
local function fen(text)
  local sign, whole, cents = text:match("^(%-?)(%d+)%.?(%d?%d?)$")
  if not whole or (cents == "" and text:find(".", 1, true)) then return nil end
  local n = tonumber(whole) * 100 + tonumber((cents .. "00"):sub(1, 2))
  return math.tointeger(sign == "-" and -n or n)
end

-- rfc3339(text) -> "YYYY-MM-DDTHH:MM:SS+08:00" of a Beijing wall time | nil
local function rfc3339(text)
  local d, t = text:match("^(%d%d%d%d%-%d%d%-%d%d) (%d%d:%d%d:%d%d)$")
  local s = d and (d .. "T" .. t .. "+08:00")
  return s and time.parse(s) and s or nil
end

local CONVERT = { text = function(s) return s end, yuan = fen, time = rfc3339 }

-- header(line) -> columns, fields (converters per column) | nil, reason
local function header(line)
  local columns, why = split(line)
  if not columns then return nil, why end
  local fields, seen = {}, {}
  for i, name in ipairs(columns) do
    local known = M.COLUMNS[name]
    local field = known and known[1] or (name ~= "" and name or ("column " .. i))
    if seen[field] then return nil, "column '" .. name .. "' twice" end
    seen[field] = true
    fields[i] = { name = field, type = known and known[2] or "text", column = name }
  end
  return columns, fields
end

-- row(fields, line) -> the row table of a data line | nil, reason
local function row(fields, line)
  local raw, why = split(line)
  if not raw then return nil, why end
  if #raw ~= #fields then return nil, ("%d fields, the header has %d"):format(#raw, #fields) end
  local r = {}
  for i, f in ipairs(fields) do
    local v = CONVERT[f.type](raw[i])
    if v == nil then
      return nil, ("%s '%s' is not %s"):format(f.column, raw[i],
        f.type == "yuan" and "an amount in 元 (like 1.00)" or "a time YYYY-MM-DD HH:MM:SS")
    end
    r[f.name] = v
  end
  return r
end

-- Reader: the lines of a file, read in chunks, each chunk also given to
-- on_chunk (the digest)
local function lines_of(file, on_chunk)
  local buffer, at, done = "", 1, false
  return function()
    local nl = buffer:find("\n", at, true)
    while not nl and not done do
      local chunk = file:read(M.CHUNK)
      if chunk then
        if on_chunk then on_chunk(chunk) end
        buffer, at = buffer:sub(at) .. chunk, 1
        nl = buffer:find("\n", 1, true)
      else
        done = true
      end
    end
    local line
    if nl then
      line, at = buffer:sub(at, nl - 1), nl + 1
    elseif at <= #buffer then
      line, at = buffer:sub(at), #buffer + 1 -- the last line, without an end
    else
      return nil
    end
    if line:sub(-1) == "\r" then line = line:sub(1, -2) end
    return line
  end
end

-- walk(path, on_chunk, on_row) -> {columns, fields, count, size} | nil,
-- reason, line number: every line of the file read and checked; on_row(r)
-- for each data row
local function walk(file, on_chunk, on_row)
  local next_line = lines_of(file, on_chunk)
  local n, columns, fields, count, total = 0, nil, nil, 0, nil
  for line in next_line do
    n = n + 1
    if n == 1 and line:sub(1, 3) == BOM then line = line:sub(4) end
    if line == "" then -- blank lines (a last CRLF too) say nothing
    elseif not columns then
      columns, fields = header(line)
      if not columns then return nil, "header: " .. fields, n end
    elseif total == TRAILER then
      total = tonumber((line:gsub("^`", ""):match("^%d+$")))
      if not total then return nil, "the count after 总条数 is not a number", n end
    elseif total then
      return nil, "a line after the count", n
    elseif line == TRAILER then
      total = TRAILER
    else
      local r, why = row(fields, line)
      if not r then return nil, why, n end
      count = count + 1
      if on_row then on_row(r) end
    end
  end
  if not columns then return nil, "the file is empty", n end
  if total == nil or total == TRAILER then return nil, "no 总条数 and count at the end (an incomplete file)", n end
  if total ~= count then return nil, ("总条数 says %d rows, the file has %d"):format(total, count), n end
  return {columns = columns, fields = fields, count = count}
end

local Flow = {}
Flow.__index = Flow
Flow.__name = "wechatpay.flow"

function Flow.__tostring(f)
  return ("wechatpay.flow %s (%d rows)"):format(f.path, f.count)
end

-- open(path, hash_value[, hash_type]) -> flow | nil, err: the file at path
-- read once: its SHA1 (in chunks) compared with hash_value (hex, any case;
-- false: not compared), every line checked. hash_type must be "SHA1".
function M.open(path, hash_value, hash_type)
  if type(path) ~= "string" then error("flow.open: expected a file path", 2) end
  if hash_value ~= false and type(hash_value) ~= "string" then
    error("flow.open: expected the hash_value of the answer (a string; false compares none)", 2)
  end
  if hash_type ~= nil and type(hash_type) ~= "string" then error("flow.open: hash_type must be a string", 2) end
  local where = "flow file " .. path .. ": "
  if hash_value and (hash_type or "SHA1"):upper() ~= "SHA1" then
    return failure("hash_type", where .. "verify: hash_type is " .. tostring(hash_type) .. ", expected SHA1")
  end
  local file, err = io.open(path, "rb")
  if not file then return failure("io", where .. tostring(err)) end
  local digest = require("quan.crypto").digest("sha1")
  local size = 0
  local ok, info, why, line = pcall(walk, file, function(chunk)
    size = size + #chunk
    digest:update(chunk)
  end)
  if not ok then
    file:close()
    return failure("io", where .. tostring(info))
  end
  -- a line that does not read leaves the rest of the file to hash
  while file:read(0) do
    local chunk = file:read(M.CHUNK)
    size = size + #chunk
    digest:update(chunk)
  end
  file:close()
  local sha1 = digest:final()
  if hash_value and sha1 ~= hash_value:lower() then
    return failure("hash_mismatch", where .. "verify: its SHA1 " .. sha1 .. " is not the hash_value " .. hash_value
      .. " (an altered or incomplete download)")
  end
  if not info then return failure("bad_flow", ("%sline %d: %s"):format(where, line, why)) end
  local names = {}
  for i, f in ipairs(info.fields) do names[i] = f.name end
  return setmetatable({path = path, size = size, sha1 = sha1, count = info.count, columns = info.columns,
    fields = names, parse = info.fields}, Flow)
end

-- f:rows() -> iterator over the rows, each a table of typed fields, read a
-- line at a time. Raises a bad_flow error table when the file no longer
-- reads as it did when opened.
function Flow:rows()
  if getmetatable(self) ~= Flow then error("rows: call it with ':' (flow:rows())", 2) end
  local file = io.open(self.path, "rb")
  if not file then
    error(errors.new { kind = "verify", code = "io", message = "flow file " .. self.path .. ": gone since it was opened" }, 2)
  end
  local next_line, fields, n, past_header = lines_of(file), self.parse, 0, false
  local path = self.path
  return function()
    if not next_line then return nil end
    while true do
      local line = next_line()
      n = n + 1
      if line == nil or line == TRAILER then
        file:close()
        next_line = nil
        return nil
      end
      if line == "" then -- nothing
      elseif not past_header then
        past_header = true
      else
        local r, why = row(fields, line)
        if not r then
          file:close()
          next_line = nil
          error(errors.new { kind = "verify", code = "bad_flow",
            message = ("flow file %s: line %d: %s (changed since it was opened)"):format(path, n, why) }, 2)
        end
        return r
      end
    end
  end
end

-- f:close(): removes the file when wx:flow made it in a temporary place
-- (f.temporary); a path given by the caller stays. Idempotent.
function Flow:close()
  if self.temporary then
    os.remove(self.path)
    self.temporary = false
  end
end
Flow.__close = Flow.close
Flow.__gc = Flow.close

M.Flow = Flow

return M
