-- docs/batches.md as a user follows it: the quick start on a persistent
-- sandbox, run as written; `make install` and the installed `quan send` from
-- a folder with no source tree, under the crontab of the page; the systemd
-- units of the page (systemd-analyze verify, where it is installed); and
-- the page's Lua examples.
local sh = require "tests.support.sh"
local S = require "tests.support.batchsbx"
local md = require "tests.support.mdexamples"
local qos = require "quan.os"

local PAGE = "docs/batches.md"

-- section(text, heading) -> the text of the "## heading" section
local function section(text, heading)
  local start = assert(text:find("\n## " .. heading .. "\n", 1, true), heading)
  local stop = text:find("\n## ", start + 1, true) or #text
  return text:sub(start, stop)
end

-- fenced(text, lang) -> the bodies of the ```lang blocks of text, in order
local function fenced(text, lang)
  local out = {}
  for body in text:gmatch("\n```" .. lang .. "\n(.-)\n```") do out[#out + 1] = body .. "\n" end
  return out
end

-- bin_with_quan(dir) -> a folder holding `quan` (the binary under test)
local function bin_with_quan(dir)
  local bin = dir .. "/bin"
  assert(qos.mkdir(bin))
  assert(os.execute(("ln -s %s %s/quan"):format(sh.quote(sh.quan), sh.quote(bin))))
  return bin
end

describe("docs/batches.md", function()
  it("has a quick start that works as written on a persistent sandbox", function()
    local blocks = fenced(section(sh.read(PAGE), "Quick start"), "sh")
    assert.equal(1, #blocks)
    local dir = sh.tmpdir()
    local bin = bin_with_quan(dir)
    -- as written; the trap only cleans up when a step fails before the page's own kill
    local script = sh.write(dir .. "/quick.sh", "trap '[ -n \"$sandbox\" ] && kill $sandbox 2>/dev/null' EXIT\n"
      .. blocks[1])
    local out, err, code = sh.run(("cd %s && env -u QUAN_CONFIG PATH=%s:\"$PATH\" sh -e %s"):format(
      sh.quote(dir), sh.quote(bin), sh.quote(script)))
    assert.equal(0, code, out .. err)
    assert.matches("users with one coupon: 200, with none: 0, with more: 0\n$", out)
    assert.matches("\n  sent                200\n", err)
    assert.matches("exit 0 %(all done%)", err)
  end)

  describe("installed", function()
    local h
    setup(function() h = S.start() end)
    teardown(function() if h then h:stop() end end)

    it("make install puts a quan whose send runs from any folder, under the crontab of the page", function()
      local prefix = sh.tmpdir()
      local build = sh.quan:match("^(.*)/[^/]+$")
      local out, err, code = sh.run(("make -s install PREFIX=%s BUILD=%s"):format(sh.quote(prefix), sh.quote(build)))
      assert.equal(0, code, out .. err)
      local quan = prefix .. "/bin/quan"
      assert.equal("file", qos.stat(quan).kind)
      -- a folder with no source tree: /srv/coupons of the page
      local srv = sh.tmpdir()
      assert(qos.mkdir(srv .. "/journals"))
      assert(qos.mkdir(srv .. "/log"))
      local stock = S.stock(h, 100)
      S.users(srv .. "/users.csv", 40, "oCron")
      out, err, code = sh.run(("cd %s && %s send --help"):format(sh.quote(srv), sh.quote(quan)))
      assert.equal(0, code, err)
      assert.matches("^usage: quan send", out)
      -- the crontab: its variables, and the command of its line
      local crontab = fenced(section(sh.read(PAGE), "Running it every night"), "cron")
      assert.equal(1, #crontab)
      local env, command = {}, nil
      for line in crontab[1]:gmatch("[^\n]+") do
        local name, value = line:match("^([%w_]+)=(.*)$")
        if name then env[name] = value
        elseif not line:match("^#") then
          command = assert(line:match("^%S+ %S+ %S+ %S+ %S+ (.*)$"), line)
        end
      end
      assert.truthy(command)
      assert.truthy(env.PATH:find("/usr/local/bin", 1, true))
      -- cron's own rules: "\%" is a "%"; the page's folder, stock and profile are this test's
      command = command:gsub("\\%%", "%%"):gsub("/srv/coupons", srv):gsub("9856000", stock)
      local mail = sh.write(srv .. "/mail", "#!/bin/sh\n{ echo \"$*\"; cat; } >> " .. sh.quote(srv .. "/mailed") .. "\n")
      assert(qos.chmod(mail, 493))
      local path = env.PATH:gsub("/usr/local/bin", prefix .. "/bin") .. ":" .. srv
      local function cron()
        return sh.run(("cd / && env -i HOME=%s PATH=%s QUAN_PROFILE=%s QUAN_CONFIG=%s /bin/sh -c %s"):format(
          sh.quote(srv), sh.quote(path), env.QUAN_PROFILE == "production" and "sandbox" or "?",
          sh.quote(h.config_path), sh.quote(command)))
      end
      out, err, code = cron()
      assert.equal(0, code, out .. err)
      assert.is_nil(io.open(srv .. "/mailed"), "nothing mailed")
      local journal = srv .. "/journals/" .. os.date("%F") .. ".journal"
      local c = require("tests.support.batch").counts_of(journal)
      assert.equal(40, c.sent)
      assert.equal(40, S.coupons(h, stock).total)
      local events = require("tests.support.batch").events_of(srv .. "/log/send.jsonl")
      assert.equal("summary", events[#events].event)
      -- an earlier night's run still at work holds the night lock: exit 6, mailed
      local held = assert(qos.lock(srv .. "/journals/night.lock"))
      out, err, code = cron()
      held:close()
      assert.equal(0, code, out .. err) -- the line's `|| echo ... | mail` ends well
      assert.matches("^%-s coupons ops@example.com\nquan send exit 6\n$", sh.read(srv .. "/mailed"))
      -- the same night again: every row already done
      out, err, code = cron()
      assert.equal(0, code, out .. err)
      events = require("tests.support.batch").events_of(srv .. "/log/send.jsonl")
      assert.equal(40, events[#events].skipped)
      assert.equal(40, S.coupons(h, stock).total)
    end)
  end)

  it("has systemd units that systemd-analyze verify accepts", function()
    local ini = fenced(section(sh.read(PAGE), "Running it every night"), "ini")
    assert.equal(2, #ini)
    local dir = sh.tmpdir()
    local names = {}
    for i, unit in ipairs(ini) do
      names[i] = assert(unit:match("^# (send%-coupons%.%a+)\n"), "the unit's first line names its file")
      sh.write(dir .. "/" .. names[i], unit)
    end
    assert.same({ "send-coupons.service", "send-coupons.timer" }, names)
    local _, _, present = sh.run("command -v systemd-analyze")
    if present ~= 0 then
      pending("systemd-analyze is not installed: the units were not verified")
      return
    end
    local out, err, code = sh.run(("cd %s && systemd-analyze verify ./send-coupons.service ./send-coupons.timer")
      :format(sh.quote(dir)))
    assert.equal(0, code, out .. err)
    assert.equal("", out .. err)
    -- the check can fail: a unit with a mistake is reported
    sh.write(dir .. "/bad.service", ini[1]:gsub("Type=oneshot", "Type=oneshoot"))
    out, err = sh.run(("cd %s && systemd-analyze verify ./bad.service"):format(sh.quote(dir)))
    assert.matches("oneshoot", out .. err)
  end)

  it("runs its Lua examples", function()
    assert.equal(2, #md.blocks(PAGE))
    md.run(PAGE, 1)
    md.run(PAGE, 2)
  end)
end)
