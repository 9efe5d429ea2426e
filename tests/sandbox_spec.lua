-- quan sandbox: checks as WeChat Pay does them, the favor business rules,
-- signed answers, faults, the clock and durable state.
local sh = require "tests.support.sh"
local sbx = require "tests.support.sandbox"
local crypto = require "quan.crypto"
local cjson = require "cjson"
local qos = require "quan.os"

local P = "/v3/marketing/favor"

local h -- one sandbox for the whole file

local function create(over)
  local b = sbx.stock_body(h, over)
  local res = assert(sbx.request(h, "POST", P .. "/coupon-stocks", b))
  return res, b
end

local function act(id, action)
  return assert(sbx.request(h, "POST", P .. "/stocks/" .. id .. "/" .. action, {stock_creator_mchid = h.mchid}))
end

local function running_stock(over)
  local res = create(over)
  assert.equal(200, res.status, res.body)
  assert.equal(200, act(res.json.stock_id, "start").status)
  return res.json.stock_id
end

local function send(id, openid, out_no, extra)
  local b = {stock_id = id, out_request_no = out_no or ("send" .. crypto.nonce(10)), appid = h.appid,
    stock_creator_mchid = h.mchid}
  for k, v in pairs(extra or {}) do b[k] = v end
  return assert(sbx.request(h, "POST", P .. "/users/" .. openid .. "/coupons", b))
end

local function refused(res, status, code)
  assert.equal(status, res.status, res.body)
  assert.equal(code, res.json.code, res.body)
  assert.is_string(res.json.message)
end

describe("quan sandbox", function()
  setup(function() h = sbx.start() end)
  teardown(function() if h then h:stop() end end)

  describe("state dir", function()
    it("holds the documented files, secrets private, and a client config", function()
      for _, name in ipairs {"ca.pem", "mchid", "appid", "merchant.key.pem", "merchant.serial", "platform.pub.pem",
          "platform.key_id", "apiv3.key", "config.lua"} do
        assert.truthy(io.open(h.state .. "/" .. name), name)
      end
      assert.equal(384, qos.mode(h.state .. "/merchant.key.pem")) -- 0600
      assert.equal(384, qos.mode(h.state .. "/apiv3.key"))
      assert.equal(32, #sh.read(h.state .. "/apiv3.key"))
      assert.matches("^PUB_KEY_ID_%d+\n$", sh.read(h.state .. "/platform.key_id"))
      assert.matches("BEGIN " .. "PRIVATE KEY", sh.read(h.state .. "/merchant.key.pem")) -- PKCS#8
      local serial = sh.run("openssl x509 -noout -serial -in " .. h.state .. "/merchant.pem")
      assert.equal("serial=" .. h.serial .. "\n", serial)
      local cfg = dofile(h.config_path)
      local p = cfg.profiles.sandbox
      assert.equal("sandbox", cfg.default)
      assert.equal(h.base_url, p.base_url)
      assert.equal(h.mchid, p.mchid)
      assert.equal(h.serial, p.serial)
      assert.equal("file://" .. h.state .. "/merchant.key.pem", p.private_key)
      assert.equal("file://" .. h.state .. "/platform.pub.pem", p.certs[h.key_id])
      assert.equal(h.appid, p.appid)
      -- the server certificate is trusted through ca.pem for 127.0.0.1
      local out = sh.run("curl -sS --cacert " .. h.state .. "/ca.pem " .. h.base_url .. "/sandbox/health")
      assert.equal(h.mchid, cjson.decode(out).mchid)
    end)
  end)

  describe("request checks", function()
    it("accepts a request signed with the openssl command line and sent by curl", function()
      local dir = sh.tmpdir()
      local target = P .. "/stocks?offset=0&limit=10&stock_creator_mchid=" .. h.mchid
      local ts, nonce = tostring(math.floor(qos.time())), "opensslNonce" .. crypto.nonce(12)
      sh.write(dir .. "/msg", "GET\n" .. target .. "\n" .. ts .. "\n" .. nonce .. "\n\n")
      local sig = sh.run("openssl dgst -sha256 -sign " .. h.state .. "/merchant.key.pem " .. dir .. "/msg | base64 -w0")
      local auth = ('WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",timestamp="%s",serial_no="%s",signature="%s"')
        :format(h.mchid, nonce, ts, h.serial, sig)
      local res = sbx.raw(h, "GET", target, {headers = {"Authorization: " .. auth}})
      assert.equal(200, res.status, res.body)
      assert.equal(0, res.json.offset)
      -- the same with one character of the signature changed
      local bad = sig:sub(1, 10) .. (sig:sub(11, 11) == "A" and "B" or "A") .. sig:sub(12)
      auth = ('WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",timestamp="%s",serial_no="%s",signature="%s"')
        :format(h.mchid, nonce .. "x", ts, h.serial, bad)
      res = sbx.raw(h, "GET", target, {headers = {"Authorization: " .. auth}})
      refused(res, 401, "SIGN_ERROR")
      assert.equal("signature", res.json.detail.field)
    end)

    it("signs answers so that openssl dgst -verify accepts them with platform.pub.pem", function()
      local res = sbx.request(h, "GET", P .. "/stocks?offset=0&limit=1&stock_creator_mchid=" .. h.mchid)
      assert.equal(200, res.status)
      assert.equal(h.key_id, res.headers["wechatpay-serial"])
      assert.equal("WECHATPAY2-SHA256-RSA2048", res.headers["wechatpay-signature-type"])
      assert.truthy(res.headers["request-id"])
      assert.matches("^%x+$", res.headers["wechatpay-nonce"])
      local dir = sh.tmpdir()
      sh.write(dir .. "/msg", res.headers["wechatpay-timestamp"] .. "\n" .. res.headers["wechatpay-nonce"] .. "\n" .. res.body .. "\n")
      sh.write(dir .. "/sig.b64", res.headers["wechatpay-signature"])
      local out, _, code = sh.run("base64 -d " .. dir .. "/sig.b64 > " .. dir .. "/sig && openssl dgst -sha256 -verify "
        .. h.state .. "/platform.pub.pem -signature " .. dir .. "/sig " .. dir .. "/msg")
      assert.equal(0, code)
      assert.equal("Verified OK\n", out)
      -- error answers are signed too
      res = sbx.request(h, "GET", P .. "/stocks/nope?stock_creator_mchid=" .. h.mchid)
      refused(res, 404, "RESOURCE_NOT_EXISTS")
      assert.is_true(sbx.verify(h, res))
    end)

    it("refuses each broken Authorization with 401 SIGN_ERROR", function()
      local target = P .. "/stocks?offset=0&limit=1&stock_creator_mchid=" .. h.mchid
      local cases = {
        {"no header", {}, "authorization"},
        {"other scheme", {"Authorization: Bearer x"}, "authorization"},
        {"unknown mchid", {"Authorization: " .. sbx.authorization(h, "GET", target, "", {mchid = "1234567890"})}, "mchid"},
        {"unknown serial", {"Authorization: " .. sbx.authorization(h, "GET", target, "", {serial = string.rep("AB", 20)})}, "serial_no"},
        {"stale timestamp", {"Authorization: " .. sbx.authorization(h, "GET", target, "", {timestamp = math.floor(qos.time()) - 301})}, "timestamp"},
        {"future timestamp", {"Authorization: " .. sbx.authorization(h, "GET", target, "", {timestamp = math.floor(qos.time()) + 400})}, "timestamp"},
        {"signed other path", {"Authorization: " .. sbx.authorization(h, "GET", P .. "/stocks", "")}, "signature"},
        {"not base64", {"Authorization: " .. sbx.authorization(h, "GET", target, "", {signature = "WECHATPAY/SIGNTEST/abc"})}, "signature"},
      }
      for _, c in ipairs(cases) do
        local res = sbx.raw(h, "GET", target, {headers = c[2]})
        assert.equal(401, res.status, c[1])
        assert.equal("SIGN_ERROR", res.json.code, c[1])
        assert.equal(c[3], res.json.detail.field, c[1])
      end
    end)

    it("signs the body: a changed body is refused", function()
      local body = cjson.encode(sbx.stock_body(h))
      local auth = sbx.authorization(h, "POST", P .. "/coupon-stocks", body)
      local res = sbx.raw(h, "POST", P .. "/coupon-stocks", {body = body .. " ", headers = {"Authorization: " .. auth,
        "Content-Type: application/json"}})
      refused(res, 401, "SIGN_ERROR")
      assert.equal(P .. "/coupon-stocks", res.json.detail.sign_information.url)
      assert.equal("POST", res.json.detail.sign_information.method)
    end)

    it("refuses a nonce used again within the window", function()
      local target = P .. "/stocks?offset=0&limit=1&stock_creator_mchid=" .. h.mchid
      local auth = sbx.authorization(h, "GET", target, "")
      assert.equal(200, sbx.raw(h, "GET", target, {headers = {"Authorization: " .. auth}}).status)
      local res = sbx.raw(h, "GET", target, {headers = {"Authorization: " .. auth}})
      refused(res, 401, "SIGN_ERROR")
      assert.equal("nonce_str", res.json.detail.field)
    end)

    it("answers PARAM_ERROR naming the field", function()
      local cases = {
        {{stock_name = false}, "stock_name"},
        {{stock_use_rule = {max_amount = 999}}, "stock_use_rule.max_amount"},
        {{stock_use_rule = {max_coupons = "10"}}, "stock_use_rule.max_coupons"},
        {{coupon_use_rule = {fixed_normal_coupon = {coupon_amount = 100, transaction_minimum = 50}}},
          "coupon_use_rule.fixed_normal_coupon.transaction_minimum"},
        {{available_end_time = "tomorrow"}, "available_end_time"},
        {{out_request_no = "has space"}, "out_request_no"},
        -- the shared schemas: unknown fields, enums
        {{stock_nmae = "typo"}, "stock_nmae"},
        {{stock_type = "CHEAP"}, "stock_type"},
      }
      for _, c in ipairs(cases) do
        local b = sbx.stock_body(h, c[1])
        if c[1].stock_name == false then b.stock_name = nil end
        local res = sbx.request(h, "POST", P .. "/coupon-stocks", b)
        assert.equal(400, res.status, res.body)
        assert.equal("PARAM_ERROR", res.json.code, res.body)
        assert.truthy(res.json.message:find(c[2], 1, true), res.json.message)
        assert.equal("/" .. c[2]:gsub("%.", "/"), res.json.detail.field)
      end
      local res = sbx.request(h, "POST", P .. "/coupon-stocks", "{not json")
      refused(res, 400, "PARAM_ERROR")
    end)
  end)

  describe("stocks", function()
    it("creates idempotently on out_request_no, refusing the same number with another body", function()
      local res, b = create()
      assert.equal(200, res.status, res.body)
      assert.matches("^%d+$", res.json.stock_id)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%+08:00$", res.json.create_time)
      local again = sbx.request(h, "POST", P .. "/coupon-stocks", b)
      assert.equal(200, again.status, again.body)
      assert.same(res.json, again.json)
      b.stock_name = "another name"
      refused(sbx.request(h, "POST", P .. "/coupon-stocks", b), 400, "INVALID_REQUEST")
    end)

    it("moves unactivated -> running -> paused -> running and refuses other moves", function()
      local id = create().json.stock_id
      local function status()
        return sbx.request(h, "GET", P .. "/stocks/" .. id .. "?stock_creator_mchid=" .. h.mchid).json.status
      end
      assert.equal("unactivated", status())
      refused(act(id, "pause"), 400, "PARAM_ERROR")
      refused(act(id, "restart"), 400, "PARAM_ERROR")
      local res = act(id, "start")
      assert.equal(200, res.status)
      assert.equal(id, res.json.stock_id)
      assert.is_string(res.json.start_time)
      assert.equal("running", status())
      refused(act(id, "restart"), 400, "PARAM_ERROR")
      assert.is_string(act(id, "pause").json.pause_time)
      assert.equal("paused", status())
      refused(act(id, "start"), 400, "PARAM_ERROR")
      assert.is_string(act(id, "restart").json.restart_time)
      assert.equal("running", status())
      -- running after a restart: a repeated start is no longer the last change
      local again = act(id, "start")
      refused(again, 400, "PARAM_ERROR")
      assert.matches("非法的批次状态", again.json.message)
      refused(act("99999999", "start"), 404, "RESOURCE_NOT_EXISTS")
    end)

    it("queries one stock and lists stocks with paging and filters", function()
      local id = running_stock {stock_name = "list me"}
      local s = sbx.request(h, "GET", P .. "/stocks/" .. id .. "?stock_creator_mchid=" .. h.mchid).json
      assert.equal("list me", s.stock_name)
      assert.equal(h.mchid, s.stock_creator_mchid)
      assert.equal(100, s.stock_use_rule.fixed_normal_coupon.coupon_amount)
      assert.equal(0, s.distributed_coupons)
      local list = sbx.request(h, "GET", P .. "/stocks?offset=0&limit=2&status=running&stock_creator_mchid=" .. h.mchid).json
      assert.equal(2, list.limit)
      assert.is_true(list.total_count >= 1)
      assert.is_true(#list.data <= 2)
      for _, st in ipairs(list.data) do assert.equal("running", st.status) end
      refused(sbx.request(h, "GET", P .. "/stocks?offset=0&limit=11&stock_creator_mchid=" .. h.mchid), 400, "PARAM_ERROR")
      refused(sbx.request(h, "GET", P .. "/stocks?offset=0&limit=5"), 400, "PARAM_ERROR")
      local m = sbx.request(h, "GET", P .. "/stocks/" .. id .. "/merchants?offset=0&limit=10&stock_creator_mchid=" .. h.mchid).json
      assert.same({h.mchid}, m.data)
      local items = sbx.request(h, "GET", P .. "/stocks/" .. id .. "/items?offset=0&limit=10&stock_creator_mchid=" .. h.mchid)
      assert.equal(200, items.status)
      assert.equal(0, items.json.total_count)
      assert.matches('"data":%[%]', items.body)
    end)
  end)

  describe("sending coupons", function()
    it("refuses a stock that is not running", function()
      local id = create().json.stock_id
      refused(send(id, "u1"), 400, "INVALID_REQUEST")
      act(id, "start")
      assert.equal(200, send(id, "u1").status)
      act(id, "pause")
      refused(send(id, "u1"), 400, "INVALID_REQUEST")
      refused(send("99999999", "u1"), 404, "RESOURCE_NOT_EXISTS")
      refused(send(id, "u1", nil, {appid = "wx0000000000000000"}), 400, "APPID_MCHID_NOT_MATCH")
    end)

    it("enforces max_coupons and the budget with NOT_ENOUGH", function()
      local id = running_stock {stock_use_rule = {max_coupons = 5, max_amount = 500, max_coupons_per_user = 5}}
      for i = 1, 5 do assert.equal(200, send(id, "budget" .. i).status) end
      refused(send(id, "budget6"), 403, "NOT_ENOUGH")
    end)

    it("enforces max_coupons_per_user with REQUEST_BLOCKED", function()
      local id = running_stock {stock_use_rule = {max_coupons_per_user = 1}}
      assert.equal(200, send(id, "once").status)
      refused(send(id, "once"), 403, "REQUEST_BLOCKED")
      assert.equal(200, send(id, "another").status)
    end)

    it("is idempotent on out_request_no", function()
      local id = running_stock()
      local first = send(id, "idem", "same-no-" .. id)
      assert.equal(200, first.status)
      local again = send(id, "idem", "same-no-" .. id)
      assert.equal(200, again.status)
      assert.equal(first.json.coupon_id, again.json.coupon_id)
      local s = sbx.request(h, "GET", P .. "/stocks/" .. id .. "?stock_creator_mchid=" .. h.mchid).json
      assert.equal(1, s.distributed_coupons)
      refused(send(id, "someone-else", "same-no-" .. id), 400, "INVALID_REQUEST")
    end)

    it("queries one coupon and lists a user's coupons", function()
      local id = running_stock()
      local cid = send(id, "lister").json.coupon_id
      local c = sbx.request(h, "GET", P .. "/users/lister/coupons/" .. cid .. "?appid=" .. h.appid)
      assert.equal(200, c.status)
      assert.equal(cid, c.json.coupon_id)
      assert.equal(id, c.json.stock_id)
      assert.equal("SENDED", c.json.status)
      assert.equal(100, c.json.normal_coupon_information.coupon_amount)
      refused(sbx.request(h, "GET", P .. "/users/other/coupons/" .. cid .. "?appid=" .. h.appid), 404, "RESOURCE_NOT_EXISTS")
      refused(sbx.request(h, "GET", P .. "/users/lister/coupons/" .. cid), 400, "PARAM_ERROR")
      local list = sbx.request(h, "GET", P .. "/users/lister/coupons?appid=" .. h.appid .. "&stock_id=" .. id
        .. "&creator_mchid=" .. h.mchid).json
      assert.equal(1, list.total_count)
      assert.equal(cid, list.data[1].coupon_id)
      local none = sbx.request(h, "GET", P .. "/users/nobody/coupons?appid=" .. h.appid .. "&creator_mchid=" .. h.mchid)
      assert.equal(0, none.json.total_count)
      assert.matches('"data":%[%]', none.body)
    end)
  end)

  describe("the business clock", function()
    it("moves forward through the control endpoint for time windows and daily budgets", function()
      local now = sbx.now(h)
      local later = running_stock {available_begin_time = sbx.iso(now + 3600), available_end_time = sbx.iso(now + 3 * 86400)}
      refused(send(later, "early"), 400, "INVALID_REQUEST")
      local early
      local daily = running_stock {stock_use_rule = {max_amount_by_day = 200, max_coupons_per_user = 5}}
      assert.equal(200, send(daily, "d1").status)
      assert.equal(200, send(daily, "d2").status)
      refused(send(daily, "d3"), 403, "NOT_ENOUGH")
      local res = sbx.control(h, "/sandbox/clock", {advance_seconds = 86400})
      assert.equal(200, res.status)
      assert.equal(86400, res.json.offset_seconds)
      early = send(later, "early")
      assert.equal(200, early.status)
      assert.equal(200, send(daily, "d3").status)
      -- the signature timestamp still follows real time
      assert.equal(200, sbx.request(h, "GET", P .. "/stocks?offset=0&limit=1&stock_creator_mchid=" .. h.mchid).status)
      sbx.control(h, "/sandbox/clock", {advance_seconds = 3 * 86400})
      refused(send(later, "late"), 400, "INVALID_REQUEST")
      local c = sbx.request(h, "GET", P .. "/users/early/coupons/" .. early.json.coupon_id .. "?appid=" .. h.appid).json
      assert.equal("EXPIRED", c.status)
      refused(sbx.control(h, "/sandbox/clock", {advance_seconds = -5}), 400, "PARAM_ERROR")
    end)
  end)

  describe("callbacks and images", function()
    it("sets and queries the callback URL", function()
      refused(sbx.request(h, "GET", P .. "/callbacks?mchid=" .. h.mchid), 404, "RESOURCE_NOT_EXISTS")
      local res = sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = "https://example.com/notify"})
      assert.equal(200, res.status, res.body)
      assert.equal("https://example.com/notify", res.json.notify_url)
      local q = sbx.request(h, "GET", P .. "/callbacks?mchid=" .. h.mchid)
      assert.same({mchid = h.mchid, notify_url = "https://example.com/notify"}, q.json)
      refused(sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = "http://x"}), 400, "PARAM_ERROR")
      -- http only to a loopback host, where quan serve listens without TLS
      refused(sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = "http://example.com/notify"}),
        400, "PARAM_ERROR")
      for _, url in ipairs {"http://127.0.0.1:8080/notify", "http://localhost:8080/wechatpay/notify"} do
        assert.equal(200, sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = url}).status, url)
      end
    end)

    it("uploads an image as multipart with the signature over meta", function()
      local dir = sh.tmpdir()
      local png = "\137PNG\r\n\26\n" .. string.rep("\0", 64)
      sh.write(dir .. "/logo.png", png)
      local meta = cjson.encode {filename = "logo.png", sha256 = crypto.sha256(png)}
      local target = P .. "/media/image-upload"
      local auth = sbx.authorization(h, "POST", target, meta)
      local res = sbx.raw(h, "POST", target, {headers = {"Authorization: " .. auth},
        form = {"meta=" .. meta .. ";type=application/json", "file=@" .. dir .. "/logo.png;type=image/png"}})
      assert.equal(200, res.status, res.body)
      assert.matches("^https://", res.json.media_url)
      assert.is_true(sbx.verify(h, res))
      -- meta that does not match the file
      meta = cjson.encode {filename = "logo.png", sha256 = string.rep("0", 64)}
      auth = sbx.authorization(h, "POST", target, meta)
      res = sbx.raw(h, "POST", target, {headers = {"Authorization: " .. auth},
        form = {"meta=" .. meta .. ";type=application/json", "file=@" .. dir .. "/logo.png;type=image/png"}})
      refused(res, 403, "REQUEST_BLOCKED")
    end)
  end)

  describe("platform certificates (key mode switching)", function()
    local shared = h
    setup(function() h = sbx.start {key_mode = "switching"} end)
    teardown(function()
      h:stop()
      h = shared
    end)

    it("answers GET /v3/certificates with the platform certificate, encrypted with the APIv3 key", function()
      local res = sbx.request(h, "GET", "/v3/certificates")
      assert.equal(200, res.status, res.body)
      assert.is_true(sbx.verify(h, res))
      local e = res.json.data[1]
      local ec = e.encrypt_certificate
      assert.equal("AEAD_AES_256_GCM", ec.algorithm)
      assert.equal("certificate", ec.associated_data)
      local pem = assert(crypto.aes_gcm_decrypt(sh.read(h.state .. "/apiv3.key"), ec.nonce, ec.associated_data, ec.ciphertext))
      local cert = assert(crypto.certificate(pem))
      assert.equal(e.serial_no, cert:serial():upper())
      -- its key is the platform key: the PUB_KEY_ID's
      assert.equal(sh.read(h.state .. "/platform.pub.pem"), cert:public_key():pem_public())
      assert.same({}, sbx.request(h, "GET", "/v3/certificates?algorithm_type=SM2").json.data)
      refused(sbx.request(h, "GET", "/v3/certificates?algorithm_type=DSA"), 400, "PARAM_ERROR")
    end)

    it("signs an answer under the certificate unless the request names the PUB_KEY_ID", function()
      local serial = sbx.request(h, "GET", "/v3/certificates").json.data[1].serial_no
      for _, named in ipairs {serial, false, "PUB_KEY_ID_0114000000000000000000000000"} do
        local res = sbx.request(h, "GET", "/v3/certificates", nil, {wechatpay_serial = named})
        assert.equal(serial, res.headers["wechatpay-serial"], tostring(named))
        assert.is_true(sbx.verify(h, res))
      end
      local res = sbx.request(h, "GET", "/v3/certificates", nil, {wechatpay_serial = h.key_id})
      assert.equal(h.key_id, res.headers["wechatpay-serial"])
    end)
  end)

  describe("coupon use and its notification", function()
    local function use(body) return assert(sbx.control(h, "/sandbox/coupons/use", body)) end

    it("uses a coupon: USED, and the COUPON.USE notification with consume_information", function()
      -- a callback URL set by an earlier spec is switched off: nothing is delivered
      sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = "https://merchant.quan.invalid/notify",
        switch = false})
      local id = running_stock()
      local coupon_id = send(id, "user-use").json.coupon_id
      local res = use {coupon_id = coupon_id, openid = "user-use", transaction_id = "4200000001"}
      assert.equal(200, res.status, res.body)
      assert.equal("USED", res.json.coupon.status)
      assert.equal("4200000001", res.json.coupon.consume_information.transaction_id)
      assert.equal(h.mchid, res.json.coupon.consume_information.consume_mchid)
      assert.is_nil(res.json.delivery) -- no callback URL set in this state dir yet
      -- the notification: signed by the platform key, resource encrypted with the APIv3 key
      local note = res.json.notification
      local sig_ok = sbx.verify(h, {headers = (function()
        local lower = {}
        for k, v in pairs(note.headers) do lower[k:lower()] = v end
        return lower
      end)(), body = note.body})
      assert.is_true(sig_ok)
      local env = cjson.decode(note.body)
      assert.equal("COUPON.USE", env.event_type)
      assert.equal("encrypt-resource", env.resource_type)
      assert.equal("AEAD_AES_256_GCM", env.resource.algorithm)
      local apiv3 = sh.read(h.state .. "/apiv3.key")
      local plain = assert(crypto.aes_gcm_decrypt(apiv3, env.resource.nonce, env.resource.associated_data,
        env.resource.ciphertext))
      local data = cjson.decode(plain)
      assert.equal(coupon_id, data.coupon_id)
      assert.equal(id, data.stock_id)
      assert.equal("USED", data.status)
      assert.equal("4200000001", data.consume_information.transaction_id)
      -- the coupon reads USED from the API (without consume_information,
      -- which only the notification carries), and cannot be used twice
      local got = sbx.request(h, "GET", P .. "/users/user-use/coupons/" .. coupon_id .. "?appid=" .. h.appid)
      assert.equal("USED", got.json.status)
      assert.is_nil(got.json.consume_information)
      local list = sbx.request(h, "GET", P .. "/users/user-use/coupons?appid=" .. h.appid .. "&status=USED&creator_mchid=" .. h.mchid)
      assert.equal(1, list.json.total_count)
      assert.equal("USED", list.json.data[1].status)
      assert.is_nil(list.json.data[1].consume_information)
      refused(use {coupon_id = coupon_id, openid = "user-use"}, 400, "INVALID_REQUEST")
      refused(use {coupon_id = coupon_id, openid = "someone-else"}, 404, "RESOURCE_NOT_EXISTS")
      refused(use {coupon_id = coupon_id}, 400, "PARAM_ERROR")
    end)

    it("delivers the notification to the callback URL, which the client verifies", function()
      local dir = sh.tmpdir()
      local server = require "quan.server"
      -- a merchant endpoint with a certificate the sandbox's CA signed
      local srv = assert(server.start {handler = "tests.support.notify_handler", arg = dir .. "/got",
        cert = "file://" .. h.state .. "/server.pem", key = "file://" .. h.state .. "/server.key.pem"})
      local ok, err = pcall(function()
        local url = "https://127.0.0.1:" .. srv:port() .. "/notify"
        assert.equal(200, sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = url}).status)
        local id = running_stock()
        local coupon_id = send(id, "user-notify").json.coupon_id
        local res = use {coupon_id = coupon_id, openid = "user-notify"}
        assert.equal(200, res.status, res.body)
        assert.same({notify_url = url, status = 200, attempts = 1, state = "delivered"}, res.json.delivery)
        local got = cjson.decode(sh.read(dir .. "/got"))
        assert.equal("POST", got.method)
        assert.equal(res.json.notification.body, got.body)
        local wx = require("tests.support.batchsbx").client(h)
        local ev = assert(wx:notification(got.headers, got.body))
        assert.equal("COUPON.USE", ev.event_type)
        assert.equal(coupon_id, ev.data.coupon_id)
        assert.equal("USED", ev.data.status)
      end)
      srv:stop()
      sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = "https://merchant.quan.invalid/notify",
        switch = false})
      assert(ok, err)
    end)
  end)

  describe("notification retries", function()
    local function use(body) return assert(sbx.control(h, "/sandbox/coupons/use", body)) end
    local function policy(b)
      local res = assert(sbx.control(h, "/sandbox/notifications", b))
      assert.equal(200, res.status, res.body)
      return res.json
    end
    -- entry(event_id) -> the outbox entry of GET /sandbox/notifications
    local function entry(event_id)
      for _, e in ipairs(policy().data) do
        if e.event_id == event_id then return e end
      end
    end
    local function lines(path)
      local out = {}
      local f = io.open(path)
      if not f then return out end
      for line in f:lines() do out[#out + 1] = cjson.decode(line) end
      f:close()
      return out
    end

    -- with_receiver(spec_suffix, fn(url, got)): a merchant endpoint (the
    -- sandbox CA signed its certificate) set as the callback URL during fn
    local function with_receiver(suffix, fn)
      local got = sh.tmpdir() .. "/got"
      local srv = assert(require("quan.server").start {handler = "tests.support.notify_handler", arg = got .. suffix,
        cert = "file://" .. h.state .. "/server.pem", key = "file://" .. h.state .. "/server.key.pem"})
      local url = "https://127.0.0.1:" .. srv:port() .. "/notify"
      local ok, err = pcall(function()
        assert.equal(200, sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = url}).status)
        fn(url, got)
      end)
      srv:stop()
      sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = "https://merchant.quan.invalid/notify",
        switch = false})
      policy {retry_interval = 60, retries = 9, signed_by = "public_key"}
      assert(ok, err)
    end

    it("has WeChat Pay's policy by default: a retry a minute, 9 times", function()
      local p = policy()
      assert.equal(60, p.retry_interval)
      assert.equal(9, p.retries)
    end)

    it("retries until the receiver answers 2xx: the same body, signed anew each time", function()
      with_receiver("#fail=2", function(url, got)
        assert.same({retry_interval = 0.2, retries = 3}, (function()
          local p = policy {retry_interval = 0.2, retries = 3}
          return {retry_interval = p.retry_interval, retries = p.retries}
        end)())
        local coupon_id = send(running_stock(), "user-retry").json.coupon_id
        local res = use {coupon_id = coupon_id, openid = "user-retry"}
        assert.equal(200, res.status, res.body)
        local d = res.json.delivery
        assert.same({notify_url = url, status = 500, attempts = 1, state = "pending", retry_in_seconds = 0.2}, d)
        local event_id = cjson.decode(res.json.notification.body).id
        local deadline = qos.now() + 15
        while entry(event_id).state ~= "delivered" and qos.now() < deadline do qos.sleep(0.05) end
        local e = entry(event_id)
        assert.same({event_id = event_id, notify_url = url, state = "delivered", attempts = 3, status = 200},
          {event_id = e.event_id, notify_url = e.notify_url, state = e.state, attempts = e.attempts, status = e.status})
        local calls = lines(got)
        assert.equal(3, #calls)
        local wx = require("tests.support.batchsbx").client(h)
        local nonces = {}
        for i, c in ipairs(calls) do
          assert.equal(res.json.notification.body, c.body, "attempt " .. i)
          local ev = assert(wx:notification(c.headers, c.body))
          assert.equal(coupon_id, ev.data.coupon_id)
          nonces[c.headers["wechatpay-nonce"]] = true
        end
        local n = 0
        for _ in pairs(nonces) do n = n + 1 end
        assert.equal(3, n) -- a fresh signature for every attempt
      end)
    end)

    it("gives up after the last retry, and says so", function()
      with_receiver("#fail=100", function(_, got)
        policy {retry_interval = 0.1, retries = 1}
        local coupon_id = send(running_stock(), "user-giveup").json.coupon_id
        local res = use {coupon_id = coupon_id, openid = "user-giveup"}
        local event_id = cjson.decode(res.json.notification.body).id
        local deadline = qos.now() + 15
        while entry(event_id).state ~= "failed" and qos.now() < deadline do qos.sleep(0.05) end
        local e = entry(event_id)
        assert.equal("failed", e.state)
        assert.equal(2, e.attempts)
        assert.equal(500, e.status)
        assert.is_nil(e.retry_in_seconds)
        qos.sleep(0.4)
        assert.equal(2, #lines(got)) -- no third attempt
      end)
    end)

    it("retries a receiver that was not listening, naming the transport error", function()
      local port
      do -- a port nothing listens on
        local srv = assert(require("quan.server").start {handler = "tests.support.notify_handler", arg = "/dev/null",
          cert = "file://" .. h.state .. "/server.pem", key = "file://" .. h.state .. "/server.key.pem"})
        port = srv:port()
        srv:stop()
      end
      local url = "https://127.0.0.1:" .. port .. "/notify"
      assert.equal(200, sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = url}).status)
      local ok, err = pcall(function()
        policy {retry_interval = 30, retries = 2}
        local coupon_id = send(running_stock(), "user-down").json.coupon_id
        local d = use({coupon_id = coupon_id, openid = "user-down"}).json.delivery
        assert.equal("pending", d.state)
        assert.equal(1, d.attempts)
        assert.is_nil(d.status)
        assert.is_string(d.error)
        assert.equal(30, d.retry_in_seconds)
      end)
      sbx.request(h, "POST", P .. "/callbacks", {mchid = h.mchid, notify_url = "https://merchant.quan.invalid/notify",
        switch = false})
      policy {retry_interval = 60, retries = 9}
      assert(ok, err)
    end)

    it("sends a pending retry after a restart of the sandbox", function()
      local dir = sh.tmpdir() .. "/state"
      local shared = h
      h = sbx.start {state = dir}
      local b
      local ok, err = pcall(with_receiver, "#fail=1", function(_, got)
        policy {retry_interval = 1, retries = 3}
        local coupon_id = send(running_stock(), "user-restart").json.coupon_id
        local res = use {coupon_id = coupon_id, openid = "user-restart"}
        assert.equal("pending", res.json.delivery.state)
        local event_id = cjson.decode(res.json.notification.body).id
        h:stop() -- before the retry is due
        assert.equal(1, #lines(got))
        b = sbx.start {state = dir}
        h = b
        local deadline = qos.now() + 15
        while entry(event_id).state ~= "delivered" and qos.now() < deadline do qos.sleep(0.05) end
        assert.equal(2, entry(event_id).attempts)
        local calls = lines(got)
        assert.equal(2, #calls)
        assert.equal(calls[1].body, calls[2].body)
      end)
      h:stop()
      if b then b:stop() end
      h = shared
      assert(ok, err)
    end)

    it("signs notifications under the platform certificate for a merchant in certificate mode", function()
      with_receiver("", function(_, got)
        assert.equal("public_key", policy().signed_by)
        assert.equal("certificate", policy({signed_by = "certificate"}).signed_by)
        local coupon_id = send(running_stock(), "user-certmode").json.coupon_id
        local res = use {coupon_id = coupon_id, openid = "user-certmode"}
        assert.equal("delivered", res.json.delivery.state)
        local serial = crypto.certificate("file://" .. h.state .. "/platform.pem"):serial():upper()
        local call = lines(got)[1]
        assert.equal(serial, call.headers["wechatpay-serial"])
        assert.equal(serial, res.json.notification.headers["Wechatpay-Serial"])
        -- a client that holds only the certificate verifies it; one that
        -- holds only the public key cannot
        local _, profile = require("tests.support.batchsbx").client(h)
        local function client(certs)
          return require("wechatpay").new {mchid = profile.mchid, serial = profile.serial,
            private_key = profile.private_key, apiv3_key = profile.apiv3_key, certs = certs}
        end
        local by_cert = client {[serial] = "file://" .. h.state .. "/platform.pem"}
        assert.equal(coupon_id, assert(by_cert:notification(call.headers, call.body)).data.coupon_id)
        local by_key = client {[h.key_id] = "file://" .. h.state .. "/platform.pub.pem"}
        local ev, err = by_key:notification(call.headers, call.body)
        assert.is_nil(ev)
        assert.equal("unknown_serial", err.code)
        policy {signed_by = "public_key"}
      end)
    end)

    it("refuses a policy it cannot follow", function()
      for _, b in ipairs {{retries = -1}, {retries = 1.5}, {retries = 101}, {retries = "3"},
          {retry_interval = -1}, {retry_interval = "soon"}, {retry_interval = 86401}, {signed_by = "rsa"}} do
        local res = assert(sbx.control(h, "/sandbox/notifications", b))
        refused(res, 400, "PARAM_ERROR")
      end
      local p = policy()
      assert.equal(60, p.retry_interval)
      assert.equal(9, p.retries)
    end)
  end)

  describe("faults", function()
    local function set(spec)
      local res = sbx.control(h, "/sandbox/faults", {spec = spec})
      assert.equal(200, res.status, res.body)
    end
    after_each(function() set("") end)
    local function get()
      return sbx.request(h, "GET", P .. "/stocks?offset=0&limit=1&stock_creator_mchid=" .. h.mchid)
    end

    it("answers 429 FREQUENCY_LIMIT_EXCEED and 500 SYSTEM_ERROR at the given rate", function()
      set("error429=1")
      refused(get(), 429, "FREQUENCY_LIMIT_EXCEED")
      set("error500=1")
      refused(get(), 500, "SYSTEM_ERROR")
      set("latency=1ms")
      assert.equal(200, get().status)
      assert.equal("latency=1ms", sbx.control(h, "/sandbox/faults").json.faults)
    end)

    it("drops the connection after the write was committed", function()
      local id = running_stock()
      assert.equal(200, send(id, "dropped", "drop1-" .. id).status)
      set("drop=1")
      local res, err = sbx.request(h, "POST", P .. "/users/dropped/coupons",
        {stock_id = id, out_request_no = "drop2-" .. id, appid = h.appid, stock_creator_mchid = h.mchid})
      assert.is_nil(res)
      assert.truthy(err)
      set("")
      local s = sbx.request(h, "GET", P .. "/stocks/" .. id .. "?stock_creator_mchid=" .. h.mchid).json
      assert.equal(2, s.distributed_coupons)
      local again = send(id, "dropped", "drop2-" .. id)
      assert.equal(200, again.status)
      assert.equal(2, sbx.request(h, "GET", P .. "/stocks/" .. id .. "?stock_creator_mchid=" .. h.mchid).json.distributed_coupons)
    end)

    it("tampers with answers so a verifying client rejects them", function()
      local expect = {signature = "signature mismatch", body = "signature mismatch", serial = "unknown serial",
        timestamp = "timestamp out of window"}
      for kind, why in pairs(expect) do
        set("tamper=" .. kind)
        local res = get()
        assert.equal(200, res.status)
        local ok, reason = sbx.verify(h, res)
        assert.is_false(ok, kind)
        assert.matches(why, reason, 1, true)
      end
      set("")
      assert.is_true(sbx.verify(h, get()))
      refused(sbx.control(h, "/sandbox/faults", {spec = "tamper=nonsense"}), 400, "PARAM_ERROR")
    end)
  end)

  describe("connections", function()
    local conns = require "tests.support.connections"
    local function port() return tonumber(h.base_url:match(":(%d+)$")) end

    it("answers 500 kept-alive TLS clients at once", function()
      -- connecting over 1 s, as a batch ramps up
      local r = conns.run("keepalive", port(), {"--tls", h.state .. "/ca.pem", "--clients", 500, "--requests", 2,
        "--ramp", 1, "--path", "/sandbox/health", "--hold", 0})
      assert.same({}, r.errors)
      assert.same({1000, 500}, {r.ok, r.ok_after_hold}) -- all 500 open at once for the last one
    end)

    it("answers health while 200 slowloris connections are open over TLS", function()
      local wait = conns.start("slowloris", port(), {"--tls", h.state .. "/ca.pem", "--clients", 200, "--interval", 1,
        "--duration", 60})
      for _ = 1, 5 do
        local status, t = conns.timed(h.base_url .. "/sandbox/health", "--cacert " .. h.state .. "/ca.pem")
        assert.equal(200, status)
        assert.is_true(t < 3, t) -- 1 s is the target (scripts/bench/sandbox.lua); 3 s leaves a busy machine room
      end
      local r = wait(true)
      assert.same({200, 200}, {r.opened, r.open_at_end})
    end)

    it("speaks TLS 1.2 and 1.3, as WeChat Pay does, never 1.1", function()
      local out, code = conns.tls_handshake(port(), "tls1_1", h.state .. "/ca.pem")
      assert.not_equal(0, code)
      assert.matches("Cipher is %(NONE%)", out)
      for _, version in ipairs {"tls1_2", "tls1_3"} do
        out, code = conns.tls_handshake(port(), version, h.state .. "/ca.pem")
        assert.equal(0, code, version)
      end
    end)
  end)

  describe("lifecycle", function()
    it("keeps its state across a restart and takes --faults at start", function()
      local dir = sh.tmpdir() .. "/state"
      local a = sbx.start {state = dir}
      local res = sbx.request(a, "POST", P .. "/coupon-stocks", sbx.stock_body(a))
      local id = res.json.stock_id
      local mchid = a.mchid
      a:stop()
      local b = sbx.start {state = dir, faults = "error429=1"}
      assert.equal(mchid, b.mchid)
      refused(sbx.request(b, "GET", P .. "/stocks/" .. id .. "?stock_creator_mchid=" .. b.mchid), 429, "FREQUENCY_LIMIT_EXCEED")
      sbx.control(b, "/sandbox/faults", {spec = ""})
      local s = sbx.request(b, "GET", P .. "/stocks/" .. id .. "?stock_creator_mchid=" .. b.mchid)
      assert.equal(200, s.status)
      assert.equal("unactivated", s.json.status)
      b:stop()
    end)

    it("names a damaged database or a missing identity file of its state, not a line of its own", function()
      local dir = sh.tmpdir() .. "/state"
      local a = sbx.start {state = dir}
      a:stop()
      sh.write(dir .. "/sandbox.db", "not a database\n")
      local out, err, code = sh.run(sh.quote(sh.quan) .. " sandbox --state " .. sh.quote(dir))
      assert.equal(1, code, out .. err)
      assert.equal("quan sandbox: state " .. dir .. " cannot be set up: sqlite open " .. dir
        .. "/sandbox.db: file is not a database\n", err)
      assert.equal("not a database\n", sh.read(dir .. "/sandbox.db")) -- left as it was, for its owner
      -- a state without one of its identity files (a traceback of the handler's start, before)
      os.remove(dir .. "/sandbox.db")
      os.remove(dir .. "/apiv3.key")
      out, err, code = sh.run(sh.quote(sh.quan) .. " sandbox --state " .. sh.quote(dir))
      assert.equal(1, code, out .. err)
      assert.equal("quan sandbox: state " .. dir .. " cannot be set up: the state lacks apiv3.key: put it back, "
        .. "or start with a new --state\n", err)
    end)

    it("stops on SIGTERM and when its parent dies", function()
      local dir = sh.tmpdir()
      local ready = dir .. "/ready"
      -- a shell parent that is killed: the sandbox notices and exits
      local pid = qos.spawn({"/bin/sh", "-c", sh.quote(sh.quan) .. " sandbox --state " .. dir .. "/s --ready-file " .. ready
        .. " >/dev/null 2>&1 & echo $! > " .. dir .. "/pid; wait"})
      local deadline = qos.now() + 30
      while not io.open(ready) and qos.now() < deadline do qos.sleep(0.05) end
      assert.truthy(io.open(ready))
      local child = tonumber(sh.read(dir .. "/pid"))
      qos.kill(pid, "KILL")
      qos.wait(pid)
      deadline = qos.now() + 10
      while io.open(ready) and qos.now() < deadline do qos.sleep(0.05) end
      assert.is_nil(io.open(ready))
      deadline = qos.now() + 10
      while sh.run("kill -0 " .. child .. " 2>/dev/null && echo alive") ~= "" and qos.now() < deadline do qos.sleep(0.05) end
      assert.equal("", (sh.run("kill -0 " .. child .. " 2>/dev/null && echo alive")))
    end)

    it("refuses --temporary for anything but a new, empty --state directory", function()
      local dir = sh.tmpdir()
      qos.mkdir(dir .. "/keep", 448)
      sh.write(dir .. "/keep/notes.txt", "precious\n")
      for _, args in ipairs { " --state " .. dir .. "/keep --temporary", " --temporary" } do
        local _, err, code = sh.run(sh.quote(sh.quan) .. " sandbox" .. args)
        assert.equal(2, code, args)
        assert.matches("%-%-temporary wants %-%-state naming a new, empty directory", err)
      end
      assert.equal("precious\n", sh.read(dir .. "/keep/notes.txt"))
    end)

    it("removes a temporary state, keys and all, even when its starter is killed", function()
      local dir = sh.tmpdir()
      -- a script that starts a private sandbox, reports its state dir, and sleeps
      sh.write(dir .. "/starter.lua", [[
        local h = assert(require("quan.sandbox").start())
        local f = assert(io.open(arg[1], "w")) f:write(h.state) f:close()
        require("quan.os").sleep(60)
      ]])
      local pid = qos.spawn({sh.quan, dir .. "/starter.lua", dir .. "/state"}, {stdout = "/dev/null", stderr = "/dev/null"})
      local deadline = qos.now() + 30
      -- (the file is made before it is written: wait for its text)
      while not (io.open(dir .. "/state") and sh.read(dir .. "/state") ~= "") and qos.now() < deadline do qos.sleep(0.05) end
      local state = sh.read(dir .. "/state")
      assert.truthy(io.open(state .. "/merchant.key.pem"))
      qos.kill(pid, "KILL")
      qos.wait(pid)
      deadline = qos.now() + 10
      while io.open(state .. "/apiv3.key") and qos.now() < deadline do qos.sleep(0.05) end
      assert.is_nil(io.open(state .. "/apiv3.key"))
      assert.is_nil(io.open(state .. "/merchant.key.pem"))
    end)

    it("removes a whole temporary state at stop, never what a link in it points to", function()
      local outside = sh.tmpdir()
      sh.write(outside .. "/keep.txt", "precious\n")
      local t = assert(require("quan.sandbox").start())
      local state = t.state
      assert(qos.mkdir(state .. "/nested"))
      assert(qos.mkdir(state .. "/nested/deeper"))
      sh.write(state .. "/nested/deeper/f", "x")
      sh.write(state .. "/it's \"quoted\"", "x")
      sh.run("ln -s " .. sh.quote(outside) .. " " .. sh.quote(state .. "/link"))
      t:stop()
      assert.is_nil(qos.stat(state))
      assert.equal("precious\n", sh.read(outside .. "/keep.txt"))
    end)

    it("serves the wechatpay client through its config.lua", function()
      if not pcall(require, "wechatpay") then return pending("wechatpay client not built in") end
      local dir = sh.tmpdir()
      sh.write(dir .. "/body.json", cjson.encode(sbx.stock_body(h)))
      sh.write(dir .. "/create.lua", [[
        local wx = require("wechatpay").client()
        local body = require("cjson").decode(io.open(arg[1]):read("a"))
        local res = wx.v3.marketing.favor.couponStocks:post { json = body }
        print(res.json.stock_id, res.json.create_time)
      ]])
      local out, err, code = sh.run("QUAN_CONFIG=" .. h.config_path .. " " .. sh.quote(sh.quan) .. " --profile sandbox "
        .. dir .. "/create.lua " .. dir .. "/body.json")
      assert.equal(0, code, err)
      local id = out:match("^(%d+)\t%d%d%d%d%-")
      assert.truthy(id, out)
      local s = sbx.request(h, "GET", P .. "/stocks/" .. id .. "?stock_creator_mchid=" .. h.mchid)
      assert.equal("unactivated", s.json.status)
    end)

    it("runs the examples of docs/sandbox.md", function()
      local md = require "tests.support.mdexamples"
      local blocks = md.blocks("docs/sandbox.md")
      assert.is_true(#blocks >= 2)
      for i = 1, #blocks do md.run("docs/sandbox.md", i) end
    end)

    it("answers --help and refuses bad arguments", function()
      local out, err, code = sh.run(sh.quote(sh.quan) .. " sandbox --help")
      assert.equal(0, code)
      assert.matches("^usage: quan sandbox", out)
      assert.matches("\n  %-%-ready%-file FILE ", out)
      for _, c in ipairs {
        { "--bogus", "unknown option '%-%-bogus'" },
        { "--stat /tmp/x", "unknown option '%-%-stat' %(did you mean %-%-state%?%)" },
        { "--state", "%-%-state needs a value" },
        { "--temporary=yes", "%-%-temporary takes no value" },
        { "extra", "unexpected argument 'extra'" },
      } do
        _, err, code = sh.run(sh.quote(sh.quan) .. " sandbox " .. c[1])
        assert.equal(2, code, c[1])
        assert.matches("^quan sandbox: " .. c[2] .. "\nusage: quan sandbox %[options%]\n", err)
      end
      _, err, code = sh.run(sh.quote(sh.quan) .. " sandbox --listen 0.0.0.0:0 --state " .. sh.tmpdir())
      assert.equal(2, code)
      assert.matches("loopback", err)
      _, err, code = sh.run(sh.quote(sh.quan) .. " sandbox --faults drop=2 --state " .. sh.tmpdir())
      assert.equal(2, code)
      assert.matches("faults: drop wants a rate", err)
      assert.has_error(function() require("quan.sandbox").start {bogus = 1} end, "quan.sandbox.start: unknown option 'bogus'")
    end)

    it("refuses an address, port or fault rate out of range, and a state or ready file it cannot use, with exit 2", function()
      local dir = sh.tmpdir()
      for _, c in ipairs {
        { "--listen 127.0.0.1:70000", "^quan sandbox: %-%-listen: port 70000 is out of range %(0..65535%)\nusage: " },
        { "--listen 127.999.0.1:0", "^quan sandbox: %-%-listen: 127.999.0.1 is not an IPv4 address" },
        { "--faults tamper=body:2", "^quan sandbox: faults: tamper's rate %(after ':'%) wants a rate between 0 and 1\n$" },
        { "--faults error429=2", "^quan sandbox: faults: error429 wants a rate between 0 and 1\n$" },
        { "--ready-file /nonexistent/f",
          "^quan sandbox: %-%-ready%-file /nonexistent/f cannot be written %(No such file or directory%)\n$" },
        { "--ready-file " .. dir .. "/none/f", "cannot be written %(No such file or directory%)" },
        { "--state /proc/x", "^quan sandbox: state directory /proc/x cannot be made %(/proc/x: No such file or directory%)\n$" },
        { "--state /dev/null/x", "^quan sandbox: state directory /dev/null/x cannot be made %(/dev/null/x: Not a directory%)\n$" },
      } do
        local args = c[1]:match("^%-%-state") and c[1] or (c[1] .. " --state " .. dir .. "/sb")
        local out, err, code = sh.run("timeout 20 " .. sh.quote(sh.quan) .. " sandbox " .. args)
        assert.equal(2, code, c[1] .. "\n" .. err)
        assert.equal("", out, c[1])
        assert.matches(c[2], err)
        assert.not_matches("traceback", err)
        assert.same({}, qos.list(dir), c[1]) -- nothing made
      end
      -- a ready file is replaced, then removed at stop: never a fifo or a device
      local fifo = sh.tmpdir() .. "/ready"
      assert(os.execute("mkfifo " .. sh.quote(fifo)))
      local out, err, code = sh.run("timeout 20 " .. sh.quote(sh.quan) .. " sandbox --ready-file " .. sh.quote(fifo)
        .. " --state " .. sh.quote(dir .. "/sb"))
      assert.same({ 2, "" }, { code, out }, err)
      assert.matches("^quan sandbox: %-%-ready%-file .*/ready is a fifo, not a file: it would be replaced, then removed\n", err)
      assert.equal("fifo", qos.stat(fifo).kind)
      assert.same({}, qos.list(dir))
    end)

    it("checks every argument before it makes anything: exit 2, nothing made, nothing left", function()
      local dir = sh.tmpdir()
      local log = sh.write(sh.tmpdir() .. "/sandbox.log", "") -- start{}'s temporary state holds its log
      for _, c in ipairs {
        { "--listen 127.0.0.01:0", "^quan sandbox: %-%-listen: 127%.0%.0%.01 is not an IPv4 address %(each part 0..255, "
          .. "without leading zeros%)\nusage: quan sandbox" },
        { "--listen 127.0.0.1:0x50", "^quan sandbox: %-%-listen wants a loopback address and port" },
        { "--listen 127.0.0.1:99999999999999999999", "^quan sandbox: %-%-listen: port 99999999999999999999 is out of range" },
        { "--listen 127.1:0", "^quan sandbox: %-%-listen wants a loopback address and port" },
        { "--faults latency=fast", "^quan sandbox: faults: latency wants a duration" },
        { "--ready-file " .. dir .. "/no/such/folder/f", "^quan sandbox: %-%-ready%-file .* cannot be written" },
      } do
        for _, temporary in ipairs { "", " --temporary" } do
          for _, state in ipairs { dir .. "/new/state", log:match("^(.*)/") } do
            local out, err, code = sh.run("timeout 20 " .. sh.quote(sh.quan) .. " sandbox " .. c[1]
              .. " --state " .. sh.quote(state) .. temporary)
            local what = c[1] .. temporary .. " in " .. state
            assert.equal(2, code, what .. "\n" .. err)
            assert.equal("", out, what)
            assert.matches(c[2], err)
            assert.not_matches("traceback", err)
            assert.same({}, qos.list(dir), what)
            assert.same({ "sandbox.log" }, qos.list(log:match("^(.*)/")), what)
          end
        end
      end
      -- --temporary without --state: refused before the default state is made
      local home = sh.tmpdir()
      local _, err, code = sh.run("env -u QUAN_SANDBOX_STATE -u XDG_DATA_HOME HOME=" .. sh.quote(home) .. " "
        .. sh.quote(sh.quan) .. " sandbox --temporary")
      assert.equal(2, code, err)
      assert.matches("^quan sandbox: %-%-temporary wants %-%-state naming a new, empty directory", err)
      assert.same({}, qos.list(home))
    end)

    it("takes back what it made when it cannot serve (a port in use): a new or temporary state goes, with its folders", function()
      local taken = sbx.start {}
      local port = taken.base_url:match(":(%d+)$")
      local dir = sh.tmpdir()
      local log = sh.write(sh.tmpdir() .. "/sandbox.log", "")
      for _, c in ipairs {
        { state = dir .. "/a/b/state", after = {} },
        { state = dir .. "/a/b/state", temporary = true, after = {} },
        { state = log:match("^(.*)/"), temporary = true, after = { "sandbox.log" } },
      } do
        local _, err, code = sh.run("timeout 60 " .. sh.quote(sh.quan) .. " sandbox --listen 127.0.0.1:" .. port
          .. " --state " .. sh.quote(c.state) .. (c.temporary and " --temporary" or ""))
        assert.equal(1, code, err)
        assert.matches("^quan sandbox: server: cannot listen on 127%.0%.0%.1:" .. port .. ": Address already in use\n$", err)
        if c.after[1] then assert.same(c.after, qos.list(c.state)) else assert.same({}, qos.list(dir)) end
      end
      -- a state that served before keeps what it holds
      local kept = sh.tmpdir() .. "/kept"
      local first = sbx.start { state = kept }
      first:stop()
      local before = qos.list(kept)
      table.sort(before)
      local _, err, code = sh.run("timeout 60 " .. sh.quote(sh.quan) .. " sandbox --listen 127.0.0.1:" .. port
        .. " --state " .. sh.quote(kept))
      assert.equal(1, code, err)
      local after = qos.list(kept)
      table.sort(after)
      assert.same(before, after)
      taken:stop()
    end)

    it("refuses a second sandbox on the same state", function()
      local dir = sh.tmpdir() .. "/one"
      local a = sbx.start {state = dir}
      local _, err, code = sh.run(sh.quote(sh.quan) .. " sandbox --state " .. dir)
      assert.equal(1, code)
      assert.matches("in use by another sandbox", err)
      a:stop()
    end)

    it("adds no globals", function()
      local before = {}
      for k in pairs(_G) do before[k] = true end
      require "quan.sandbox"
      require "quan.sandbox.handler"
      for k in pairs(_G) do assert.truthy(before[k], k) end
    end)
  end)
end)
