-- scripts/bench/repl.lua: time from exec to the REPL's first prompt.
--
-- Each run starts `quan` on a pseudo-terminal (util-linux `script`), so the
-- REPL takes its interactive path (libedit, history file, completer, prompt
-- with the profile), and reads the pty's output until the prompt arrives.
-- The same harness running `printf PROMPT` instead gives the harness's own
-- cost (sh + script + pty), which is subtracted. Medians of RUNS runs.
--
--   build/quan scripts/bench/repl.lua [path/to/quan]
--
-- Prints:
--   repl.startup_ms: N ms          exec -> first prompt, harness subtracted
--   repl.startup_raw_ms: N ms      the same, harness included
--   repl.harness_ms: N ms          sh + script + pty printing a prompt
--   repl.plain_ms: N ms            `quan -e` printing the prompt, harness subtracted
--   repl.vs_plain_raw: R x         raw REPL startup / raw `quan -e` (same harness)
local qos = require "quan.os"

local RUNS = tonumber(os.getenv("RUNS") or "") or 15
local quan = arg[1] or qos.exe() or "build/quan"
local PROMPT = "quan[sandbox]> "

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local home = assert(qos.mkdtemp("/tmp/quan-bench-repl-"))

-- one(cmd, marker) -> ms from spawning until marker appears on the pty
local function one(cmd, marker)
  -- Ctrl-D until the program has gone (a ^D typed before libedit switched the
  -- terminal to raw mode may be lost); the loop ends on SIGPIPE
  local line = ("(while :; do sleep 0.1; printf '\\004' || exit; done) 2>/dev/null | env -u XDG_STATE_HOME -u QUAN_PROFILE -u QUAN_CONFIG "
    .. "HOME=%s NO_COLOR=1 TERM=xterm script -qfec %s /dev/null"):format(q(home), q(cmd))
  local t0 = qos.now()
  local p = assert(io.popen(line, "r"))
  local seen, t = "", nil
  while true do
    local c = p:read(1)
    if not c then break end
    seen = seen .. c
    if not t and seen:find(marker, 1, true) then t = qos.now() end
  end
  p:close()
  assert(t, "marker not seen; output: " .. seen)
  return (t - t0) * 1000
end

local function median(cmd, marker)
  local xs = {}
  one(cmd, marker) -- warm the page cache
  for i = 1, RUNS do xs[i] = one(cmd, marker) end
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local raw = median(quan, PROMPT)
local harness = median("printf " .. q(PROMPT), PROMPT)
local plain = median(quan .. " -e " .. q("io.write('" .. PROMPT .. "')"), PROMPT)

os.execute("rm -rf " .. q(home))

print(("repl.startup_ms: %.1f ms"):format(raw - harness))
print(("repl.startup_raw_ms: %.1f ms"):format(raw))
print(("repl.harness_ms: %.1f ms"):format(harness))
print(("repl.plain_ms: %.1f ms"):format(plain - harness))
print(("repl.vs_plain_raw: %.2f x"):format(raw / plain))
