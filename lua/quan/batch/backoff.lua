-- quan.batch.backoff: the rows of a run waiting out a backoff before their
-- next try.
--
-- A waiting row holds no worker: the workers go on sending other rows
-- meanwhile. The set is bounded (limit): when it is full (the API failing a
-- lot), the engine takes no new rows and waits for the earliest retry
-- instead, so memory stays bounded and a failing API is not fed the whole
-- list.
local M = {}

local Backoff = {}
Backoff.__index = Backoff

-- new(limit) -> an empty set holding at most limit rows before full()
function M.new(limit)
  if math.type(limit) ~= "integer" or limit < 1 then
    error("backoff.new: limit must be an integer >= 1", 2)
  end
  return setmetatable({ items = {}, limit = limit }, Backoff)
end

-- backoff:add(item, due): item waits until due (seconds on quan.os.now's
-- clock), recorded as item.due
function Backoff:add(item, due)
  item.due = due
  self.items[#self.items + 1] = item
end

-- backoff:count() -> rows waiting
function Backoff:count()
  return #self.items
end

-- backoff:full() -> true when no more rows should be taken on
function Backoff:full()
  return #self.items >= self.limit
end

-- earliest(items) -> index of the first item with the smallest due, or nil
local function earliest(items)
  local best
  for i = 1, #items do
    if not best or items[i].due < items[best].due then best = i end
  end
  return best
end

-- backoff:next_due() -> the time of the earliest retry, or nil when none waits
function Backoff:next_due()
  local i = earliest(self.items)
  return i and self.items[i].due
end

-- backoff:pop([now]) -> the item whose retry comes first, removed from the
-- set; with now, only when it is due by then (else nil)
function Backoff:pop(now)
  local items = self.items
  local i = earliest(items)
  if not i or (now and items[i].due > now) then return nil end
  local item = items[i]
  items[i] = items[#items]
  items[#items] = nil
  return item
end

return M
