-- quan.time, quan.url, quan.text, quan.suggest and quan.path: the core helpers (docs/helpers.md).
local time = require "quan.time"
local url = require "quan.url"
local text = require "quan.text"
local sh = require "tests.support.sh"
local md = require "tests.support.mdexamples"

describe("quan.time", function()
  it("writes Beijing time, the fraction dropped, in any os.date format", function()
    for _, c in ipairs {
      { 0, nil, "1970-01-01T08:00:00+08:00" },
      { 1795824000, nil, "2026-11-28T08:00:00+08:00" },
      { 1795824000.9, nil, "2026-11-28T08:00:00+08:00" },
      { 1795881599, "%Y%m%d", "20261128" },     -- 23:59:59 in Beijing
      { 1795881600, "%Y%m%d", "20261129" },     -- the next Beijing day, still the 28th in UTC
      { 1795824000, "%Y%m%d%H%M%S", "20261128080000" },
    } do
      assert.equal(c[3], time.beijing(c[1], c[2]))
    end
    assert.equal(28800, time.BEIJING)
  end)

  it("parses RFC 3339 with an offset, to the second or with a fraction", function()
    for _, c in ipairs {
      { "2026-11-28T08:00:00+08:00", 1795824000 },
      { "2026-11-28T00:00:00-00:00", 1795824000 },
      { "2026-11-27T11:30:00-12:30", 1795824000 },
      { "2026-11-28T00:00:00.5+00:00", 1795824000.5 },
      { "2000-02-29T00:00:00+00:00", 951782400 },
      { "1970-01-01T08:00:00+08:00", 0 },
      { "9999-12-31T23:59:59+00:00", 253402300799 },
    } do
      assert.equal(c[2], time.parse(c[1]), c[1])
    end
    assert.equal("integer", math.type(time.parse("2026-11-28T08:00:00+08:00")))
  end)

  it("refuses what is not RFC 3339, naming why", function()
    for _, c in ipairs {
      { 1795824000, "not a string" },
      { "2026-11-28 08:00:00+08:00", "not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS+08:00)" },
      { "2026-11-28T08:00+08:00", "not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS+08:00)" },
      { "2026-11-28T08:00:00.+08:00", "empty fraction of a second" },
      { "2026-02-29T00:00:00+08:00", "no such date" },
      { "2100-02-29T00:00:00+08:00", "no such date" },
      { "2026-13-01T00:00:00+08:00", "no such date" },
      { "2026-04-31T00:00:00+08:00", "no such date" },
      { "2026-11-28T24:00:00+08:00", "no such time of day" },
      { "2026-11-28T23:59:60+08:00", "no such time of day" },
      { "2026-11-28T08:00:00", "missing the offset (e.g. +08:00)" },
      { "2026-11-28T08:00:00Z", "needs an explicit offset such as +08:00, not Z" },
      { "2026-11-28T08:00:00 08:00", "bad offset (expected +HH:MM)" },
      { "2026-11-28T08:00:00+24:00", "bad offset (expected +HH:MM)" },
      { "2026-11-28T08:00:00+0800", "bad offset (expected +HH:MM)" },
    } do
      local t, why = time.parse(c[1])
      assert.is_nil(t, tostring(c[1]))
      assert.equal(c[2], why, tostring(c[1]))
    end
  end)

  it("reads Z and an unencoded + (a space) when lenient, as a server reads a query", function()
    assert.equal(1795824000, time.parse("2026-11-28T00:00:00Z", true))
    assert.equal(1795824000, time.parse("2026-11-28T08:00:00 08:00", true))
    assert.equal(1795824000.25, time.parse("2026-11-28T08:00:00.25 08:00", true))
    assert.equal(1795824000, time.parse("2026-11-28T08:00:00+08:00", true))
    assert.equal("no such date", select(2, time.parse("2026-02-30T00:00:00Z", true)))
    assert.equal("missing the offset (e.g. +08:00)", select(2, time.parse("2026-11-28T08:00:00", true)))
  end)

  it("reads durations as a person types them, refusing anything else", function()
    for _, c in ipairs {
      { "90s", 90 }, { "30m", 1800 }, { "2h", 7200 }, { "1d", 86400 }, { "1w", 604800 },
      { "1d12h", 129600 }, { "1h30m15s", 5415 }, { "0s", 0 }, { "3600", 3600 }, { "0", 0 },
    } do
      assert.equal(c[2], time.duration(c[1]), c[1])
      assert.equal("integer", math.type(time.duration(c[1])), c[1])
    end
    local reason = "not a duration: digits and a unit (s, m, h, d, w), several in a row, e.g. 90s, 2h, 1d12h"
    for _, bad in ipairs { "2x", "h", "1.5h", "-1h", "2 h", "2h ", "+2h" } do
      assert.same({ nil, reason }, { time.duration(bad) }, bad)
    end
    assert.same({ nil, "empty" }, { time.duration("") })
    assert.same({ nil, "not a string" }, { time.duration(3600) })
  end)

  it("gives the same answer from its memo", function()
    for _ = 1, 600 do assert.equal(1795824000, time.parse("2026-11-28T08:00:00+08:00")) end
    for i = 1, 600 do assert.equal(1795824000 + i, time.parse(time.beijing(1795824000 + i))) end
  end)
end)

describe("quan.url", function()
  it("percent-encodes all but the unreserved bytes, upper-case hex", function()
    assert.equal("AbZ09-._~", url.encode("AbZ09-._~"))
    assert.equal("a%2Bb%20c%2F%3F%26%3D%25", url.encode("a+b c/?&=%"))
    assert.equal("%E5%88%B8%00%FF", url.encode("券\0\255"))
  end)

  it("decodes %XX and reads + as a space", function()
    for _, s in ipairs { "", "plain", "a+b c/?&=%", "券\0\255", "%zz stays" } do
      assert.equal(s, url.decode(url.encode(s)))
    end
    assert.equal("a b", url.decode("a+b"))
    assert.equal("%zz", url.decode("%zz"))
    assert.equal("%", url.decode("%25"))
  end)

  it("reads a query as a server does", function()
    for _, c in ipairs {
      { nil, {} },
      { "", {} },
      { "a=1&b=2", { a = "1", b = "2" } },
      { "a=1&a=2", { a = "2" } },
      { "a=b=c", { a = "b=c" } },
      { "flag&x=", { flag = "", x = "" } },
      { "=v", { [""] = "v" } },
      { "&&a=1&&", { a = "1" } },
      { "k%20y=v+w&t=2026-11-28T08%3A00%3A00%2B08%3A00", { ["k y"] = "v w", t = "2026-11-28T08:00:00+08:00" } },
    } do
      assert.same(c[2], url.query(c[1]))
    end
  end)

  it("splits a target into its path and query", function()
    local path, q = url.split("/v3/x/%E5%88%B8?a=1")
    assert.equal("/v3/x/%E5%88%B8", path)
    assert.same({ a = "1" }, q)
    path, q = url.split("/v3/x")
    assert.equal("/v3/x", path)
    assert.same({}, q)
  end)
end)

describe("quan.text", function()
  it("measures terminal columns", function()
    for _, c in ipairs {
      { "abc", 3 }, { "满减", 4 }, { "ｆｕｌｌ", 8 }, { "e\u{301}", 1 }, { "\27[32mab\27[0m", 2 },
      { "한글", 4 }, { "满\255减", 5 }, { "", 0 }, { "🎉", 2 }, { "a\tb", 2 },
    } do
      assert.equal(c[2], text.width(c[1]), c[1])
    end
    assert.equal(2, text.charwidth(0x6EE1))
    assert.equal(0, text.charwidth(0x301))
    assert.equal(1, text.charwidth(0x41))
  end)

  it("applies WeChat Pay's Chinese-characters-or-letters limit", function()
    for _, c in ipairs {
      { "", true }, { ("a"):rep(20), true }, { ("a"):rep(21), false },
      { ("满"):rep(9), true }, { ("满"):rep(10), false },
      { ("满"):rep(8) .. "a", true },      -- 8 * 20 + 9 = 169 <= 180
      { ("满"):rep(8) .. "ab", true },     -- 178
      { ("满"):rep(8) .. "abc", false },   -- 187
      { "é" .. ("a"):rep(18), false },     -- é weighs as a Chinese character: 20 + 162
      { "\255", false },                   -- not UTF-8
    } do
      assert.equal(c[2], text.fits(c[1], 9, 20), c[1])
    end
  end)
end)

describe("the core helpers", function()
  it("load nothing and add no globals", function()
    local out = sh.run(sh.quan .. [[ -e 'local g, m = {}, {}
      for k in pairs(_G) do g[k] = true end
      for k in pairs(package.loaded) do m[k] = true end
      local helpers = { ["quan.time"] = true, ["quan.url"] = true, ["quan.text"] = true, ["quan.suggest"] = true,
        ["quan.path"] = true }
      for name in pairs(helpers) do require(name) end
      helpers["quan.os"] = true -- the native quan.path asks for the current directory
      for k in pairs(_G) do if not g[k] then print("global", k) end end
      for k in pairs(package.loaded) do if not m[k] and not helpers[k] then print("loaded", k) end end']])
    assert.equal("", out)
  end)

  for i in ipairs(md.blocks("docs/helpers.md")) do
    it("docs/helpers.md runs example " .. i, function() md.run("docs/helpers.md", i) end)
  end
end)
