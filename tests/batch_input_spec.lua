-- Specs of quan.batch.input: the rows of a batch from a CSV path, a csv
-- reader or an iterator, numbered, with their keys.
local sh = require "tests.support.sh"
local B = require "tests.support.batch"

local csv = require "quan.batch.csv"
local input = require "quan.batch.input"
local qos = require "quan.os"

-- rows_of(source[, opts]) -> {{key, row, record}...}, the input after its end
local function rows_of(source, opts)
  local rows = assert(input.open(source, opts))
  local out = {}
  while true do
    local key, row, record = rows:read()
    if not row then break end
    out[#out + 1] = { key = key, row = row, record = record }
  end
  rows:close()
  return out, rows
end

describe("quan.batch.input", function()
  it("reads a CSV path by its key column, counts the rows expected and numbers the rows read", function()
    local dir = sh.tmpdir()
    local path = sh.write(dir .. "/u.csv", B.lines { "name,openid", "Ann,o1", '"Bob","  o2 "', "Cy," })
    local rows, r = rows_of(path)
    assert.equal(3, r.total)
    assert.equal(3, r.rows)
    assert.is_true(r.eof)
    assert.is_nil(r.error)
    assert.same({ "o1", "o2", "" }, { rows[1].key, rows[2].key, rows[3].key }) -- spaces dropped
    assert.same({ 1, 2, 3 }, { rows[1].row, rows[2].row, rows[3].row })
    assert.equal("Bob", rows[2].record.name)
    assert.is_nil(r:read()) -- stays at its end
  end)

  it("takes an iterator (a string is its own key), a key function and a csv reader", function()
    local i, list = 0, { "a", { uid = 7 }, " b " }
    local rows = rows_of(function() i = i + 1; return list[i] end,
      { key = function(rec) return type(rec) == "string" and rec or rec.uid end, total = 3 })
    assert.same({ "a", "7", "b" }, { rows[1].key, rows[2].key, rows[3].key })
    local dir = sh.tmpdir()
    local reader = assert(csv.open(sh.write(dir .. "/r.csv", "id;x\nk1;1\n"), { sep = ";" }))
    rows = rows_of(reader, { key = "id" })
    assert.equal("k1", rows[1].key)
    assert.equal("1", rows[1].record.x)
    reader:close() -- the reader is the caller's: still open after input:close()
  end)

  it("stops at a line it cannot read and keeps the message", function()
    local dir = sh.tmpdir()
    local _, r = rows_of(sh.write(dir .. "/bad.csv", B.lines { "openid", "o1", '"o2', "o3" }))
    assert.equal(1, r.rows)
    assert.is_true(r.eof)
    assert.matches("csv: line 3: unterminated quoted field", r.error)
  end)

  it("reads a CSV through a pipe whole, its total unknown", function()
    -- the lines were counted ahead by opening the path again: on a FIFO (or
    -- /dev/stdin) that count took the rows the reader had not buffered yet
    local dir = sh.tmpdir()
    local list = { "openid" }
    for i = 1, 50000 do list[#list + 1] = ("o%06d"):format(i) end
    sh.write(dir .. "/users.csv", B.lines(list))
    assert.equal("", (sh.run("mkfifo " .. sh.quote(dir .. "/pipe"))))
    local writer = assert(qos.spawn({ "sh", "-c", "cat " .. sh.quote(dir .. "/users.csv") .. " > " .. sh.quote(dir .. "/pipe") }))
    local r = assert(input.open(dir .. "/pipe"))
    assert.is_nil(r.total)
    local n = 0
    while true do
      local _, row = r:read()
      if not row then break end
      n = n + 1
    end
    r:close()
    qos.wait(writer)
    assert.is_nil(r.error)
    assert.equal(50000, n)
  end)

  it("refuses a file it cannot open or without the key column", function()
    local dir = sh.tmpdir()
    local r, err = input.open(dir .. "/none.csv")
    assert.is_nil(r)
    assert.matches("^input .*none.csv: ", err)
    r, err = input.open(sh.write(dir .. "/k.csv", "uid\nu1\n"), { key = "openid" })
    assert.is_nil(r)
    assert.equal("input " .. dir .. "/k.csv: no column 'openid' in the header; its columns: 'uid'; "
      .. "choose the key column with --key COLUMN (a campaign's send: key = COLUMN)", err)
    -- the columns found, and the closest name when one is close
    r, err = input.open(sh.write(dir .. "/k2.csv", "\239\187\191OpenID,name\r\nu1,a\r\n"), { key = "openid" })
    assert.is_nil(r)
    assert.equal("input " .. dir .. "/k2.csv: no column 'openid' in the header; its columns: 'OpenID', "
      .. "'name' (did you mean 'OpenID'?); choose the key column with --key COLUMN (a campaign's send: key = COLUMN)", err)
  end)

  it("reads CSV as people have it: a BOM, CRLF, quoted fields, blank lines, spaces around keys", function()
    local dir = sh.tmpdir()
    local path = sh.write(dir .. "/u.csv", "\239\187\191name,openid\r\n\r\n"
      .. "\"Li, Lei\",o1\r\n\"Han \"\"Meimei\"\"\",\" o2 \"\r\n\r\n"
      .. "\"two\r\nlines\",o3\r\n")
    local r = assert(input.open(path))
    local got = {}
    while true do
      local key, row, record = r:read()
      if not row then break end
      got[#got + 1] = { key, row, record.name }
    end
    assert.is_nil(r.error)
    r:close()
    assert.same({ { "o1", 1, "Li, Lei" }, { "o2", 2, 'Han "Meimei"' }, { "o3", 3, "two\nlines" } }, got) -- a line break inside quotes is kept (as LF)
  end)

  it("tells a source from anything else, and raises on anything else", function()
    assert.is_true(input.is_source("users.csv"))
    assert.is_true(input.is_source(function() end))
    assert.is_false(input.is_source({}))
    assert.is_false(input.is_source(42))
    assert.has_error(function() input.open(42) end,
      "input.open: source must be a path, a csv reader or an iterator function")
  end)
end)
