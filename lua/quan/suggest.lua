-- quan.suggest: "did you mean ...?" for a name looked up among known names
-- (a schema field, an enum value, a command, an option, a profile key, an
-- API path segment). Core helper: it requires nothing, so any layer may use it.
--
--   suggest.distance(a, b)          -> edit distance, capped at 3 ("far")
--   suggest.closest(word, names)    -> the known name nearest to word, or nil
--                                      when none is within 2 edits
--   suggest.nearest(word, names[, n]) -> up to n (3) known names within 2
--                                      edits, nearest first
--   suggest.hint(word, names)       -> " (did you mean x?)" or ""
--
-- Two spellings of one name count as the same name (distance 0): another
-- case (mchId, mchid) or another way of joining words (privateKey,
-- private_key, private-key).
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

-- folded(s) -> s in upper case without the characters that join words
-- ("private_key", "privateKey", "Private-Key" -> "PRIVATEKEY")
local function folded(s)
  return (s:gsub("[_%-]", ""):upper())
end

-- how far word is from name: 0 for the same name spelt another way
local function away(word, name)
  if folded(name) == folded(word) then return 0 end
  return M.distance(word, name)
end

-- nearest(word, names[, n]) -> array of at most n (default 3) names of the
-- array `names` within 2 edits of word, nearest first (ties in the order of
-- names); word itself is never suggested; {} when word is not a string
function M.nearest(word, names, n)
  if type(word) ~= "string" then return {} end
  local found = {}
  for i, name in ipairs(names) do
    name = tostring(name)
    if name ~= word then
      local d = away(word, name)
      if d < 3 then found[#found + 1] = { name = name, d = d, i = i } end
    end
  end
  table.sort(found, function(x, y)
    if x.d ~= y.d then return x.d < y.d end
    return x.i < y.i
  end)
  local out = {}
  for k = 1, math.min(#found, n or 3) do out[k] = found[k].name end
  return out
end

-- closest(word, names) -> the name of the array `names` nearest to word: the
-- same name spelt another way first, else the first one within 2 edits with
-- the fewest; nil when word is not a string or nothing is that close
function M.closest(word, names)
  return M.nearest(word, names, 1)[1]
end

-- hint(word, names) -> " (did you mean x?)", " (did you mean x or y?)" or ""
function M.hint(word, names)
  local list = M.nearest(word, names, 2)
  if #list == 0 then return "" end
  return " (did you mean " .. table.concat(list, " or ") .. "?)"
end

return M
