-- Specs of quan.batch.backoff: rows waiting for their retry, earliest first.
local backoff = require "quan.batch.backoff"

describe("quan.batch.backoff", function()
  it("gives back the earliest retry, when due or whatever its time", function()
    local b = backoff.new(3)
    assert.is_nil(b:pop())
    assert.is_nil(b:next_due())
    b:add({ key = "late" }, 30)
    b:add({ key = "soon" }, 10)
    b:add({ key = "mid" }, 20)
    assert.equal(3, b:count())
    assert.equal(10, b:next_due())
    assert.is_nil(b:pop(5)) -- nothing due at 5
    assert.equal("soon", b:pop(10).key)
    assert.equal(20, b:next_due())
    assert.equal("mid", b:pop().key) -- not due yet, but the earliest
    assert.equal("late", b:pop(100).key)
    assert.equal(0, b:count())
  end)

  it("is full at its limit", function()
    local b = backoff.new(2)
    b:add({}, 1)
    assert.is_false(b:full())
    local item = { key = "k" }
    b:add(item, 2)
    assert.equal(2, item.due)
    assert.is_true(b:full())
    b:pop()
    assert.is_false(b:full())
  end)

  it("raises on a bad limit", function()
    assert.has_error(function() backoff.new(0) end, "backoff.new: limit must be an integer >= 1")
    assert.has_error(function() backoff.new(1.5) end, "backoff.new: limit must be an integer >= 1")
  end)
end)
