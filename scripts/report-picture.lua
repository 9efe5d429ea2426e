-- scripts/report-picture.lua: makes docs/report.png, the picture of the page
-- `quan report --html` writes, anew. Runs the walk-through of docs/report.md
-- as written (its files and its shell blocks, in a temporary folder, with
-- this quan first on PATH), then has headless chromium (Debian's package)
-- take a screenshot of the page it wrote, its networking pointed at a dead
-- proxy. Run from the tree's top:
--
--   build/quan scripts/report-picture.lua [OUT.png]
local qos = require "quan.os"
local qpath = require "quan.path"

local out = arg and arg[1] or "docs/report.png"
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function read(path) return assert(qpath.read(path)) end
local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local page = read("docs/report.md")
local section = assert(page:match("\n## A walk%-through on the sandbox\n(.-)\n## "), "no walk-through in docs/report.md")
local dir = assert(qos.mkdtemp("/tmp/quan-report-picture-"))
-- the files it shows (`name`: and a block), then its commands in order
for name, code in section:gmatch("\n`([%w%-_]+%.%a+)`:\n\n```%a+\n(.-)```") do write(dir .. "/" .. name, code) end
local script = {}
for block in section:gsub("\n`[%w%-_]+%.%a+`:\n\n```%a+\n.-```", ""):gmatch("\n```sh\n(.-)```") do
  script[#script + 1] = block
end
write(dir .. "/walk.sh", "set -e\n" .. table.concat(script, "\n"))
assert(os.execute("mkdir " .. q(dir .. "/bin") .. " && ln -s " .. q(qos.exe()) .. " " .. q(dir .. "/bin/quan")))
assert(os.execute("cd " .. q(dir) .. " && PATH=" .. q(dir .. "/bin") .. ":$PATH timeout 300 sh walk.sh >walk.out 2>walk.err"),
  "the walk-through failed: " .. read(dir .. "/walk.err"))
-- the top of the page: the figures, the table and the charts
assert(os.execute("timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
  .. "--disable-component-update --disable-sync --no-first-run --user-data-dir=" .. q(dir .. "/chromium")
  .. " --proxy-server=127.0.0.1:9 --hide-scrollbars --force-device-scale-factor=1 --window-size=1000,2300 "
  .. "--screenshot=" .. q(dir .. "/page.png") .. " " .. q("file://" .. dir .. "/winter.html") .. " >/dev/null 2>&1"),
  "chromium did not take the screenshot")
assert(os.execute("cp " .. q(dir .. "/page.png") .. " " .. q(out)))
print(("%s: %d bytes, the page of %s"):format(out, qos.stat(out).size, dir .. "/winter.html"))
os.execute("rm -rf " .. q(dir))
