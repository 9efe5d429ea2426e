-- quan.batch.recorder: the outcomes of a run on their way to its journal.
--
-- Each journal write is a transaction, and one per row would cap a batch at
-- the disk's sync rate, so outcomes wait here (pending) and are committed
-- together: when `size` of them wait, when the oldest has waited `interval`
-- seconds, or with the next claim of rows. A row counts as done only once its
-- outcome is committed; until then the journal holds it in_flight, so a run
-- killed meanwhile sends it again, with the same out_request_no.
local M = {}

local qos = require "quan.os"

local Recorder = {}
Recorder.__index = Recorder

-- new(journal, {size, interval}) -> recorder. Its fields:
--   journal   the open quan.batch.journal
--   pending   outcomes not yet committed: {key, row, state, attempts,
--             result, code, message, answered}, in the order they came
--   since     when the oldest pending outcome came (nil: none pending)
--   size, interval   when a commit is due
function M.new(journal, opts)
  return setmetatable({ journal = journal, pending = {}, since = nil,
                        size = opts.size, interval = opts.interval }, Recorder)
end

-- recorder:add(outcome) -> true when a commit is due
function Recorder:add(outcome)
  self.pending[#self.pending + 1] = outcome
  self.since = self.since or qos.now()
  return #self.pending >= self.size or qos.now() - self.since >= self.interval
end

-- recorder:overdue(now) -> true when the oldest pending outcome has waited
-- interval seconds or more
function Recorder:overdue(now)
  return self.since ~= nil and now - self.since >= self.interval
end

-- recorder:write(fn) -> true | false, error: runs fn in one journal
-- transaction; error is what failed: a journal that cannot be written
-- (raised by fn or the transaction, or a transaction that returns its
-- failure), or an interrupt
function Recorder:write(fn)
  local ok, committed, err = pcall(self.journal.transaction, self.journal, function() fn(); return true end)
  if ok and committed then return true end
  return false, ok and err or committed
end

-- recorder:commit([fn]) -> the outcomes committed | nil, error: writes the
-- pending outcomes and runs fn (the claim of more rows) in one transaction.
-- Committed, they leave pending; on an error they stay pending (and
-- in_flight in the journal).
function Recorder:commit(fn)
  local list, journal = self.pending, self.journal
  local ok, err = self:write(function()
    for _, p in ipairs(list) do
      journal:record(p.key, p.state, p.attempts, p.result, p.code, p.message, p.answered)
    end
    if fn then fn() end
  end)
  if not ok then return nil, err end
  self.pending, self.since = {}, nil
  return list
end

return M
