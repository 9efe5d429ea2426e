-- Specs of quan.batch.recorder: outcomes grouped into journal commits, and
-- kept when a commit fails.
local sh = require "tests.support.sh"
local B = require "tests.support.batch"

local journal = require "quan.batch.journal"
local recorder = require "quan.batch.recorder"

-- claimed(dir, keys) -> an open journal with keys claimed (in_flight)
local function claimed(dir, keys)
  local j = assert(journal.open(dir .. "/j.db", { batch_prefix = "b" }))
  j:transaction(function()
    for i, k in ipairs(keys) do assert.equal("new", j:claim(k, i, "n" .. i)) end
  end)
  return j
end

describe("quan.batch.recorder", function()
  it("says when a commit is due (size), commits the pending outcomes with more writes, in one transaction", function()
    local dir = sh.tmpdir()
    local j = claimed(dir, { "o1", "o2", "o3" })
    local r = recorder.new(j, { size = 2, interval = 3600 })
    assert.is_false(r:add { key = "o1", row = 1, state = "sent", attempts = 1, result = "C1" })
    assert.is_false(r:overdue(require("quan.os").now()))
    assert.is_true(r:add { key = "o2", row = 2, state = "refused", attempts = 1, code = "RULE_LIMIT", message = "no" })
    local list = r:commit(function() j:record("o3", "failed", 2, nil, "SYSTEM_ERROR", "boom") end)
    assert.equal(2, #list)
    assert.equal("o1", list[1].key)
    assert.same({}, r.pending)
    assert.is_nil(r.since)
    j:close()
    local c = B.counts_of(dir .. "/j.db")
    assert.same({ 1, 1, 1, 0 }, { c.sent, c.refused, c.failed, c.in_flight })
  end)

  it("is overdue once the oldest outcome has waited the interval", function()
    local j = claimed(sh.tmpdir(), { "o1" })
    local r = recorder.new(j, { size = 100, interval = 0 })
    assert.is_false(r:overdue(0))
    assert.is_true(r:add { key = "o1", row = 1, state = "sent", attempts = 1 })
    assert.is_true(r:overdue(r.since))
    j:close()
  end)

  it("keeps the outcomes pending when the commit fails, and writes nothing of it", function()
    local dir = sh.tmpdir()
    local j = claimed(dir, { "o1" })
    local r = recorder.new(j, { size = 10, interval = 3600 })
    r:add { key = "o1", row = 1, state = "sent", attempts = 1, result = "C1" }
    local list, err = r:commit(function() error("disk full", 0) end)
    assert.is_nil(list)
    assert.equal("disk full", err)
    assert.equal(1, #r.pending)
    local ok, werr = r:write(function() error("again", 0) end)
    assert.is_false(ok)
    assert.equal("again", werr)
    j:close()
    assert.equal(1, B.counts_of(dir .. "/j.db").in_flight)
  end)
end)
