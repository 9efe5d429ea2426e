-- Specs of quan.batch.csv: records by header name, streamed, RFC 4180
-- quoting, and errors that name the line.
local sh = require "tests.support.sh"
local B = require "tests.support.batch"

local csv = require "quan.batch.csv"

local lines, read_all = B.lines, B.read_all

describe("quan.batch.csv", function()
  local dir = sh.tmpdir()

  it("reads records by header name, streaming", function()
    local p = sh.write(dir .. "/a.csv", lines { "openid,name", "o1,Ann", "o2,Bob" })
    local r = assert(csv.open(p))
    assert.same({ "openid", "name" }, r.header)
    local rec, n = r:read()
    assert.equal("o1", rec.openid)
    assert.equal("Ann", rec.name)
    assert.equal("o1", rec[1])
    assert.equal(1, n)
    rec, n = r:read()
    assert.equal("Bob", rec.name)
    assert.equal(2, n)
    assert.is_nil(r:read())
    r:close()
  end)

  it("handles quotes, separators, line breaks, CRLF, a BOM and blank lines", function()
    local text = '\239\187\191openid,note\r\n' ..
      'o1,"a, b"\r\n' ..
      '\r\n' ..
      'o2,"say ""hi"""\n' ..
      'o3,"two\nlines"\n' ..
      '"o4",\n' ..
      'o5,""'
    local r = assert(csv.open(sh.write(dir .. "/b.csv", text)))
    local recs = read_all(r)
    assert.equal("openid", r.header[1])
    assert.equal(5, #recs)
    assert.equal("a, b", recs[1].note)
    assert.equal('say "hi"', recs[2].note)
    assert.equal("two\nlines", recs[3].note)
    assert.equal("o4", recs[4].openid)
    assert.equal("", recs[4].note)
    assert.equal("", recs[5].note)
  end)

  it("accepts another separator and no header", function()
    local r = assert(csv.open(sh.write(dir .. "/c.csv", "a;b\nc;d\n"), { sep = ";", header = false }))
    local recs = read_all(r)
    assert.same({ { "a", "b" }, { "c", "d" } }, recs)
  end)

  it("reports malformed input with the line number", function()
    local cases = {
      { 'id\n"open\n', "csv: line 2: unterminated quoted field" },
      { 'id\n"a"b\n', "csv: line 2: unexpected text after a quoted field" },
      { 'id\na"b\n', "csv: line 2: quote inside an unquoted field" },
      { 'id\nx,y\n', "csv: line 2: 2 fields, the header has 1" },
    }
    for i, c in ipairs(cases) do
      local r = assert(csv.open(sh.write(dir .. "/bad" .. i .. ".csv", c[1])))
      local rec, err = r:read()
      assert.is_nil(rec)
      assert.equal(c[2], err)
      r:close()
    end
    local ok, err = csv.open(sh.write(dir .. "/dup.csv", "a,a\n"))
    assert.is_nil(ok)
    assert.equal("csv: header: column 'a' appears twice", err)
    ok, err = csv.open(dir .. "/missing.csv")
    assert.is_nil(ok)
    assert.matches("^csv: .*missing.csv", err)
    ok, err = csv.open(sh.write(dir .. "/empty.csv", ""))
    assert.is_nil(ok)
    assert.equal("csv: no header line", err)
    -- a file that opens but cannot be read is that, never an empty input
    ok, err = csv.open(dir)
    assert.is_nil(ok)
    assert.equal("csv: " .. dir .. ": Is a directory", err)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() csv.open(42) end, "csv.open: source must be a path or an open file")
    assert.has_error(function() csv.open(dir .. "/a.csv", { nope = 1 }) end, "csv.open: unknown option 'nope'")
    assert.has_error(function() csv.open(dir .. "/a.csv", { sep = '"' }) end,
      "csv.open: sep must be one character other than a quote or line end")
  end)

  it("counts lines in blocks", function()
    assert.equal(3, csv.count_lines(dir .. "/a.csv"))
    local big = {}
    for i = 1, 20000 do big[i] = "o" .. i end
    sh.write(dir .. "/big.csv", "openid\n" .. table.concat(big, "\n"))
    assert.equal(20001, csv.count_lines(dir .. "/big.csv"))
  end)
end)
