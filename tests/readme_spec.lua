-- The README's main-job command and its example run as written.
local sh = require "tests.support.sh"
local md = require "tests.support.mdexamples"

describe("README", function()
  it("runs the main job on the built-in sandbox and prints stock_id and create_time", function()
    local readme = sh.read("README.md")
    local cmd = readme:match("\n    sh scripts/install%-deps%.sh && make && (build/quan run %-%-sandbox [^\n]+)")
    assert.truthy(cmd, "main-job command not found in README.md")
    local out, err, code = sh.run(cmd:gsub("^build/quan", sh.quan))
    assert.equal(0, code, err)
    assert.matches("^stock_id: %d+\ncreate_time: %d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%+08:00\n$", out)
    assert.matches("sandbox", err)
  end)

  it("shows a test command that is the one CI runs", function()
    assert.matches("sh scripts/install%-deps%.sh && make test", sh.read("README.md"))
    assert.matches("make test", sh.read(".ci/run"))
  end)

  it("has an example that passes quan check, is planned and applied, and then has nothing to do", function()
    local dir = sh.tmpdir()
    local readme = sh.read("README.md")
    local file = readme:match("Save it as `([%w%-_]+%.lua)`")
    assert.equal("double12.lua", file)
    sh.write(dir .. "/" .. file, md.blocks("README.md")[1].code)
    local function quan(args) return sh.run("cd " .. sh.quote(dir) .. " && " .. sh.quote(sh.quan) .. " " .. args) end
    -- checked as of a day before its dates, so the test does not age
    local out, err, code = quan("check --now '2027-11-20 00:00' " .. file)
    assert.equal(0, code, out .. err)
    assert.matches("plan: 3 to create %(¥150,000%.00%), 3 to start", out)
    for _, cmd in ipairs { "plan", "apply" } do -- the commands the README names
      assert.truthy(readme:find("`build/quan " .. cmd .. " " .. file .. "`", 1, true), cmd)
    end
    -- on a sandbox whose business clock reads a day before its dates (so
    -- the test does not age): planned, applied, then nothing to do
    local h = require("tests.support.sandbox").start()
    local ok, why = pcall(function()
      local cfg = "QUAN_CONFIG=" .. sh.quote(h.state .. "/config.lua") .. " "
      out, err, code = quan("sandbox clock --state " .. sh.quote(h.state) .. " '2027-11-20 00:00'")
      assert.equal(0, code, out .. err)
      out, err, code = sh.run("cd " .. sh.quote(dir) .. " && " .. cfg .. sh.quote(sh.quan) .. " plan " .. file)
      assert.equal(3, code, out .. err)
      assert.matches("plan: 3 to create %(¥150,000%.00%), 3 to start", out)
      out, err, code = sh.run("cd " .. sh.quote(dir) .. " && " .. cfg .. sh.quote(sh.quan) .. " apply --yes " .. file)
      assert.equal(0, code, out .. err)
      assert.matches("apply: done: 3 created, 3 started", out)
      out, err, code = sh.run("cd " .. sh.quote(dir) .. " && " .. cfg .. sh.quote(sh.quan) .. " apply --yes " .. file)
      assert.equal(0, code, out .. err)
      assert.matches("apply: nothing to do", out)
    end)
    h:stop()
    assert(ok, why)
  end)
end)

describe("docs", function()
  it("link only to pages that exist", function()
    local pages = { "README.md" }
    for f in io.popen("ls docs/*.md"):lines() do pages[#pages + 1] = f end
    for _, page in ipairs(pages) do
      local dir = page:match("^(.*)/") or "."
      local text = sh.read(page):gsub("```.-```", ""):gsub("`[^`\n]*`", "")
      for target in text:gmatch("%]%(([^)#:]+)[#)]") do
        local f = io.open(dir .. "/" .. target)
        assert.truthy(f, page .. " links to missing " .. target)
        f:close()
      end
    end
  end)
end)
