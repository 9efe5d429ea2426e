-- Specs of quan.batch.retry: how an answer is judged, and the backoff.
local retry = require "quan.batch.retry"

describe("quan.batch.retry", function()
  local function E(t) return t end

  it("classifies answers: retry transport, 429, 5xx; never a business 4xx", function()
    local cases = {
      { { status = 200, json = { coupon_id = "1" } }, nil, "ok" },
      { nil, E { kind = "network", code = "timeout", message = "timed out" }, "retry", "timeout" },
      { nil, "connection reset", "retry", "NETWORK" },
      { nil, E { kind = "http", status = 429, code = "FREQUENCY_LIMITED" }, "retry", "FREQUENCY_LIMITED" },
      { nil, E { kind = "http", status = 500, code = "SYSTEM_ERROR" }, "retry", "SYSTEM_ERROR" },
      { nil, E { kind = "http", status = 503 }, "retry", "HTTP_503" },
      { nil, E { kind = "verify", code = "bad_signature", message = "x" }, "retry", "VERIFY" },
      { nil, E { kind = "http", status = 403, code = "REQUEST_BLOCKED" }, "refuse", "REQUEST_BLOCKED" },
      { nil, E { kind = "http", status = 403, code = "USER_AL_GET_COUPON" }, "refuse", "USER_AL_GET_COUPON" },
      { nil, E { kind = "http", status = 403, code = "RULE_LIMIT" }, "refuse", "RULE_LIMIT" },
      { nil, E { kind = "http", status = 400, code = "PARAM_ERROR" }, "refuse", "PARAM_ERROR" },
      { nil, E { kind = "http", status = 400, code = "INVALID_REQUEST", message = "openid与appid不匹配" }, "refuse", "INVALID_REQUEST" },
      { nil, E { kind = "http", status = 400, code = "INVALID_REQUEST",
                 body = '{"code":"INVALID_REQUEST","message":"活动已结束或未激活"}' }, "stop", "INVALID_REQUEST" },
      { nil, E { kind = "http", status = 403, code = "NOT_ENOUGH" }, "stop", "NOT_ENOUGH" },
      { nil, E { kind = "http", status = 404, code = "RESOURCE_NOT_EXISTS" }, "stop", "RESOURCE_NOT_EXISTS" },
      { nil, E { kind = "http", status = 401, code = "SIGN_ERROR" }, "stop", "SIGN_ERROR" },
      -- a 401 stops, whatever its message: quan.http never resends a body,
      -- so a send is never replayed with its nonce (docs/http.md)
      { nil, E { kind = "http", status = 401, code = "SIGN_ERROR",
                 body = '{"code":"SIGN_ERROR","message":"重复的请求 (nonce_str was already used)"}' }, "stop", "SIGN_ERROR" },
      { nil, E { kind = "http", status = 400, code = "INVALID_REQUEST",
                 message = "POST /v3/x: INVALID_REQUEST: the activity has ended or is not activated (stock status paused)" },
        "stop", "INVALID_REQUEST" },
      { nil, E { kind = "config", message = "no key" }, "stop", "CONFIG" },
      { nil, E { kind = "http", status = 403, code = "HTTP_403", message = "<html>denied by proxy</html>" },
        "stop", "HTTP_403" },
      { { status = 404, body = "not found" }, nil, "stop", "HTTP_404" },
      { nil, E { kind = "validation", message = "bad" }, "refuse", "VALIDATION" },
      { { status = 403, json = { code = "NOT_ENOUGH", message = "no budget" } }, nil, "stop", "NOT_ENOUGH" },
    }
    for i, c in ipairs(cases) do
      local action, code = retry.classify(c[1], c[2])
      assert.equal(c[3], action, "case " .. i)
      if c[4] then assert.equal(c[4], code, "case " .. i) end
    end
  end)

  it("backs off exponentially with equal jitter, capped", function()
    local lo = retry.policy { base = 1, factor = 3, max = 30, attempts = 6, random = function() return 0 end }
    local hi = retry.policy { base = 1, factor = 3, max = 30, attempts = 6, random = function() return 1 end }
    local expect = { 1, 3, 9, 27, 30 }
    for failed = 1, 5 do
      assert.near(expect[failed] / 2, lo:delay(failed), 1e-9)
      assert.near(expect[failed], hi:delay(failed), 1e-9)
    end
    assert.is_nil(lo:delay(6)) -- six tries made: no more
    local p = retry.policy { base = 0.01, attempts = 3 }
    for _ = 1, 100 do
      local d = p:delay(1)
      assert.is_true(d >= 0.005 and d <= 0.01)
    end
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() retry.policy { attempts = 0 } end, "retry.policy: attempts must be an integer >= 1")
    assert.has_error(function() retry.policy { base = -1 } end, "retry.policy: base must be a number >= 0")
    assert.has_error(function() retry.policy { wat = 1 } end, "retry.policy: unknown option 'wat'")
  end)
end)
