-- docs/batches.md as a user follows it: the quick start on a persistent
-- sandbox, run as written; `make install` and the installed `quan send` from
-- a folder with no source tree, under the crontab of the page; the systemd
-- units of the page (systemd-analyze verify, where it is installed); and
-- the page's Lua examples; the log lines against the page's schema.
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
      -- only when the binary is up to date, so the spec never rebuilds it
      -- (with other flags than it was built with: make check's)
      if select(3, sh.run(("make -s -q all BUILD=%s"):format(sh.quote(build)))) ~= 0 then
        return pending("build is not up to date")
      end
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

  it("logs JSON lines as its schema says: the fields of each event, their types and their order", function()
    local page = sh.read(PAGE)
    local part = assert(page:match("\n### The log lines, as a schema\n(.-)\nThe text summary"), "schema not found")
    -- the table: event -> {name -> "required" | "optional"}, and name -> type
    -- where the table gives one ("`a`, `b` (integers)": a group shares it)
    local schema, types = {}, {}
    local TYPES = { string = "string", integer = "integer", integers = "integer", number = "number",
                    boolean = "boolean", object = "table", ["true"] = "true" }
    for event, column in part:gmatch("\n| `([%a_]+)` | ([^|]*) |") do
      local fields, pending = {}, {}
      for item in (column:gsub("%b()", function(p) return p:gsub(",", ";") end) .. ","):gmatch("%s*(.-),") do
        local name, optional = item:match("^`([%w_]+)`(%??)")
        if name then
          fields[name] = optional == "?" and "optional" or "required"
          pending[#pending + 1] = name
          local word = item:match("%((%a+)")
          if word then -- a plural ("(integers)") types the group before it, a singular its own field
            for _, n in ipairs(word:find("s$") and pending or { name }) do
              types[n] = types[n] or assert(TYPES[word], word)
            end
            pending = {}
          end
        end
      end
      schema[event] = fields
    end
    local summary = assert(part:match("\n`summary` fields: (.-)For a fresh journal"))
    local always, applies = summary:match("^(.-)when they apply:(.*)$")
    schema.summary = {}
    for name in always:gsub("%b()", ""):gmatch("`([%w_]+)`") do schema.summary[name] = "required" end
    for name in applies:gsub("%b()", ""):gmatch("`([%w_]+)`") do schema.summary[name] = "optional" end
    for _, event in ipairs { "start", "progress", "retry", "refused", "failed", "duplicate", "stop", "sent", "error" } do
      assert.truthy(schema[event], "the table has no row for " .. event)
    end
    assert.equal("required", schema.summary.journal_counts)
    assert.equal("optional", schema.summary.stop_code)
    -- a run that draws every event: a retry that passes, one that fails, a
    -- refusal, a duplicate, a stop; then a run that cannot start
    local B = require "tests.support.batch"
    local A = require("tests.support.fakeasync").new { virtual = true }
    local dir = sh.tmpdir()
    local lines = {}
    local out = { write = function(self, ...)
                    for l in table.concat { ... }:gmatch("[^\n]+") do lines[#lines + 1] = l end
                    return self
                  end,
                  flush = function() end }
    local tries = {}
    local function run(input)
      return require("quan.batch").run { input = input, journal = dir .. "/" .. #lines .. ".db", batch_prefix = "B",
        concurrency = 1, async = A, out = out, log_format = "json", rate = 1e6, log_items = true,
        retry = { base = 0.01, attempts = 3 },
        send = function(item)
          A.sleep(0.01)
          tries[item.key] = (tries[item.key] or 0) + 1
          if item.key == "o00002" then return B.api_error(403, "REQUEST_BLOCKED", "blocked") end
          if item.key == "o00003" then return B.api_error(500, "SYSTEM_ERROR", "down") end
          if item.key == "o00004" and tries[item.key] == 1 then return B.api_error(429, "FREQUENCY_LIMITED") end
          if item.key == "o00006" then return B.api_error(403, "NOT_ENOUGH", "no budget") end
          return B.ok(item)
        end }
    end
    assert.truthy(run(B.users_csv(dir, 8, { "o00001,again" })))
    assert.is_nil(run(dir .. "/none.csv"))
    -- every line against the table (wechatpay.json keeps 9 an integer, 9.5 a float)
    local json = require "wechatpay.json"
    local seen = {}
    for _, line in ipairs(lines) do
      local e = json.decode(line)
      local fields = assert(schema[e.event], "an event the page does not list: " .. line)
      seen[e.event] = true
      assert.equal("number", type(e.ts), line)
      assert.is_true(e.batch ~= nil or e.event == "error", line)
      -- the order: ts, event, batch, then row and key, then the rest sorted
      local keys, rest = {}, {}
      for key in line:gsub('\\.', ""):gsub("%b{}", function(o) return o:sub(2, -2):gsub("%b{}", "{}") end)
          :gmatch('"([%w_]+)":') do
        keys[#keys + 1] = key
        if key ~= "ts" and key ~= "event" and key ~= "batch" and key ~= "row" and key ~= "key" then
          rest[#rest + 1] = key
        end
      end
      local sorted = { table.unpack(rest) }
      table.sort(sorted)
      local head = { "ts", "event" }
      if e.batch ~= nil then head[#head + 1] = "batch" end
      if e.row ~= nil then head[#head + 1] = "row" end
      if e.key ~= nil then head[#head + 1] = "key" end
      table.move(sorted, 1, #sorted, #head + 1, head)
      assert.same(head, keys, line)
      for name, value in pairs(e) do
        if name ~= "ts" and name ~= "event" and name ~= "batch" then
          assert.truthy(fields[name], e.event .. ": a field the page does not list: " .. name)
          local want = types[name]
          if want and e.event ~= "summary" then
            local got = want == "integer" and math.type(value) or want == "true" and tostring(value == true)
              or type(value)
            assert.equal(want == "true" and "true" or want, got, e.event .. "." .. name)
          end
        end
      end
      for name, how in pairs(fields) do
        if how == "required" then assert.is_not_nil(e[name], e.event .. ": no " .. name .. " in " .. line) end
      end
    end
    for _, event in ipairs { "start", "progress", "retry", "refused", "failed", "duplicate", "stop", "sent", "error",
                             "summary" } do
      assert.truthy(seen[event], "the run drew no " .. event)
    end
  end)

  it("runs its Lua examples", function()
    assert.equal(2, #md.blocks(PAGE))
    md.run(PAGE, 1)
    md.run(PAGE, 2)
  end)
end)
