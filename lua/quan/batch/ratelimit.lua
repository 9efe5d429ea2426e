-- quan.batch.ratelimit: a token bucket that hands out reservations.
--
-- take() never blocks: it reserves a token and says how long the caller
-- must wait before using it (0 when one is free now). Tokens refill at
-- `rate` per second up to `burst`; when the bucket is empty the balance goes
-- negative, so concurrent callers queue up at exactly 1/rate apart and the
-- long-run rate never exceeds `rate` (plus the initial burst).
--
--   local bucket = ratelimit.new{ rate = 400, burst = 8 }
--   local wait = bucket:take()
--   if wait > 0 then async.sleep(wait) end
local M = {}

local Bucket = {}
Bucket.__index = Bucket

-- new{rate = per second, burst = tokens (default max(1, rate / 10): in any
--     one second at most 1.1 x rate calls start),
--     clock = function() -> seconds (default quan.os.now)} -> bucket
function M.new(opts)
  if type(opts) ~= "table" then error("ratelimit.new: opts must be a table", 2) end
  for k in pairs(opts) do
    if k ~= "rate" and k ~= "burst" and k ~= "clock" then
      error("ratelimit.new: unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  local rate = opts.rate
  if type(rate) ~= "number" or not (rate > 0) or rate == math.huge then
    error("ratelimit.new: rate must be a positive number", 2)
  end
  local burst = opts.burst or math.max(1, rate / 10)
  if type(burst) ~= "number" or not (burst >= 1) then
    error("ratelimit.new: burst must be a number >= 1", 2)
  end
  local clock = opts.clock or require("quan.os").now
  if type(clock) ~= "function" then error("ratelimit.new: clock must be a function", 2) end
  return setmetatable({ rate = rate, burst = burst, clock = clock,
                        tokens = burst, last = clock() }, Bucket)
end

-- bucket:take([n = 1]) -> seconds to wait before using the n tokens reserved
function Bucket:take(n)
  n = n or 1
  local now = self.clock()
  local tokens = self.tokens + (now - self.last) * self.rate
  if tokens > self.burst then tokens = self.burst end
  self.last = now
  tokens = tokens - n
  self.tokens = tokens
  if tokens >= 0 then return 0 end
  return -tokens / self.rate
end


return M
