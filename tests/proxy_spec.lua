-- quan serve behind nginx: the server block of docs/notifications.md, as
-- printed there, run by Debian's nginx in front of a receiver, with the
-- sandbox delivering to it over https. Only the addresses and file names
-- change (the port, the sandbox's certificate, the receiver's address), each
-- replaced where the page has it exactly once: a page that drops one fails
-- here. Without nginx installed the spec says so and checks nothing.
local qos = require "quan.os"
local cjson = require "cjson"
local http = require "quan.http"
local sh = require "tests.support.sh"
local batchsbx = require "tests.support.batchsbx"
local receiver = require "tests.support.receiver"

local wait_until, read = receiver.wait_until, receiver.read

-- the ```nginx block of the page
local function documented_block()
  local page = read("docs/notifications.md")
  local block = page:match("```nginx\n(.-)```")
  assert(block, "docs/notifications.md has no ```nginx block")
  return block
end

-- replace(text, from, to) -> text with the one occurrence of from replaced
local function replace(text, from, to)
  local at, stop = text:find(from, 1, true)
  assert(at, "the nginx block no longer holds " .. from)
  assert(not text:find(from, stop + 1, true), "the nginx block holds " .. from .. " more than once")
  return text:sub(1, at - 1) .. to .. text:sub(stop + 1)
end

local nginx = sh.run("command -v nginx || ls /usr/sbin/nginx 2>/dev/null")
nginx = nginx and nginx:match("^(%S+)")

describe("quan serve behind the nginx block of docs/notifications.md", function()
  if not nginx then
    it("needs nginx", function() pending("nginx is not installed: the documented server block was not run") end)
    return
  end

  local h, r, dir, port, nginx_pid

  local function control(path, body)
    local res = assert(http.request { method = "POST", url = h.base_url .. path, cafile = h.ca_file,
      headers = { "Content-Type: application/json" }, body = cjson.encode(body) })
    return cjson.decode(res.body), res.status
  end

  setup(function()
    h = batchsbx.start()
    control("/sandbox/notifications", { retry_interval = 0.2, retries = 50 })
    dir = sh.tmpdir()
    r = receiver.start(h, { store = dir .. "/events.db" })
    port = receiver.free_port()
    local block = documented_block()
    block = replace(block, "listen 443 ssl;", ("listen 127.0.0.1:%d ssl;"):format(port))
    block = replace(block, "/etc/ssl/pay.example.com/fullchain.pem", h.state .. "/server.pem")
    block = replace(block, "/etc/ssl/pay.example.com/privkey.pem", h.state .. "/server.key.pem")
    block = replace(block, "http://127.0.0.1:8080", r.url)
    -- one process, in the foreground, every file in dir
    local conf = table.concat({
      "daemon off;", "master_process off;", "pid " .. dir .. "/nginx.pid;",
      "error_log " .. dir .. "/error.log;", "events { worker_connections 64; }", "http {",
      "access_log " .. dir .. "/access.log;",
      "client_body_temp_path " .. dir .. "/body;", "proxy_temp_path " .. dir .. "/proxy;",
      "fastcgi_temp_path " .. dir .. "/fastcgi;", "uwsgi_temp_path " .. dir .. "/uwsgi;",
      "scgi_temp_path " .. dir .. "/scgi;",
      block, "}", "" }, "\n")
    sh.write(dir .. "/nginx.conf", conf)
    local args = ("-p %s -e %s -c %s"):format(sh.quote(dir), sh.quote(dir .. "/error.log"), sh.quote(dir .. "/nginx.conf"))
    local out, err, code = sh.run(nginx .. " -t " .. args .. " 2>&1")
    assert(code == 0, "nginx -t refused the documented block: " .. tostring(out) .. tostring(err))
    nginx_pid = assert(qos.spawn({ nginx, "-p", dir, "-e", dir .. "/error.log", "-c", dir .. "/nginx.conf" },
      { stdout = dir .. "/nginx.out", stderr = dir .. "/nginx.err" }))
    wait_until(function()
      assert(not qos.wait(nginx_pid, true), "nginx exited: " .. read(dir .. "/nginx.err") .. read(dir .. "/error.log"))
      return http.request { url = ("https://localhost:%d/"):format(port), cafile = h.ca_file, timeout = 2 }
    end, 30, "nginx listening")
  end)

  teardown(function()
    if nginx_pid then
      qos.kill(nginx_pid, "TERM")
      qos.wait(nginx_pid)
    end
    if r then r:term() end
    if h then h:stop() end
  end)

  it("passes WeChat Pay's notifications through to the receiver, which verifies and stores them", function()
    local url = ("https://localhost:%d/wechatpay/notify"):format(port)
    assert(h.wx.v3.marketing.favor.callbacks:post { json = { mchid = h.wx.mchid, notify_url = url } })
    local stock = batchsbx.stock(h, 10)
    local ids = {}
    for i = 1, 3 do
      local openid = ("oProxy%d-%d"):format(qos.getpid(), i)
      local sent = assert(h.wx.v3.marketing.favor.users._openid_.coupons:post { openid = openid, json = {
        stock_id = stock, out_request_no = ("proxy-%d-%d"):format(qos.getpid(), i), appid = h.appid,
        stock_creator_mchid = h.wx.mchid } })
      local used = control("/sandbox/coupons/use", { coupon_id = sent.json.coupon_id, openid = openid })
      ids[#ids + 1] = cjson.decode(used.notification.body).id
    end
    local rows = wait_until(function()
      local rows = receiver.rows(dir .. "/events.db")
      return #rows == #ids and rows
    end, 30, "the three events stored")
    for i, row in ipairs(rows) do assert.equal(ids[i], row.id) end
    -- the bytes and the Wechatpay-* headers came through unchanged: every one verified
    assert.equal(0, #r:log("refused"))
    local stored = r:log("stored")
    assert.equal(3, #stored)
    for _, line in ipairs(stored) do
      -- the peer is nginx, and nginx reports the sandbox as the client
      assert.matches("^127%.0%.0%.1:%d+$", line.remote)
      assert.equal("127.0.0.1", line.forwarded_for)
    end
    -- the sandbox saw 200 through the proxy
    local res = assert(http.request { url = h.base_url .. "/sandbox/notifications", cafile = h.ca_file })
    local state = {}
    for _, e in ipairs(cjson.decode(res.body).data) do state[e.event_id] = e.state end
    for _, id in ipairs(ids) do assert.equal("delivered", state[id]) end
  end)

  it("refuses what the block keeps out before the receiver sees it: other methods, bodies over 64 KiB", function()
    local url = ("https://localhost:%d/wechatpay/notify"):format(port)
    local before = #r:log()
    local res = assert(http.request { url = url, cafile = h.ca_file })
    assert.equal(403, res.status)
    res = assert(http.request { method = "POST", url = url, cafile = h.ca_file,
      headers = { "Content-Type: application/json" }, body = ("x"):rep(65 * 1024) })
    assert.equal(413, res.status)
    -- and /health is not reachable through the proxy
    res = assert(http.request { url = ("https://localhost:%d/health"):format(port), cafile = h.ca_file })
    assert.equal(404, res.status)
    assert.equal(before, #r:log())
  end)
end)
