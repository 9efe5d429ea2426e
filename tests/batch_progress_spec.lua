-- Specs of quan.batch.progress: what the operator sees (durations, the
-- bar, JSON and text lines, the summary).
local progress = require "quan.batch.progress"

describe("quan.batch.progress", function()
  it("formats durations, bars and JSON lines", function()
    assert.equal("0:05", progress.duration(4.6))
    assert.equal("2:03", progress.duration(123))
    assert.equal("1:02:03", progress.duration(3723))
    assert.equal("?", progress.duration(nil))
    assert.equal("?", progress.duration(math.huge))
    local line = progress.bar_line({ done = 250, total = 1000, rate = 400, eta = 1.9, failed = 2 }, 80)
    assert.is_true(#line <= 80)
    assert.matches("25% 250/1000  400/s ETA 0:02 failed 2", line, nil, true)
    assert.matches("^%[#+%.+%]", line)
    assert.matches("%?", progress.bar_line({ done = 5, rate = 1 }, 60))
    assert.equal('{"ts":1,"event":"x","batch":"b","row":2,"key":"k","a":1,"z":"s"}',
      progress.json_line { z = "s", a = 1, key = "k", row = 2, batch = "b", event = "x", ts = 1.0 })
    assert.equal('refused row=3 code=NOT_ENOUGH message="no budget"',
      progress.text_line { event = "refused", row = 3, code = "NOT_ENOUGH", message = "no budget" })
  end)

  it("shows rows waiting for a retry, the time of the next, and an ETA no sooner than it", function()
    local now, out = 100, {}
    local r = progress.new { format = "json", clock = function() return now end, wallclock = function() return 0 end,
                             out = { write = function(_, ...) out[#out + 1] = table.concat { ... } end,
                                     flush = function() end } }
    now = 110 -- 1999 of 2000 done; the last row waits for its retry at 130
    r:tick({ done = 1999, total = 2000, sent = 1999, refused = 0, failed = 0, skipped = 0, retrying = 1,
             next_retry = 130 }, true)
    local ev = require("cjson").decode(out[1])
    assert.same({ 1, 20, 20 }, { ev.retrying, ev.next_retry_s, ev.eta_s })
    local line = progress.bar_line({ done = 1999, total = 2000, rate = 0, eta = 20, retrying = 1, next_retry = 20 }, 100)
    assert.matches("ETA 0:20 retrying 1 (next in 0:20)", line, nil, true)
  end)

  it("picks the bar on a terminal and JSON lines elsewhere", function()
    assert.equal("bar", progress.format_for(nil, true))
    assert.equal("json", progress.format_for(nil, false))
    assert.equal("json", progress.format_for("json", true))
    assert.equal("text", progress.format_for("text", false))
  end)

  it("writes a summary that names refusals by code", function()
    local s = progress.summary_text { batch = "b1", rows = 10, sent = 6, skipped = 1, refused = 3,
      refused_by_code = { REQUEST_BLOCKED = 2, USER_AL_GET_COUPON = 1 }, failed = 0,
      not_attempted = 0, elapsed = 2, attempted = 9, exit_code = 3, exit_reason = "some refused" }
    assert.matches("refused %s+3  %(REQUEST_BLOCKED 2, USER_AL_GET_COUPON 1%)", s)
    assert.matches("exit 3 %(some refused%)", s)
    assert.matches("^batch b1: 10 rows in 2%.0 s", s)
    local one = progress.summary_text { batch = "b2", rows = 1, sent = 1, elapsed = 1, attempted = 1, exit_code = 0 }
    assert.matches("^batch b2: 1 row in 1%.0 s %(1 rows/s%)", one)
  end)
end)
