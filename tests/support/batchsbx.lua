-- tests.support.batchsbx: a sandbox with a running stock for the batch
-- specs and benchmark: start it, create and start a stock, write an openid
-- CSV, turn faults on and off, run `quan send` (or any quan command)
-- against it, read what the sandbox holds.
local qos = require "quan.os"
local sqlite = require "quan.sqlite"
local cjson = require "cjson"

local M = {}

-- client(h) -> a wechatpay client of the sandbox h (its profile), profile
function M.client(h)
  local config = require "wechatpay.config"
  local profile = config.profile(config.read(h.config_path), "sandbox", h.config_path)
  local opts = {}
  for _, k in ipairs { "mchid", "serial", "private_key", "certs", "apiv3_key", "base_url", "ca_file", "timeout" } do
    opts[k] = profile[k]
  end
  return require("wechatpay").new(opts), profile
end

-- start([faults]) -> handle (quan.sandbox.start), with h.wx a client of it
function M.start(faults)
  local h = assert(require("quan.sandbox").start { faults = faults })
  local profile
  h.wx, profile = M.client(h)
  h.profile_table = profile
  h.appid = h.appid or profile.appid
  h.ca_file = profile.ca_file
  return h
end

local iso = require("quan.time").beijing

-- stock(h, max_coupons) -> stock_id of a new running stock (1 coupon per user)
function M.stock(h, max_coupons)
  local now = qos.time()
  local body = {
    stock_name = "batch spec", belong_merchant = h.wx.mchid,
    available_begin_time = iso(now), available_end_time = iso(now + 7 * 86400),
    stock_use_rule = { max_coupons = max_coupons, max_amount = 100 * max_coupons,
                       max_coupons_per_user = 1, natural_person_limit = false, prevent_api_abuse = false },
    no_cash = false, stock_type = "NORMAL",
    coupon_use_rule = { fixed_normal_coupon = { coupon_amount = 100, transaction_minimum = 200 },
                        coupon_available_time = {} },
    out_request_no = "stock" .. require("quan.crypto").nonce(12),
  }
  local res, err = h.wx.v3.marketing.favor.couponStocks:post { json = body }
  assert(res, tostring(err))
  local id = res.json.stock_id
  res, err = h.wx:chain("v3/marketing/favor/stocks/{stock_id}/start"):post {
    stock_id = id, json = { stock_creator_mchid = h.wx.mchid } }
  assert(res, tostring(err))
  return id
end

-- faults(h, spec): sets the sandbox's faults ("" for none)
function M.faults(h, spec)
  local request = {
    method = "POST", url = h.base_url .. "/sandbox/faults", cafile = h.ca_file,
    headers = { "Content-Type: application/json" }, body = cjson.encode { spec = spec },
  }
  local res, err, code = require("quan.async").request(request)
  -- a kept-alive connection found closed fails a POST with recv (quan.http
  -- never resends a body); setting the faults twice is harmless
  if code == "recv" then res, err = require("quan.async").request(request) end
  assert(res and res.status == 200, tostring(err or (res and res.body)))
end

-- users(path, n[, prefix]) -> path of a CSV with n openids, written streaming
function M.users(path, n, prefix)
  local f = assert(io.open(path, "wb"))
  f:write("openid,name\n")
  prefix = prefix or "oBatch"
  for i = 1, n do f:write(("%s%07d,user %d\n"):format(prefix, i, i)) end
  f:close()
  return path
end

-- spawn(h, dir, words, tag) -> pid of `quan WORDS...` (e.g. {"send",
-- "--concurrency", "8", stock, users}, or {"--dry-run", "send", ...}) with
-- h's profile and JSON logs; its stdout and stderr go to dir/TAG.out and
-- dir/TAG.err
function M.spawn(h, dir, words, tag)
  local sh = require "tests.support.sh"
  local quoted = {}
  for i, a in ipairs(words) do quoted[i] = sh.quote(a) end
  local cmd = ("exec env QUAN_CONFIG=%s QUAN_LOG_FORMAT=json %s %s"):format(
    sh.quote(h.config_path), sh.quote(sh.quan), table.concat(quoted, " "))
  return assert(qos.spawn({ "sh", "-c", cmd }, { stdout = dir .. "/" .. tag .. ".out",
                                                 stderr = dir .. "/" .. tag .. ".err" }))
end

-- run(h, dir, words, tag) -> how, code: spawn waited for
function M.run(h, dir, words, tag)
  return qos.wait(M.spawn(h, dir, words, tag))
end

-- send(args) -> {"send", args...}: the words of `quan send ARGS`
function M.send(args)
  return { "send", table.unpack(args) }
end

-- coupons(h, stock_id) -> {total, distinct, doubled, by_openid = {openid -> coupon_id}}
-- read from the sandbox's state database
function M.coupons(h, stock_id, want_map)
  local db = assert(sqlite.open(h.state .. "/sandbox.db"))
  local r = db:first("SELECT count(*) AS total, count(DISTINCT openid) AS distinct_users FROM coupons WHERE stock_id = ?", stock_id)
  local d = db:first([[SELECT count(*) AS n FROM (SELECT openid FROM coupons WHERE stock_id = ?
    GROUP BY openid HAVING count(*) > 1)]], stock_id)
  local out = { total = r.total, distinct = r.distinct_users, doubled = d.n }
  if want_map then
    out.by_openid = {}
    for row in db:rows("SELECT openid, coupon_id FROM coupons WHERE stock_id = ?", stock_id) do
      out.by_openid[row.openid] = row.coupon_id
    end
  end
  db:close()
  return out
end

return M
