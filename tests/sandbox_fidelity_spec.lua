-- quan sandbox as real SDKs and the API see it (issue #15): key modes, an
-- SDK-like client independent of quan verifying every endpoint, the
-- answers where the sandbox follows the API rather than its models (each
-- choice and its source in docs/sandbox.md, "Where the answers come
-- from"), bounded control endpoints and the API's strictness.
local sh = require "tests.support.sh"
local sbx = require "tests.support.sandbox"
local crypto = require "quan.crypto"
local cjson = require "cjson"
local qos = require "quan.os"
local time = require "quan.time"

local P = "/v3/marketing/favor"

local h -- the default sandbox: a merchant in public-key mode

local function create(over, on)
  local b = sbx.stock_body(on or h, over)
  return assert(sbx.request(on or h, "POST", P .. "/coupon-stocks", b)), b
end

local function act(id, action, on)
  return assert(sbx.request(on or h, "POST", P .. "/stocks/" .. id .. "/" .. action, {stock_creator_mchid = (on or h).mchid}))
end

local function running_stock(over, on)
  local res = create(over, on)
  assert.equal(200, res.status, res.body)
  assert.equal(200, act(res.json.stock_id, "start", on).status)
  return res.json.stock_id
end

local function send(id, openid, extra, on)
  on = on or h
  local b = {stock_id = id, out_request_no = "send" .. crypto.nonce(10), appid = on.appid, stock_creator_mchid = on.mchid}
  for k, v in pairs(extra or {}) do b[k] = v end
  return assert(sbx.request(on, "POST", P .. "/users/" .. openid .. "/coupons", b))
end

local function get_stock(id)
  return assert(sbx.request(h, "GET", P .. "/stocks/" .. id .. "?stock_creator_mchid=" .. h.mchid))
end

local function refused(res, status, code, field)
  assert.equal(status, res.status, res.body)
  assert.equal(code, res.json.code, res.body)
  assert.is_string(res.json.message)
  if field then
    assert.equal(field, res.json.detail and res.json.detail.field, res.body)
  end
end

local function control(path, body, on)
  return assert(sbx.control(on or h, path, body))
end

local function advance(seconds)
  local res = control("/sandbox/clock", {advance_seconds = seconds})
  assert.equal(200, res.status, res.body)
end

-- profile(handle) -> the sandbox profile of its config.lua
local function profile(on)
  return dofile(on.config_path).profiles.sandbox
end

local function cert_serial(on)
  return crypto.certificate("file://" .. on.state .. "/platform.pem"):serial():upper()
end

-- sdk(handle, requests) -> one result per request: the Python stand-in of
-- the PHP and Node SDKs (tests/support/sdk_client.py), holding exactly what
-- config.lua holds, sends them (no Wechatpay-Serial) and verifies each answer
local function sdk(on, requests)
  local p = profile(on)
  local dir = sh.tmpdir()
  local plan = {base_url = p.base_url, ca_file = p.ca_file, mchid = p.mchid, serial = p.serial,
    private_key = p.private_key, certs = p.certs, requests = requests}
  sh.write(dir .. "/plan.json", cjson.encode(plan))
  local out, err, code = sh.run("python3 tests/support/sdk_client.py < " .. sh.quote(dir .. "/plan.json"))
  assert.equal(0, code, err)
  local results = {}
  for line in out:gmatch("[^\n]+") do results[#results + 1] = cjson.decode(line) end
  assert.equal(#requests, #results, out .. err)
  return results
end

-- openssl_verifies(public key file, headers, body) -> true when the openssl
-- command line accepts the signature of an answer or a notification
local function openssl_verifies(key_file, headers, body)
  local lower = {}
  for k, v in pairs(headers) do lower[k:lower()] = v end
  local dir = sh.tmpdir()
  sh.write(dir .. "/msg", lower["wechatpay-timestamp"] .. "\n" .. lower["wechatpay-nonce"] .. "\n" .. body .. "\n")
  sh.write(dir .. "/sig.b64", lower["wechatpay-signature"])
  local key = key_file:gsub("^file://", "")
  if sh.read(key):find("BEGIN CERTIFICATE", 1, true) then
    sh.run("openssl x509 -pubkey -noout -in " .. sh.quote(key) .. " > " .. dir .. "/pub.pem")
    key = dir .. "/pub.pem"
  end
  local out, _, code = sh.run("base64 -d " .. dir .. "/sig.b64 > " .. dir .. "/sig && openssl dgst -sha256 -verify "
    .. sh.quote(key) .. " -signature " .. dir .. "/sig " .. dir .. "/msg")
  return code == 0 and out == "Verified OK\n"
end

local PNG = "\137PNG\r\n\26\n" .. string.rep("\0", 64)

-- every_endpoint(on) -> the request and expected status of each route of
-- quan.sandbox.api, keyed "METHOD template"; the stocks and the coupon
-- they need are made first through tests/support/sandbox.lua
local function every_endpoint(on)
  local mchid, appid = on.mchid, on.appid
  local to_start = create(nil, on).json.stock_id
  local to_stop = create(nil, on).json.stock_id
  local to_pause = running_stock(nil, on)
  local to_restart = running_stock(nil, on)
  act(to_restart, "pause", on)
  local to_send = running_stock(nil, on)
  local coupon_id = send(to_send, "sdk-user", nil, on).json.coupon_id
  local creator = cjson.encode {stock_creator_mchid = mchid}
  local function json(t) return cjson.encode(t) end
  local stock = P .. "/stocks/"
  return {
    ["POST " .. P .. "/coupon-stocks"] = {body = json(sbx.stock_body(on))},
    ["POST " .. P .. "/stocks/{stock_id}/start"] = {target = stock .. to_start .. "/start", body = creator},
    ["POST " .. P .. "/stocks/{stock_id}/pause"] = {target = stock .. to_pause .. "/pause", body = creator},
    ["POST " .. P .. "/stocks/{stock_id}/restart"] = {target = stock .. to_restart .. "/restart", body = creator},
    ["POST " .. P .. "/stocks/{stock_id}/stop"] = {target = stock .. to_stop .. "/stop", body = creator},
    ["GET " .. P .. "/stocks"] = {target = P .. "/stocks?offset=0&limit=10&stock_creator_mchid=" .. mchid},
    ["GET " .. P .. "/stocks/{stock_id}/merchants"] = {target = stock .. to_pause
      .. "/merchants?offset=0&limit=10&stock_creator_mchid=" .. mchid},
    ["GET " .. P .. "/stocks/{stock_id}/items"] = {target = stock .. to_pause .. "/items?offset=0&limit=10&stock_creator_mchid=" .. mchid},
    ["GET " .. P .. "/stocks/{stock_id}"] = {target = stock .. to_pause .. "?stock_creator_mchid=" .. mchid},
    ["POST " .. P .. "/users/{openid}/coupons"] = {target = P .. "/users/sdk-user2/coupons",
      body = json {stock_id = to_send, out_request_no = "sdk" .. crypto.nonce(10), appid = appid, stock_creator_mchid = mchid}},
    ["GET " .. P .. "/users/{openid}/coupons"] = {target = P .. "/users/sdk-user/coupons?appid=" .. appid
      .. "&creator_mchid=" .. mchid},
    ["GET " .. P .. "/users/{openid}/coupons/{coupon_id}"] = {target = P .. "/users/sdk-user/coupons/" .. coupon_id
      .. "?appid=" .. appid},
    ["POST " .. P .. "/callbacks"] = {body = json {mchid = mchid, notify_url = "https://merchant.quan.invalid/n", switch = false}},
    ["GET " .. P .. "/callbacks"] = {target = P .. "/callbacks?mchid=" .. mchid},
    ["POST " .. P .. "/media/image-upload"] = {upload = {meta = json {filename = "logo.png", sha256 = crypto.sha256(PNG)},
      filename = "logo.png", data_hex = (PNG:gsub(".", function(c) return ("%02x"):format(c:byte()) end))}},
    -- a merchant in public-key mode has no certificates: a signed 404
    ["GET /v3/certificates"] = {status = on.key_mode == "public_key" and 404 or 200},
    -- a stock still running has no flow files yet: a signed 404 (the file
    -- itself, once there, is unsigned on the API: tests/flows_spec.lua)
    ["GET " .. P .. "/stocks/{stock_id}/use-flow"] = {target = stock .. to_send .. "/use-flow", status = 404},
    ["GET " .. P .. "/stocks/{stock_id}/refund-flow"] = {target = stock .. to_send .. "/refund-flow", status = 404},
    ["GET /v3/billdownload/file"] = {target = "/v3/billdownload/file?token=none", status = 404},
  }
end

describe("quan sandbox against the API", function()
  setup(function() h = sbx.start() end)
  teardown(function() if h then h:stop() end end)

  describe("key modes", function()
    it("is by default a merchant who joined since 2024: config.lua holds only the PUB_KEY_ID", function()
      assert.equal("public_key", h.key_mode)
      local p = profile(h)
      assert.same({[h.key_id] = "file://" .. h.state .. "/platform.pub.pem"}, p.certs)
      assert.matches("key mode public_key", sh.read(h.config_path))
      assert.equal("public_key", control("/sandbox/health").json.key_mode)
    end)

    it("answers a client that names no key, or another, under the PUB_KEY_ID", function()
      local target = P .. "/stocks?offset=0&limit=1&stock_creator_mchid=" .. h.mchid
      for _, named in ipairs {false, cert_serial(h), h.key_id} do
        local res = sbx.request(h, "GET", target, nil, {wechatpay_serial = named})
        assert.equal(200, res.status, res.body)
        assert.equal(h.key_id, res.headers["wechatpay-serial"], tostring(named))
        assert.is_true(sbx.verify(h, res))
      end
    end)

    it("answers GET /v3/certificates as for a merchant without certificates: 404 无可用的平台证书", function()
      local res = sbx.request(h, "GET", "/v3/certificates", nil, {wechatpay_serial = false})
      refused(res, 404, "RESOURCE_NOT_EXISTS")
      assert.matches("无可用的平台证书", res.json.message)
      assert.equal(h.key_id, res.headers["wechatpay-serial"])
      assert.is_true(sbx.verify(h, res))
    end)

    it("has every endpoint's answer verified by an SDK-like client that holds only what config.lua holds", function()
      local cases = every_endpoint(h)
      local requests, names = {}, {}
      for _, r in ipairs(require("quan.sandbox.api").ROUTES) do
        local name = r.method .. " " .. r.template
        local c = cases[name]
        assert.is_table(c, "no case for the route " .. name .. ": add one to every_endpoint")
        requests[#requests + 1] = {method = r.method, target = c.target or r.template, body = c.body, upload = c.upload}
        names[#names + 1] = {name = name, status = c.status or 200}
      end
      for _, path in ipairs {"/sandbox/health", "/sandbox/clock", "/sandbox/faults", "/sandbox/notifications",
          "/sandbox/format"} do
        requests[#requests + 1] = {method = "GET", target = path, unsigned = true}
        names[#names + 1] = {name = "GET " .. path, status = 200}
      end
      for i, res in ipairs(sdk(h, requests)) do
        assert.equal(names[i].status, res.status, names[i].name .. ": " .. res.body)
        assert.is_true(res.verified, names[i].name .. ": " .. tostring(res.reason))
        assert.equal(h.key_id, res.serial, names[i].name)
      end
    end)

    it("signs notifications under the PUB_KEY_ID, which openssl verifies with config.lua's key", function()
      local coupon_id = send(running_stock(), "note-user").json.coupon_id
      local res = control("/sandbox/coupons/use", {coupon_id = coupon_id, openid = "note-user"})
      assert.equal(200, res.status, res.body)
      local note = res.json.notification
      assert.equal(h.key_id, note.headers["Wechatpay-Serial"])
      assert.is_true(openssl_verifies(profile(h).certs[h.key_id], note.headers, note.body))
    end)

    describe("certificate", function()
      local c
      setup(function() c = sbx.start {key_mode = "certificate"} end)
      teardown(function() if c then c:stop() end end)

      it("is a merchant in certificate mode: config.lua holds the certificate, everything is signed under it", function()
        local serial = cert_serial(c)
        assert.same({[serial] = "file://" .. c.state .. "/platform.pem"}, profile(c).certs)
        local results = sdk(c, {
          {method = "GET", target = P .. "/stocks?offset=0&limit=1&stock_creator_mchid=" .. c.mchid},
          {method = "GET", target = "/v3/certificates"},
          {method = "GET", target = "/sandbox/health", unsigned = true},
        })
        for _, res in ipairs(results) do
          assert.equal(200, res.status, res.body)
          assert.is_true(res.verified, res.target .. ": " .. tostring(res.reason))
          assert.equal(serial, res.serial)
        end
        -- also when the request names the PUB_KEY_ID
        local res = sbx.request(c, "GET", "/v3/certificates", nil, {wechatpay_serial = c.key_id})
        assert.equal(serial, res.headers["wechatpay-serial"])
        assert.equal(serial, cjson.decode(res.body).data[1].serial_no)
        -- notifications too, unless told otherwise
        local coupon_id = send(running_stock(nil, c), "cert-user", nil, c).json.coupon_id
        local used = control("/sandbox/coupons/use", {coupon_id = coupon_id, openid = "cert-user"}, c)
        assert.equal(serial, used.json.notification.headers["Wechatpay-Serial"])
        assert.equal("certificate", control("/sandbox/notifications", nil, c).json.signed_by)
      end)

      it("serves quan's own client through its config.lua", function()
        local dir = sh.tmpdir()
        sh.write(dir .. "/list.lua", [[
          local wx = require("wechatpay").client()
          local res = assert(wx.v3.marketing.favor.stocks:get { query = { offset = 0, limit = 1, stock_creator_mchid = wx.mchid } })
          print(res.headers["wechatpay-serial"], #assert(wx:certificates()))
        ]])
        local out, err, code = sh.run("QUAN_CONFIG=" .. sh.quote(c.config_path) .. " " .. sh.quan .. " " .. dir .. "/list.lua")
        assert.equal(0, code, err)
        assert.equal(cert_serial(c) .. "\t1\n", out)
      end)
    end)

    it("writes both keys into config.lua in switching mode, and refuses an unknown mode", function()
      local s = sbx.start {key_mode = "switching"}
      local ok, err = pcall(function()
        assert.same({[s.key_id] = "file://" .. s.state .. "/platform.pub.pem",
          [cert_serial(s)] = "file://" .. s.state .. "/platform.pem"}, profile(s).certs)
        -- an SDK that names no key is answered under the certificate, which it holds
        local res = sdk(s, {{method = "GET", target = "/v3/certificates"}})[1]
        assert.equal(200, res.status, res.body)
        assert.is_true(res.verified, tostring(res.reason))
        assert.equal(cert_serial(s), res.serial)
      end)
      s:stop()
      assert(ok, err)
      local _, stderr, code = sh.run(sh.quan .. " sandbox --key-mode rsa --state " .. sh.tmpdir() .. "/x")
      assert.equal(2, code)
      assert.matches("%-%-key%-mode", stderr)
      assert.has_error(function() require("quan.sandbox").start {key_mode = "rsa"} end,
        "quan.sandbox.start: key_mode must be public_key, certificate, switching (got rsa)")
    end)
  end)

  describe("stocks", function()
    it("answers a repeated start, pause or restart with the first call's time (幂等重入)", function()
      local id = create().json.stock_id
      local first = act(id, "start")
      assert.equal(200, first.status)
      advance(60)
      local again = act(id, "start")
      assert.equal(200, again.status, again.body)
      assert.same(first.json, again.json)
      local paused = act(id, "pause")
      advance(60)
      assert.same(paused.json, act(id, "pause").json)
      assert.equal("paused", get_stock(id).json.status)
      local restarted = act(id, "restart")
      advance(60)
      assert.same(restarted.json, act(id, "restart").json)
      assert.equal("running", get_stock(id).json.status)
      -- a state the action neither starts from nor leads to stays refused
      refused(act(create().json.stock_id, "restart"), 400, "PARAM_ERROR")
      local stopped = create().json.stock_id
      local stop = act(stopped, "stop")
      assert.same(stop.json, act(stopped, "stop").json)
      refused(act(stopped, "start"), 400, "PARAM_ERROR")
    end)

    it("reports a running or paused stock past its end as stoped, stop_time its end", function()
      local now = sbx.now(h)
      local running = running_stock {available_begin_time = sbx.iso(now), available_end_time = sbx.iso(now + 3600)}
      local paused = running_stock {available_begin_time = sbx.iso(now), available_end_time = sbx.iso(now + 3600)}
      act(paused, "pause")
      local waiting = create {available_begin_time = sbx.iso(now), available_end_time = sbx.iso(now + 3600)}.json.stock_id
      assert.is_nil(get_stock(running).json.stop_time)
      advance(3601)
      for _, id in ipairs {running, paused} do
        local s = get_stock(id).json
        assert.equal("stoped", s.status)
        assert.equal(s.available_end_time, s.stop_time)
      end
      assert.equal("unactivated", get_stock(waiting).json.status)
      local function listed(status)
        local ids = {}
        local list = sbx.request(h, "GET", P .. "/stocks?offset=0&limit=10&status=" .. status .. "&stock_creator_mchid="
          .. h.mchid).json
        for _, s in ipairs(list.data) do ids[s.stock_id] = s.status end
        return ids
      end
      assert.equal("stoped", listed("stoped")[running])
      assert.is_nil(listed("running")[running])
      assert.is_nil(listed("paused")[paused])
      refused(act(running, "pause"), 400, "PARAM_ERROR")
      refused(act(paused, "restart"), 400, "PARAM_ERROR")
      refused(send(running, "late-user"), 400, "INVALID_REQUEST")
      refused(act(waiting, "start"), 400, "INVALID_REQUEST")
    end)

    it("reports unset fields as the API does and a made-up card_id", function()
      local s = get_stock(create().json.stock_id).json
      assert.equal(0, s.stock_use_rule.max_amount_by_day)
      assert.same({}, s.stock_use_rule.goods_tag)
      assert.same({}, s.stock_use_rule.trade_type)
      assert.is_false(s.stock_use_rule.combine_use)
      assert.matches("^p[%w_-]+$", s.card_id)
      assert.equal(28, #s.card_id)
    end)

    it("refuses pattern_info without its description, and takes a stock with neither it nor coupon_available_time", function()
      local res = create {pattern_info = {merchant_name = "微信支付"}}
      refused(res, 400, "PARAM_ERROR", "/pattern_info/description")
      local b = sbx.stock_body(h)
      b.coupon_use_rule.coupon_available_time = nil
      res = assert(sbx.request(h, "POST", P .. "/coupon-stocks", b))
      assert.equal(200, res.status, res.body)
    end)

    it("refuses available_time_after_receive over 1440 and keeps coupons on the stock's window (暂未开放)", function()
      refused(create {coupon_use_rule = {coupon_available_time = {available_time_after_receive = 1441}}}, 400,
        "PARAM_ERROR", "/coupon_use_rule/coupon_available_time/available_time_after_receive")
      local id = running_stock {coupon_use_rule = {coupon_available_time = {available_time_after_receive = 30}}}
      local coupon_id = send(id, "window-user").json.coupon_id
      advance(3600)
      local c = sbx.request(h, "GET", P .. "/users/window-user/coupons/" .. coupon_id .. "?appid=" .. h.appid).json
      assert.equal("SENDED", c.status)
      assert.equal(get_stock(id).json.available_end_time, c.available_end_time)
    end)
  end)

  describe("coupons", function()
    it("refuses coupon_value and coupon_minimum: the specified-value scenario is not open", function()
      local id = running_stock()
      refused(send(id, "value-user", {coupon_value = 50, coupon_minimum = 100}), 400, "PARAM_ERROR", "/coupon_value")
      assert.equal(0, get_stock(id).json.distributed_coupons)
    end)

    it("carries out_request_no and the stock's singleitem; consume_information only in the notification", function()
      local id = running_stock {coupon_use_rule = {available_items = {"SKU-1"}}}
      local out_no = "single" .. crypto.nonce(8)
      local coupon_id = send(id, "item-user", {out_request_no = out_no}).json.coupon_id
      local target = P .. "/users/item-user/coupons/" .. coupon_id .. "?appid=" .. h.appid
      local c = sbx.request(h, "GET", target).json
      assert.is_true(c.singleitem)
      assert.equal(out_no, c.out_request_no)
      assert.is_true(get_stock(id).json.singleitem)
      local used = control("/sandbox/coupons/use", {coupon_id = coupon_id, openid = "item-user"}).json
      local env = cjson.decode(used.notification.body)
      local plain = cjson.decode((assert(crypto.aes_gcm_decrypt(sh.read(h.state .. "/apiv3.key"), env.resource.nonce,
        env.resource.associated_data, env.resource.ciphertext))))
      assert.is_true(plain.singleitem)
      assert.is_nil(plain.out_request_no)
      assert.is_string(plain.consume_information.transaction_id)
      c = sbx.request(h, "GET", target).json
      assert.equal("USED", c.status)
      assert.is_nil(c.consume_information)
    end)

    it("lists a user's coupons only with a merchant filter, never the expired ones", function()
      local base = P .. "/users/lister2/coupons?appid=" .. h.appid
      local res = sbx.request(h, "GET", base)
      refused(res, 400, "PARAM_ERROR", "creator_mchid")
      assert.matches("商户号必填", res.json.message)
      local now = sbx.now(h)
      local short = running_stock {available_begin_time = sbx.iso(now), available_end_time = sbx.iso(now + 3600)}
      local long = running_stock {stock_use_rule = {max_coupons_per_user = 3}}
      send(short, "lister2")
      local usable = send(long, "lister2").json.coupon_id
      local used = send(long, "lister2").json.coupon_id
      assert.equal(200, control("/sandbox/coupons/use", {coupon_id = used, openid = "lister2"}).status)
      advance(3601) -- the coupon of `short` expires
      local function ids(query)
        local r = sbx.request(h, "GET", base .. query)
        assert.equal(200, r.status, r.body)
        local set = {}
        for _, c in ipairs(r.json.data) do set[#set + 1] = c.coupon_id .. "=" .. c.status end
        table.sort(set)
        return set, r.json
      end
      local both = {usable .. "=SENDED", used .. "=USED"}
      table.sort(both)
      assert.same(both, (ids("&creator_mchid=" .. h.mchid)))
      assert.same(both, (ids("&creator_mchid=" .. h.mchid .. "&status=USED")))
      assert.same({usable .. "=SENDED"}, (ids("&creator_mchid=" .. h.mchid .. "&status=SENDED")))
      refused(sbx.request(h, "GET", base .. "&creator_mchid=" .. h.mchid .. "&status=EXPIRED"), 400, "PARAM_ERROR", "status")
      -- available_mchid: the usable ones; stock, status and paging ignored
      local list, page = ids("&available_mchid=" .. h.mchid .. "&status=USED&offset=3&limit=1&stock_id=1")
      assert.same({usable .. "=SENDED"}, list)
      assert.equal(0, page.offset)
      -- creator_mchid wins over available_mchid
      assert.same(both, (ids("&creator_mchid=" .. h.mchid .. "&available_mchid=" .. h.mchid)))
    end)

    it("sends COUPON.USE with a UUID event id and the summary 代金券核销通知, as a real one of 2021", function()
      local coupon_id = send(running_stock(), "event-user").json.coupon_id
      local env = cjson.decode(control("/sandbox/coupons/use", {coupon_id = coupon_id, openid = "event-user"}).json
        .notification.body)
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", env.id)
      assert.equal("代金券核销通知", env.summary)
      assert.equal("coupon", env.resource.original_type)
    end)
  end)

  describe("times", function()
    local FRACTIONLESS = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%+08:00$"
    local MILLIS = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%+08:00$"

    -- each_time(value, fn): fn(key, text) for every *_time field
    local function each_time(v, fn)
      for k, x in pairs(v) do
        if type(x) == "table" then each_time(x, fn)
        elseif type(k) == "string" and k:sub(-5) == "_time" then fn(k, x) end
      end
    end

    it("answers without fractions as real answers do, with milliseconds when asked, and parsers read both", function()
      local id = running_stock()
      local coupon_id = send(id, "time-user").json.coupon_id
      local function answers()
        local stock = get_stock(id).json
        local coupon = sbx.request(h, "GET", P .. "/users/time-user/coupons/" .. coupon_id .. "?appid=" .. h.appid).json
        return {stock, coupon}
      end
      local n = 0
      each_time(answers(), function(k, t) n = n + 1; assert.matches(FRACTIONLESS, t, 1, false, k) end)
      assert.is_true(n >= 6)
      assert.equal("none", control("/sandbox/format").json.time_fraction)
      assert.equal("millis", control("/sandbox/format", {time_fraction = "millis"}).json.time_fraction)
      local ok, err = pcall(function()
        local plain = answers()
        each_time(plain, function(k, t)
          assert.matches(MILLIS, t, 1, false, k)
          assert.is_number(time.parse(t), k)
        end)
        assert.equal(time.parse(plain[1].available_end_time), time.parse((plain[1].available_end_time:gsub("%.000", ""))))
        local env = cjson.decode(control("/sandbox/coupons/use", {coupon_id = coupon_id, openid = "time-user"}).json
          .notification.body)
        assert.matches(MILLIS, env.create_time)
        -- quan's client takes them
        local wx = require("tests.support.batchsbx").client(h)
        local got = assert(wx.v3.marketing.favor.stocks._stock_id_:get { stock_id = id, query = { stock_creator_mchid = h.mchid } })
        assert.matches(MILLIS, got.json.create_time)
      end)
      control("/sandbox/format", {time_fraction = "none"})
      assert(ok, err)
      refused(control("/sandbox/format", {time_fraction = "micros"}), 400, "PARAM_ERROR", "time_fraction")
    end)
  end)

  describe("control endpoints", function()
    local function clock() return control("/sandbox/clock").json end

    it("refuses a clock value out of bounds, committing nothing; the API keeps answering", function()
      local before = clock().offset_seconds
      for _, body in ipairs {
        '{"advance_seconds":1e17}', '{"advance_seconds":-5}', '{"advance_seconds":1.5}', '{"advance_seconds":"60"}',
        '{"advance_seconds":NaN}', '{"advance_seconds":Infinity}', '{"advance_seconds":0x10}',
        '{"advance_second":60}', '{"reset":false}', '{"reset":true,"advance_seconds":5}', '[60]',
      } do
        local res = assert(sbx.raw(h, "POST", "/sandbox/clock", {body = body, headers = {"Content-Type: application/json"}}))
        refused(res, 400, "PARAM_ERROR")
        assert.equal(before, clock().offset_seconds, body)
      end
      local res = control("/sandbox/clock", {advance_second = 60})
      assert.equal("advance_second", res.json.detail.field)
      assert.matches("unknown field", res.json.message)
      -- the sum is bounded too
      local max = require("quan.sandbox.control").MAX_CLOCK_OFFSET
      refused(control("/sandbox/clock", {advance_seconds = max - before + 1}), 400, "PARAM_ERROR", "advance_seconds")
      assert.equal(before, clock().offset_seconds)
      assert.equal(200, get_stock(running_stock()).status)
    end)

    it("goes back to real time with reset", function()
      advance(3600)
      local res = control("/sandbox/clock", {reset = true})
      assert.equal(200, res.status, res.body)
      assert.equal(0, res.json.offset_seconds)
      assert.is_true(math.abs(time.parse(res.json.now) - qos.time()) < 5)
    end)

    it("bounds the faults and the notification policy, refusing unknown fields", function()
      refused(control("/sandbox/faults", {spec = "latency=31s"}), 400, "PARAM_ERROR", "spec")
      refused(control("/sandbox/faults", {spec = 5}), 400, "PARAM_ERROR", "spec")
      refused(control("/sandbox/faults", {spec = "", error429 = 1}), 400, "PARAM_ERROR", "error429")
      refused(control("/sandbox/faults", {error429 = {1}}), 400, "PARAM_ERROR", "error429")
      assert.equal("", control("/sandbox/faults").json.faults)
      refused(control("/sandbox/notifications", {retry = 3}), 400, "PARAM_ERROR", "retry")
      assert.equal(9, control("/sandbox/notifications").json.retries)
    end)

    it("repairs a state whose clock an older sandbox broke, and says so", function()
      local dir = sh.tmpdir() .. "/state"
      local s = sbx.start {state = dir}
      s:stop()
      local db = assert(require("quan.sqlite").open(dir .. "/sandbox.db"))
      assert(db:run("UPDATE control SET value = ? WHERE key = 'control'", '{"clock_offset":1e17,"time_fraction":"nanos"}'))
      db:close()
      s = sbx.start {state = dir}
      local ok, err = pcall(function()
        local log = sh.read(dir .. "/sandbox.log")
        assert.matches("business clock offset 1e%+17 s out of bounds: reset to real time", log)
        assert.equal(0, control("/sandbox/clock", nil, s).json.offset_seconds)
        assert.equal("none", control("/sandbox/format", nil, s).json.time_fraction)
        local res = sbx.request(s, "GET", P .. "/stocks?offset=0&limit=1&stock_creator_mchid=" .. s.mchid)
        assert.equal(200, res.status, res.body)
      end)
      s:stop()
      assert(ok, err)
    end)
  end)

  describe("strictness", function()
    it("refuses an openid with NUL, invalid UTF-8 or over 128 bytes, naming the field", function()
      local id = running_stock()
      local body = {stock_id = id, out_request_no = "strict" .. crypto.nonce(8), appid = h.appid, stock_creator_mchid = h.mchid}
      for _, openid in ipairs {"a%00b", "%FF%FE", "x%0Ay", ("o"):rep(129), ("o"):rep(5000)} do
        for _, r in ipairs {
          {"POST", P .. "/users/" .. openid .. "/coupons", body},
          {"GET", P .. "/users/" .. openid .. "/coupons?appid=" .. h.appid .. "&creator_mchid=" .. h.mchid},
          {"GET", P .. "/users/" .. openid .. "/coupons/98000000001?appid=" .. h.appid},
        } do
          local res = assert(sbx.request(h, r[1], r[2], r[3]))
          refused(res, 400, "PARAM_ERROR", "openid")
          assert.matches("^openid: ", res.json.message)
        end
      end
      assert.equal(200, send(id, ("o"):rep(128)).status)
      assert.equal(200, send(id, "%E5%BE%AE%E4%BF%A1").status) -- 微信: UTF-8 is fine
    end)

    it("reads numeric query values in decimal only", function()
      for _, v in ipairs {"0x10", "1e1", "%2010", "%2B1", "-1", "1.0", "1%00", ("9"):rep(30)} do
        local res = assert(sbx.request(h, "GET", P .. "/stocks?offset=" .. v .. "&limit=10&stock_creator_mchid=" .. h.mchid))
        refused(res, 400, "PARAM_ERROR", "offset")
        assert.equal("query", res.json.detail.location)
      end
      assert.equal(200, sbx.request(h, "GET", P .. "/stocks?offset=00&limit=10&stock_creator_mchid=" .. h.mchid).status)
    end)

    it("reads JSON bodies as JSON: no hex numbers, NaN or Infinity", function()
      local text = cjson.encode(sbx.stock_body(h)):gsub('"max_coupons_per_user":2', '"max_coupons_per_user":0x2')
      assert.matches("0x2", text)
      refused(assert(sbx.request(h, "POST", P .. "/coupon-stocks", text)), 400, "PARAM_ERROR")
    end)
  end)
end)
