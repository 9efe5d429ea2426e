-- quan.suggest: "did you mean ...?" for a name looked up among known names
-- (a schema field, an enum value, a command, an option). Core helper: it
-- requires nothing, so any layer may use it.
--
--   suggest.distance(a, b)          -> edit distance, capped at 3 ("far")
--   suggest.closest(word, names)    -> the known name nearest to word, or nil
--                                      when none is within 2 edits
local M = {}

-- distance(a, b) -> Levenshtein distance between two strings (bytes); 3 for
-- anything farther than 2, which is all a suggestion needs to know
function M.distance(a, b)
  local la, lb = #a, #b
  if math.abs(la - lb) > 2 then return 3 end
  local prev = {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    for j = 1, lb do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return math.min(prev[lb], 3)
end

-- closest(word, names) -> the name of the array `names` nearest to word: the
-- same name in another case first, else the first one within 2 edits with
-- the fewest; nil when word is not a string or nothing is that close
function M.closest(word, names)
  if type(word) ~= "string" then return nil end
  local best, best_distance = nil, 3
  for _, name in ipairs(names) do
    name = tostring(name)
    local d = name:upper() == word:upper() and 0 or M.distance(word, name)
    if d < best_distance then best, best_distance = name, d end
  end
  return best
end

return M
