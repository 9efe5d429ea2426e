-- Specs of quan.batch.ratelimit: the token bucket, on a clock the spec moves.
local ratelimit = require "quan.batch.ratelimit"

describe("quan.batch.ratelimit", function()
  it("allows the burst at once, then spaces tokens 1/rate apart", function()
    local t = 0
    local b = ratelimit.new { rate = 100, burst = 3, clock = function() return t end }
    assert.equal(0, b:take())
    assert.equal(0, b:take())
    assert.equal(0, b:take())
    assert.near(0.01, b:take(), 1e-9)
    assert.near(0.02, b:take(), 1e-9)
    t = 0.02 -- the two reserved tokens are now due; the bucket is at 0
    assert.near(0.01, b:take(), 1e-9)
    t = 10 -- refills to the burst, no more
    for _ = 1, 3 do assert.equal(0, b:take()) end
    assert.is_true(b:take() > 0)
  end)

  it("never exceeds the rate over a long run", function()
    local t = 0
    local b = ratelimit.new { rate = 400, burst = 8, clock = function() return t end }
    local last = 0
    for _ = 1, 4000 do -- callers that always wait what they are told
      local w = b:take()
      last = t + w
    end
    -- 4000 tokens at 400/s with a burst of 8: the last is due at (4000-8)/400 s
    assert.near((4000 - 8) / 400, last, 1e-6)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() ratelimit.new { rate = 0 } end, "ratelimit.new: rate must be a positive number")
    assert.has_error(function() ratelimit.new { rate = 1, burst = 0.5 } end, "ratelimit.new: burst must be a number >= 1")
    assert.has_error(function() ratelimit.new { rate = 1, x = 1 } end, "ratelimit.new: unknown option 'x'")
  end)
end)
