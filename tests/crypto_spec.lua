-- quan.crypto, cross-checked against the openssl command line (both
-- directions), python3's `cryptography` for AES-GCM, and the public vectors
-- of the official SDKs' test suites (each named where it is used).
local sh = require "tests.support.sh"
local ossl = require "tests.support.openssl"

local q = sh.quote

-- raises(fn, msg): fn raises msg (when given) at the caller's position;
-- the function name in a "bad argument" message is as Lua finds it, with or
-- without "quan.crypto."
local function raises(fn, msg)
  local ok, err = pcall(fn)
  assert(not ok, "expected an error" .. (msg and ": " .. msg or ""))
  err = tostring(err)
  assert.matches("^tests/crypto_spec%.lua:%d+: ", err)
  err = err:gsub("^[^:]*:%d+: ", ""):gsub("'quan%.crypto%.", "'")
  if msg then assert.equal(msg, err) end
end

-- the globals present before the module is loaded
local globals_before = {}
for k in pairs(_G) do globals_before[k] = true end
local crypto = require "quan.crypto"

describe("quan.crypto", function()
  local K -- key material made by the openssl CLI (tests.support.openssl)

  setup(function()
    K = ossl.keys()
  end)

  it("adds no globals", function()
    local added = {}
    for k in pairs(_G) do
      if not globals_before[k] then added[#added + 1] = tostring(k) end
    end
    assert.same({}, added)
    assert.equal(crypto, require "quan.crypto")
  end)

  describe("loading keys", function()
    it("loads private keys as PKCS#1 and PKCS#8, from text and file://", function()
      for _, path in ipairs{K.pkcs8, K.pkcs1} do
        for _, src in ipairs{sh.read(path), "file://" .. path} do
          local k, err = crypto.private_key(src)
          assert.is_nil(err)
          assert.equal("quan.crypto.key (RSA 2048, private)", tostring(k))
          assert.is_true(k:is_private())
          assert.equal(2048, k:bits())
        end
      end
    end)

    it("loads encrypted keys (PKCS#8 and legacy PKCS#1) with their passphrase only", function()
      for _, path in ipairs{K.encrypted, K.legacy} do
        local k = crypto.private_key("file://" .. path, K.passphrase)
        assert.is_true(k:is_private())
        assert.equal(sh.read(K.spki), k:pem_public())
        local none, msg, code = crypto.private_key("file://" .. path)
        assert.is_nil(none)
        assert.equal("private key: encrypted, a passphrase is needed", msg)
        assert.equal("pem", code)
        none, msg, code = crypto.private_key(sh.read(path), "wrong")
        assert.is_nil(none)
        assert.matches("^private key: wrong passphrase or bad PEM", msg)
        assert.equal("pem", code)
      end
    end)

    it("loads public keys as SPKI, PKCS#1 and from a certificate", function()
      for _, path in ipairs{K.spki, K.pkcs1_pub, K.cert} do
        for _, src in ipairs{sh.read(path), "file://" .. path} do
          local k, err = crypto.public_key(src)
          assert.is_nil(err)
          assert.equal("quan.crypto.key (RSA 2048, public)", tostring(k))
          assert.is_false(k:is_private())
          assert.equal(sh.read(K.spki), k:pem_public())
        end
      end
    end)

    it("gives the public half of a private key, never its private part", function()
      local k = crypto.private_key("file://" .. K.pkcs8)
      local p = k:public()
      assert.is_false(p:is_private())
      assert.equal(sh.read(K.spki), p:pem_public())
      assert.equal(sh.read(K.spki), k:pem_public())
      assert.equal(p, p:public())
      raises(function() p:sign("x") end)
    end)

    it("returns nil, message, code for what is not a usable key", function()
      ossl.run("mkfifo " .. q(K.dir .. "/fifo")) -- must not block the reader
      local cases = {
        {crypto.private_key, "hello", "private key: no PEM block found", "pem"},
        {crypto.private_key, "-----BEGIN " .. "PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
          "^private key: bad PEM", "pem"},
        {crypto.private_key, sh.read(K.spki),
          "private key: expected a private key PEM, got PUBLIC KEY", "pem"},
        {crypto.private_key, "file:///nonexistent/key.pem",
          "private key: cannot read /nonexistent/key.pem: No such file or directory", "io"},
        {crypto.private_key, "file:///tmp", "private key: cannot read /tmp: not a regular file", "io"},
        {crypto.public_key, "file://" .. K.dir .. "/fifo",
          "public key: cannot read " .. K.dir .. "/fifo: not a regular file", "io"},
        {crypto.public_key, sh.read(K.pkcs8),
          "public key: expected a public key or certificate PEM, got PRIVATE KEY", "pem"},
        {crypto.public_key, "", "public key: no PEM block found", "pem"},
        {crypto.public_key, "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
          "^public key: bad PEM", "pem"},
        {crypto.certificate, sh.read(K.spki),
          "certificate: expected a certificate PEM, got PUBLIC KEY", "pem"},
        {crypto.certificate, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
          "^certificate: bad PEM", "pem"},
      }
      for _, c in ipairs(cases) do
        local v, msg, code = c[1](c[2])
        assert.is_nil(v)
        if c[3]:sub(1, 1) == "^" then assert.matches(c[3], msg) else assert.equal(c[3], msg) end
        assert.equal(c[4], code)
      end
    end)

    it("refuses keys that are not RSA", function()
      local ec = K.dir .. "/ec.pem"
      ossl.run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " .. q(ec))
      local k, msg, code = crypto.private_key("file://" .. ec)
      assert.is_nil(k)
      assert.equal("private key: not an RSA key", msg)
      assert.equal("type", code)
    end)

    it("raises for bad arguments, naming them", function()
      raises(function() crypto.private_key(42) end,
        "bad argument #1 to 'private_key' (string expected, got number)")
      raises(function() crypto.private_key() end,
        "bad argument #1 to 'private_key' (string expected, got no value)")
      raises(function() crypto.private_key(sh.read(K.pkcs8), 7) end,
        "bad argument #2 to 'private_key' (string expected, got number)")
      raises(function() crypto.public_key({}) end,
        "bad argument #1 to 'public_key' (string expected, got table)")
      raises(function() crypto.certificate(nil) end,
        "bad argument #1 to 'certificate' (string expected, got nil)")
    end)

    it("closes keys once, by close(), <close> or the collector", function()
      local k = crypto.private_key("file://" .. K.pkcs8)
      k:close()
      k:close()
      assert.equal("quan.crypto.key (closed)", tostring(k))
      raises(function() k:sign("x") end, "calling 'sign' on bad self (key is closed)")
      do
        local k2 <close> = crypto.private_key("file://" .. K.pkcs8)
        k = k2
      end
      assert.equal("quan.crypto.key (closed)", tostring(k))
      for _ = 1, 3 do crypto.private_key("file://" .. K.pkcs8) end
      collectgarbage()
      collectgarbage()
    end)
  end)

  describe("certificates", function()
    it("reads the serial as openssl x509 -serial prints it", function()
      local cert = assert(crypto.certificate("file://" .. K.cert))
      local want = ossl.run("openssl x509 -noout -serial -in " .. q(K.cert)):match("serial=(%x+)")
      assert.equal(want, cert:serial())
      assert.equal(K.serial, cert:serial())
      assert.equal("quan.crypto.cert (serial " .. K.serial .. ")", tostring(cert))
      -- small and high-bit serials keep whole bytes, as openssl prints them
      for _, serial in ipairs{"01", "0A", "80", "00FF", "7F"} do
        local path = K.dir .. "/s" .. serial .. ".pem"
        ossl.run("openssl req -x509 -new -key " .. q(K.pkcs8) .. " -subj /CN=s -days 1"
          .. " -set_serial 0x" .. serial .. " -out " .. q(path))
        local printed = ossl.run("openssl x509 -noout -serial -in " .. q(path)):match("serial=(%x+)")
        assert.equal(printed, crypto.certificate("file://" .. path):serial())
      end
    end)

    it("gives subject, validity, PEM and public key", function()
      local cert = crypto.certificate(sh.read(K.cert))
      assert.equal("/CN=quan test/O=quan", cert:subject())
      assert.equal(sh.read(K.cert), cert:pem())
      local function date(opt)
        local s = ossl.run("openssl x509 -noout " .. opt .. " -in " .. q(K.cert)):match("=(.-)%s*$")
        return tonumber((ossl.run("date -u -d " .. q(s) .. " +%s")))
      end
      assert.equal(date("-startdate"), cert:not_before())
      assert.equal(date("-enddate"), cert:not_after())
      local pub = ossl.run("openssl x509 -noout -pubkey -in " .. q(K.cert))
      assert.equal(pub, cert:public_key():pem_public())
      cert:close()
      assert.equal("quan.crypto.cert (closed)", tostring(cert))
      raises(function() cert:serial() end, "calling 'serial' on bad self (certificate is closed)")
    end)
  end)

  describe("RSA-SHA256 signatures", function()
    local key, pub
    setup(function()
      key = crypto.private_key("file://" .. K.pkcs1)
      pub = crypto.public_key("file://" .. K.spki)
    end)

    local messages = {"", "message", "GET\n/v3/certificates\n1554208460\nabc\n\n", ("\0\255x"):rep(1000)}

    it("signs what openssl verifies, byte for byte what openssl signs", function()
      for i, msg in ipairs(messages) do
        local m = sh.write(K.dir .. "/m" .. i, msg)
        local sig = key:sign(msg)
        assert.matches("^[A-Za-z0-9+/]+=*$", sig)
        assert.equal(344, #sig)
        ossl.unbase64(sig, m .. ".sig")
        local out = ossl.run("openssl dgst -sha256 -verify " .. q(K.spki) .. " -signature "
          .. q(m .. ".sig") .. " " .. q(m))
        assert.equal("Verified OK\n", out)
        -- PKCS#1 v1.5 is deterministic: the same bytes as openssl's signature
        ossl.run("openssl dgst -sha256 -sign " .. q(K.pkcs8) .. " -out " .. q(m .. ".osig") .. " " .. q(m))
        assert.equal(ossl.base64(m .. ".osig"), sig)
      end
    end)

    it("verifies what openssl signs, with the public and the private key", function()
      for i, msg in ipairs(messages) do
        local m = sh.write(K.dir .. "/v" .. i, msg)
        ossl.run("openssl dgst -sha256 -sign " .. q(K.pkcs1) .. " -out " .. q(m .. ".sig") .. " " .. q(m))
        local sig = ossl.base64(m .. ".sig")
        assert.is_true(pub:verify(msg, sig))
        assert.is_true(key:verify(msg, sig))
      end
    end)

    it("returns false, reason, code for a bad signature, never raises", function()
      local sig = key:sign("message")
      local flipped = (sig:sub(1, 10) == "AAAAAAAAAA" and "B" or "A"):rep(10) .. sig:sub(11)
      local other = crypto.private_key("file://" .. K.other)
      local cases = {
        {"messagE", sig, "verify: signature mismatch", "mismatch"},
        {"message", flipped, "verify: signature mismatch", "mismatch"},
        {"message", other:sign("message"), "verify: signature mismatch", "mismatch"},
        {"message", "WECHATPAY/SIGNTEST/abc",
          "verify: signature is not base64 (length is not a multiple of 4)", "base64"},
        {"message", "WECHATPAY/SIGNTEST/" .. sig,
          "verify: signature is not base64 (length is not a multiple of 4)", "base64"},
        {"message", "WECHATPAY/SIGNTEST/" .. sig:sub(4),
          "verify: signature is 268 bytes, expected 256", "length"},
        {"message", "", "verify: signature is 0 bytes, expected 256", "length"},
        {"message", sig:sub(1, 340), "verify: signature is 255 bytes, expected 256", "length"},
        {"message", sig:sub(1, 100) .. "\n" .. sig:sub(101, 343),
          "verify: signature is not base64 (invalid character at offset 100)", "base64"},
        {"message", ("A"):rep(100000), "verify: signature too long", "length"},
      }
      for _, c in ipairs(cases) do
        local ok, why, code = pub:verify(c[1], c[2])
        assert.is_false(ok)
        assert.equal(c[3], why)
        assert.equal(c[4], code)
      end
    end)

    it("raises for programmer errors", function()
      raises(function() pub:sign("x") end,
        "calling 'sign' on bad self (private key expected, got a public key)")
      raises(function() key:sign() end,
        "bad argument #1 to 'sign' (string expected, got no value)")
      raises(function() key:sign(12) end,
        "bad argument #1 to 'sign' (string expected, got number)")
      raises(function() pub:verify("x") end,
        "bad argument #2 to 'verify' (string expected, got no value)")
      raises(function() key.sign({}, "x") end)
    end)
  end)

  describe("RSA-OAEP (SHA-1, MGF1-SHA-1)", function()
    local key, pub
    setup(function()
      key = crypto.private_key("file://" .. K.pkcs8)
      pub = crypto.public_key("file://" .. K.pkcs1_pub)
    end)
    local oaep = " -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1"

    it("encrypts what openssl pkeyutl decrypts", function()
      for i, pt in ipairs{"", "张三", "110101199003072316", ("x"):rep(214)} do
        local c = K.dir .. "/oaep" .. i
        local b64 = pub:encrypt(pt)
        assert.equal(344, #b64)
        assert.not_equal(b64, pub:encrypt(pt)) -- randomized
        ossl.unbase64(b64, c)
        local out = ossl.run("openssl pkeyutl -decrypt -inkey " .. q(K.pkcs8) .. oaep .. " -in " .. q(c))
        assert.equal(pt, out)
        assert.equal(pt, key:decrypt(b64))
      end
    end)

    it("decrypts what openssl pkeyutl encrypts", function()
      for i, pt in ipairs{"a", "13800138000", ("y"):rep(214)} do
        local m = sh.write(K.dir .. "/opt" .. i, pt)
        ossl.run("openssl pkeyutl -encrypt -pubin -inkey " .. q(K.spki) .. oaep .. " -in " .. q(m)
          .. " -out " .. q(m .. ".bin"))
        assert.equal(pt, key:decrypt(ossl.base64(m .. ".bin")))
      end
    end)

    it("returns nil, message, code for what cannot be done", function()
      local v, msg, code = pub:encrypt(("x"):rep(215))
      assert.is_nil(v)
      assert.equal("encrypt: plaintext is 215 bytes, at most 214 fit", msg)
      assert.equal("too_long", code)
      local other = crypto.private_key("file://" .. K.other)
      local cases = {
        {other:public():encrypt("hello"), "decrypt: failed (wrong key or corrupt ciphertext)", "decrypt"},
        {"not base64!", "decrypt: ciphertext is not base64 (length is not a multiple of 4)", "base64"},
        {"AAAA", "decrypt: ciphertext is 3 bytes, expected 256", "length"},
        {("A"):rep(5000), "decrypt: ciphertext too long", "length"},
      }
      for _, c in ipairs(cases) do
        v, msg, code = key:decrypt(c[1])
        assert.is_nil(v)
        assert.equal(c[2], msg)
        assert.equal(c[3], code)
      end
      raises(function() pub:decrypt(pub:encrypt("x")) end,
        "calling 'decrypt' on bad self (private key expected, got a public key)")
    end)
  end)

  describe("AES-GCM", function()
    -- key, nonce, aad, plaintext, base64(ciphertext ‖ tag): wechatpay-java
    -- core/.../cipher/AeadAesCipherTest.java, wechatpay-go utils/aes_test.go,
    -- wechatpay-node (axios) tests/lib/aes.test.js
    local vectors = {
      {"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb", "uluk4a9R25RW", "associatedData", "message",
        "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI="},
      {"testAPIv3Key0000", "wCq51qZv4Yfg", "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8", "Hello World",
        "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC"},
      {"0123456789abcdef0123456789abcdef", "0123456789abcdef", "", "", "GvpmmdtYwexXIPhySs9Tlg=="},
      {"0123456789abcdef0123456789abcdef", "0123456789abcdef", "world", "hello",
        "APoZlYpivU3HjbAiB4CvW1rAFr8J"},
    }

    it("matches the public vectors of the SDKs' test suites both ways", function()
      for _, v in ipairs(vectors) do
        assert.equal(v[5], crypto.aes_gcm_encrypt(v[1], v[2], v[3], v[4]))
        assert.equal(v[4], crypto.aes_gcm_decrypt(v[1], v[2], v[3], v[5]))
      end
    end)

    it("decrypts the /v3/certificates vector of wechatpay-java to its certificate", function()
      -- wechatpay-java core/src/test/.../model/TestConfig.java DOWNLOAD_CERTIFICATE_RESPONSE
      local ct = "Mr/AxbvY+WL9hKlD5nIa03LOMPpn5f+CWeNxE4ujl0f5gXZ9XLJ9CldkArCOTsbU62XgKnTc3YvRMZQ7wCmE2fzwmAenAySTYsPms72JhggPWfdqVxri9YD5wBYKn8Ck0Fc5JIiVw9WlN2oxHBz83mRVsjoTGC5+cX1CdYqKuZ8pkvi0aCJIq07ZC8MHoTowUz+4jYJy9XeKqip83Z7BmUYxsePpNM+HtihBqTJIUYXJfX7Col5X0ACsApRoU9l6swfW/kzvqNpDJavhDBGasLrr5822+Fk5nVkcTi53f8Wbue7ODWjJxj1yhRYcxFCvXLtpYNB+Qa1aXtrBSdBdBI2p7o+6Imn+auHLBCzkrZqF/yd+d4vTn4tqHPLUj89XcHsMf96uBo3T/HQV8LEDeIO+6YvOK9FrIDYsvp+imN4n/mnF7eJKo9mpN/QqWJiawrFpAmMMxFKBjIdpgMnVUl3Z11RcWKyfOJ3kcmItTWcnZFNyDgR9cS0aU6QPlefa3uUW89uzBuHjcFdDl43yU3LE4qZnHLDcDgx4qt0OFCLiy51GXtEpyYs5k99YJBvKK+RyIs4Yc1/smBmClQUhxW+8bsPNOcXfDvH2yX4YzESoO4TV0RqiCgnsSd4zIFyJPiMKIGzVHiw6Kg0eGCmB4mGHEEZCQ0eN3SSPO0QVjjtBYfgXDZfVHSaAB8PjWBVNFimoViZZQrwT6Ygo0LU0Dd8+F5aHFYr4OPHPslr3hrgutEYXDTv1vTA6ABJGqknJ9Y2vtyWpy7aIwxc0kQq/1ezjs+RMVL/LRpGDnbx1/CGPDjZhYgZypKa55+PDhoaQxqkF3xCLz2DGoNHZYmFqxzAOsAK0vJZw4VcAk6ssbA6YIaMuiemEpxfLC9ZiXtRqsX9s+GWjjtA8JywOFMO+NKZm9BH/E5YNg2DDD3sHG9Mciwn7yJ6sdf8h2lAWlEExAOeiBNyshOHAQ0/S+x1ncWNiqY+Uh5n0rtonvePV2MsxVlEWR3AVHn1abcEWkzivd+G5kg7LYO0goqzGClcQfnFfZdO6KwcMXsBCnm9A1Bl4+k5LLokTIYH5/36SRIZ9j0CHGD77BQLE7x8AlNsoFS2m263tLLq78TFqvZUTIZIQcVIl+NInscS3xQbA38qqFqutCWIwoF1azuJ7woiJyMvnS3xzIpNzP+rzJ8VDXxjLjpEUBOC9WDs74+QMtsAdmh6g0KDclHEk8WJ4P2bnso4z3VCGoDT5X/0bS1C+jMZMKaOCNB21FZ08qgUHmKeDeg8ylENu+mh2Y/AaEDSGkGBHIfFbhMYO3uRxhk9hldiHEnHgdkXiVAAUWk/IhtmGijibO/L76vB74Xpes973uK+2iFKgNBk8qTLLZZnuWbcMQuA6VsFULRb/C+q9B21YuAWPMzvgBwr4EX2m/OpF5w8Q0HL7v1H5H0mIGJbrjnklUPoBYrw30W3uk7yF0KE6sfMukafFx0S9rBOL0RykGDPwC0lHSNySkXDeM5XvDJ+dtHK+RDwhJR+azfrWAHGMtZcQ+YVamjWVmHxXM03j3GeCXgqae1upwHzkPL5OwojcQ5MQi3Kv/1xtwY0cRN/yeZTOsXfujtqhkJj/Vltby4lnW4SCj4LjWQF19BY6zhzF4yybBA8bhhtoNP/zx8QkhHAkIROkK2ZVgfocCAPvfQ+vSrsIBO+L5cmg6mzFn4g84lsHscgXnszIlzUrzx/4Tam0uwuS9J1gddZ0I0QUt9SJzfsoBCTU0OgNMUtXKS5HvgXe7abexMtFH5eulOsAuFZkQ5LYJa/m4yHFInXzL/t3hjdTi2NmxUufvYzwIyffRTu5vS9vjscARD9lUQDHFQ/xgWe1i8EkRlrSfjlXt00+4//h2bcJKyTBT3IXwvKNsuY29V9/vU3HkvWKZ99zpSlmcZRuBa1BHbyPEvc0NlqIIoKidxqUvOR64MzudHhAjgWFP+IXojfhS3Gj9OJhBL7s"
      local pem = assert(crypto.aes_gcm_decrypt("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb", "14b16c03dc1b",
        "certificate", ct))
      local cert = assert(crypto.certificate(pem))
      assert.equal("5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC", cert:serial())
      local path = sh.write(K.dir .. "/platform.pem", pem)
      assert.equal("serial=5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC\n",
        ossl.run("openssl x509 -noout -serial -in " .. q(path)))
    end)

    it("decrypts the notification of wechatpay-go core/notify/notify_test.go (16-byte key: AES-128)", function()
      local ct = "YDS3lKPaC4Y52Gf3uhft5qUBlIa8b428AWTtTauHQfQrRw+X1WpiuHIDy0vo1Vd6VEq67aVyqPdDYMkRVSDaZL3iZttevRMOoPKMifozg6XPWjIZumks/GpT48lI4NizyeaqLBokNebthah3o1H76qSlO9NkDjp9bzmKLEYYH9TEklFUpsvPqOTOcgSLgh21YJXYR7dEBXFgRLiNIKRgO5JdXh1hccRUAlyVWxE54PXpnQ=="
      assert.equal('{"mchid":"1234567890","appid":"054aa7d7a2a54ab5898df65bd96f001c",'
        .. '"create_time":"2020-06-30T12:12:00+08:00","out_contract_code":"21640bdbd08e473e828f3206a2741c6e"}',
        crypto.aes_gcm_decrypt("testMchAPIv3Key0", "Kj7QIyUiYx1q", "payscore", ct))
    end)

    it("agrees with python3's cryptography both ways", function()
      if not ossl.python_crypto() then
        pending("python3 cryptography is not installed: AES-GCM checked by the public vectors only")
        return
      end
      local cases = {
        {crypto.random_bytes(32), crypto.nonce(12), "certificate", crypto.random_bytes(1000)},
        {crypto.random_bytes(32), crypto.random_bytes(12), "", ""},
        {crypto.random_bytes(16), crypto.random_bytes(16), crypto.random_bytes(33), "hello"},
        {crypto.random_bytes(32), crypto.random_bytes(8), "a", crypto.random_bytes(17)}, -- python: nonce >= 8
      }
      -- ours, decoded by the openssl CLI, for python to decrypt; python's
      -- encryption of the same input for us to decrypt
      local ops = {}
      for _, c in ipairs(cases) do
        local b64 = crypto.aes_gcm_encrypt(c[1], c[2], c[3], c[4])
        c.ours = ossl.unhex(ossl.run("printf %s " .. q(b64) .. " | openssl base64 -d -A | od -An -v -tx1 | tr -d ' \n'"))
        ops[#ops + 1] = {"dec", c[1], c[2], c[3], c.ours}
        ops[#ops + 1] = {"enc", c[1], c[2], c[3], c[4]}
      end
      -- a tag python rejects, we reject too
      local key, nonce = crypto.random_bytes(32), crypto.nonce(12)
      local bad = crypto.base64_decode(crypto.aes_gcm_encrypt(key, nonce, "a", "payload"))
      bad = bad:sub(1, -2) .. string.char(bad:byte(-1) ~ 1)
      ops[#ops + 1] = {"dec", key, nonce, "a", bad}
      local res = ossl.py_gcm(ops)
      for i, c in ipairs(cases) do
        assert.equal(c[4], res[2 * i - 1])                   -- python decrypts ours
        assert.equal(c.ours, res[2 * i])                     -- the same bytes both ways
        assert.equal(c[4], crypto.aes_gcm_decrypt(c[1], c[2], c[3], crypto.base64_encode(res[2 * i])))
      end
      assert.is_false(res[#res])
      assert.is_nil(crypto.aes_gcm_decrypt(key, nonce, "a", crypto.base64_encode(bad)))
    end)

    it("returns nil, message, code for a wrong tag, key, nonce or aad", function()
      local key = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
      local ct = crypto.aes_gcm_encrypt(key, "uluk4a9R25RW", "aad", "secret")
      local raw = crypto.base64_decode(ct)
      local tampered = crypto.base64_encode(string.char(raw:byte(1) ~ 1) .. raw:sub(2))
      local tag = "aes_gcm_decrypt: authentication failed (wrong key, nonce, associated data or tag)"
      local cases = {
        {key, "uluk4a9R25RW", "aad", tampered, tag, "tag"},
        {key, "uluk4a9R25RW", "aaD", ct, tag, "tag"},
        {key, "uluk4a9R25RX", "aad", ct, tag, "tag"},
        {key:sub(1, 31) .. "X", "uluk4a9R25RW", "aad", ct, tag, "tag"},
        {key, "uluk4a9R25RW", "aad", "WECHATPAY/SIGNTEST/abc",
          "aes_gcm_decrypt: ciphertext is not base64 (length is not a multiple of 4)", "base64"},
        {key, "uluk4a9R25RW", "aad", "AAAA", "aes_gcm_decrypt: ciphertext shorter than the tag", "length"},
      }
      for _, c in ipairs(cases) do
        local v, msg, code = crypto.aes_gcm_decrypt(c[1], c[2], c[3], c[4])
        assert.is_nil(v)
        assert.equal(c[5], msg)
        assert.equal(c[6], code)
      end
      assert.equal("secret", crypto.aes_gcm_decrypt(key, "uluk4a9R25RW", "aad", ct))
      -- a one-byte nonce works (GCM allows any length)
      assert.equal("x", crypto.aes_gcm_decrypt(key, "n", "", crypto.aes_gcm_encrypt(key, "n", "", "x")))
      -- a nil aad is the empty aad
      assert.equal(crypto.aes_gcm_encrypt(key, "n", "", "x"), crypto.aes_gcm_encrypt(key, "n", nil, "x"))
    end)

    it("raises for bad keys, nonces and argument types", function()
      local k = ("k"):rep(32)
      raises(function() crypto.aes_gcm_encrypt(("k"):rep(24), "n", "", "x") end,
        "bad argument #1 to 'aes_gcm_encrypt' (key must be 32 bytes (or 16 for AES-128))")
      raises(function() crypto.aes_gcm_decrypt(k, "", "", "x") end,
        "bad argument #2 to 'aes_gcm_decrypt' (nonce must be 1 to 128 bytes)")
      raises(function() crypto.aes_gcm_encrypt(k, "n", "", nil) end,
        "bad argument #4 to 'aes_gcm_encrypt' (string expected, got nil)")
      raises(function() crypto.aes_gcm_decrypt(k, "n", {}, "x") end,
        "bad argument #3 to 'aes_gcm_decrypt' (string expected, got table)")
    end)
  end)

  describe("digests", function()
    local inputs = {"", "abc", "GET\n/v3/x\n\n", ("\0\1\2\255"):rep(300)}

    it("sha256 matches openssl dgst, hex or raw", function()
      for i, s in ipairs(inputs) do
        local f = sh.write(K.dir .. "/d" .. i, s)
        local want = ossl.run("openssl dgst -sha256 -r " .. q(f)):match("^(%x+)")
        assert.equal(want, crypto.sha256(s))
        assert.equal(want, crypto.sha256(s, "hex"))
        assert.equal(ossl.unhex(want), crypto.sha256(s, "raw"))
      end
    end)

    it("hmac_sha256 matches openssl dgst -mac HMAC", function()
      local keys = {"testMchAPIv3Key0", crypto.random_bytes(64), crypto.random_bytes(100)}
      for i, s in ipairs(inputs) do
        local key = keys[(i - 1) % #keys + 1]
        local f = sh.write(K.dir .. "/h" .. i, s)
        local want = ossl.run("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. ossl.hex(key)
          .. " -r " .. q(f)):match("^(%x+)")
        assert.equal(want, crypto.hmac_sha256(key, s))
        assert.equal(ossl.unhex(want), crypto.hmac_sha256(key, s, "raw"))
      end
    end)

    it("sha1 matches openssl dgst -sha1, hex or raw", function()
      for i, s in ipairs(inputs) do
        local f = sh.write(K.dir .. "/s" .. i, s)
        local want = ossl.run("openssl dgst -sha1 -r " .. q(f)):match("^(%x+)")
        assert.equal(40, #want)
        assert.equal(want, crypto.sha1(s))
        assert.equal(ossl.unhex(want), crypto.sha1(s, "raw"))
      end
    end)

    it("digest objects hash data given in pieces as openssl dgst hashes the whole", function()
      -- a file openssl made, fed in pieces of every size from 0 to 4099 bytes
      local f = K.dir .. "/big"
      ossl.run("openssl rand -out " .. q(f) .. " 300000")
      local data = sh.read(f)
      for _, name in ipairs {"sha1", "sha256"} do
        local want = ossl.run("openssl dgst -" .. name .. " -r " .. q(f)):match("^(%x+)")
        local d = crypto.digest(name)
        assert.equal("quan.crypto.digest (" .. name .. ")", tostring(d))
        local at, size = 1, 0
        while at <= #data do
          assert.equal(d, d:update(data:sub(at, at + size - 1))) -- returns itself: calls chain
          at, size = at + size, (size + 37) % 4100
        end
        assert.equal(want, d:final())
        assert.equal("quan.crypto.digest (" .. name .. ", finished)", tostring(d))
        raises(function() d:update("x") end, "calling 'update' on bad self (digest is finished or closed)")
        raises(function() d:final() end, "calling 'final' on bad self (digest is finished or closed)")
        -- and our digest, written out, is what openssl computes
        assert.equal(ossl.unhex(want), crypto.digest(name):update(data):final("raw"))
      end
      assert.equal(crypto.sha1(""), crypto.digest("sha1"):final())
      local closed = crypto.digest("sha1")
      closed:close()
      closed:close() -- idempotent
      raises(function() closed:final() end, "calling 'final' on bad self (digest is finished or closed)")
      do local scoped <close> = crypto.digest("sha256") end
    end)

    it("raises for bad arguments", function()
      raises(function() crypto.digest("md5") end, "bad argument #1 to 'digest' (invalid option 'md5')")
      raises(function() crypto.digest() end, "bad argument #1 to 'digest' (string expected, got no value)")
      raises(function() crypto.digest("sha1"):update(12) end,
        "bad argument #1 to 'update' (string expected, got number)")
      raises(function() crypto.sha1({}) end, "bad argument #1 to 'sha1' (string expected, got table)")
      raises(function() crypto.sha256(1) end,
        "bad argument #1 to 'sha256' (string expected, got number)")
      raises(function() crypto.sha256("x", "base64") end,
        "bad argument #2 to 'sha256' (invalid option 'base64')")
      raises(function() crypto.hmac_sha256("k") end,
        "bad argument #2 to 'hmac_sha256' (string expected, got no value)")
    end)
  end)

  describe("base64", function()
    it("round-trips and agrees with openssl base64", function()
      for n = 0, 20 do
        local s = crypto.random_bytes(n)
        local b = crypto.base64_encode(s)
        assert.equal(s, crypto.base64_decode(b))
        local f = sh.write(K.dir .. "/b" .. n, s)
        assert.equal(ossl.base64(f), b)
      end
      assert.equal("", crypto.base64_encode(""))
      assert.equal("", crypto.base64_decode(""))
      assert.equal("Zm9vYmFy", crypto.base64_encode("foobar"))
      assert.equal("+/+/", crypto.base64_encode("\251\255\191"))
    end)

    it("rejects what is not strict standard base64", function()
      local cases = {
        {"WECHATPAY/SIGNTEST/abc", "length is not a multiple of 4"},
        {"WECHATPAY/SIGNTEST/abcd", "length is not a multiple of 4"},
        {"abc", "length is not a multiple of 4"},
        {"ab=c", "invalid character at offset 2"},
        {"a===", "invalid character at offset 1"},
        {"====", "invalid character at offset 0"},
        {"ab==cd==", "invalid character at offset 2"},
        {"Zm9v\nYmFy", "length is not a multiple of 4"},
        {"Zm9v YmE", "invalid character at offset 4"},
        {"Zm9-YmFy", "invalid character at offset 3"},
        {"Zm9_", "invalid character at offset 3"},
        {"QR==", "non-zero padding bits"},
        {"QUJ=", "non-zero padding bits"},
        {"Zm9v\0mFy", "invalid character at offset 4"},
      }
      for _, c in ipairs(cases) do
        local v, msg, code = crypto.base64_decode(c[1])
        assert.is_nil(v)
        assert.equal("base64: " .. c[2], msg)
        assert.equal("base64", code)
      end
      assert.equal("A", crypto.base64_decode("QQ=="))
      assert.equal("AB", crypto.base64_decode("QUI="))
    end)
  end)

  describe("nonces, random bytes, equals", function()
    it("makes nonces of [0-9A-Za-z], 32 by default, all distinct", function()
      local seen, counts = {}, {}
      for _ = 1, 500 do
        local n = crypto.nonce()
        assert.matches("^[0-9A-Za-z]+$", n)
        assert.equal(32, #n)
        assert.is_nil(seen[n])
        seen[n] = true
        for c in n:gmatch(".") do counts[c] = (counts[c] or 0) + 1 end
      end
      local distinct = 0
      for _ in pairs(counts) do distinct = distinct + 1 end
      assert.equal(62, distinct)
      assert.equal(1, #crypto.nonce(1))
      assert.equal(12, #crypto.nonce(12))
      assert.equal(1000, #crypto.nonce(1000))
      raises(function() crypto.nonce(0) end,
        "bad argument #1 to 'nonce' (length must be between 1 and 1048576)")
      raises(function() crypto.nonce("x") end,
        "bad argument #1 to 'nonce' (number expected, got string)")
    end)

    it("gives random bytes", function()
      assert.equal("", crypto.random_bytes(0))
      assert.equal(64, #crypto.random_bytes(64))
      assert.not_equal(crypto.random_bytes(16), crypto.random_bytes(16))
      raises(function() crypto.random_bytes(-1) end,
        "bad argument #1 to 'random_bytes' (length must be between 0 and 16777216)")
    end)

    it("compares strings", function()
      assert.is_true(crypto.equals("", ""))
      assert.is_true(crypto.equals("abc", "abc"))
      assert.is_false(crypto.equals("abc", "abd"))
      assert.is_false(crypto.equals("abc", "ab"))
      assert.is_true(crypto.equals("a\0b", "a\0b"))
      assert.is_false(crypto.equals("a\0b", "a\0c"))
      raises(function() crypto.equals("a") end,
        "bad argument #2 to 'equals' (string expected, got no value)")
    end)
  end)

  describe("core dumps", function()
    -- probe(load, env) -> the process's dumpable flag and core limit (as
    -- quan.os and a child shell's `ulimit -c` see them) before and after
    -- `load` (Lua code) ran in a fresh quan, its core limit first raised to
    -- 1 MiB (sh's `ulimit -c` counts 512-byte blocks: 2048)
    local function probe(load, env)
      local code = ([[
        local qos, crypto = require "quan.os", require "quan.crypto"
        assert(qos.rlimit("core", 1048576))
        local function show()
          local p = io.popen("ulimit -c")
          local shell = p:read("l")
          p:close()
          return ("%%s %%s %%s"):format(qos.dumpable(), (qos.rlimit("core")), shell)
        end
        local before = show()
        %s
        print(before .. " | " .. show())
      ]]):format(load)
      local out, err, status = sh.run((env or "env -u QUAN_ALLOW_CORE_DUMPS") .. " " .. q(sh.quan) .. " -e " .. q(code))
      assert.equal(0, status, err)
      return (out:gsub("\n$", ""))
    end

    it("are off in a process that loads or makes a private key, or uses an AES key", function()
      local _, _, hard = sh.run("ulimit -H -c | grep -qx 0")
      if hard == 0 then return pending("the hard core limit is 0 here: nothing to lower") end
      for _, load in ipairs {
        ("assert(crypto.private_key(%q))"):format("file://" .. K.pkcs8),
        ("assert(crypto.private_key(%q))"):format(sh.read(K.pkcs8)),
        ("assert(crypto.private_key(%q, %q))"):format("file://" .. K.encrypted, K.passphrase),
        "crypto.generate_rsa(1024)",
        ("assert(crypto.aes_gcm_encrypt(%q, %q, '', 'x'))"):format(("k"):rep(32), ("n"):rep(12)),
      } do
        assert.equal("true 1048576 2048 | false 0 0", probe(load), load)
      end
      -- a failed load too: the key's bytes were read before it failed
      assert.equal("true 1048576 2048 | false 0 0", probe(("crypto.private_key(%q)"):format("file://" .. K.encrypted)))
    end)

    it("stay as they were in a process that holds no key, or with QUAN_ALLOW_CORE_DUMPS=1", function()
      local _, _, hard = sh.run("ulimit -H -c | grep -qx 0")
      if hard == 0 then return pending("the hard core limit is 0 here: nothing to lower") end
      assert.equal("true 1048576 2048 | true 1048576 2048",
        probe(("crypto.public_key(%q); crypto.sha256('x')"):format("file://" .. K.spki)))
      assert.equal("true 1048576 2048 | true 1048576 2048",
        probe(("assert(crypto.private_key(%q)); crypto.generate_rsa(1024)"):format("file://" .. K.pkcs8),
          "QUAN_ALLOW_CORE_DUMPS=1"))
    end)
  end)

  describe("making keys and certificates", function()
    it("generates RSA keys and writes them as 0600 PKCS#8 files openssl reads", function()
      local k = crypto.generate_rsa()
      assert.equal("quan.crypto.key (RSA 2048, private)", tostring(k))
      local path = K.dir .. "/sub/merchant.key.pem"
      require("quan.os").mkdir(K.dir .. "/sub")
      sh.write(path, "old contents that are longer than nothing")
      require("quan.os").chmod(path, tonumber("644", 8))
      assert.is_true(k:write_pem(path))
      assert.equal(tonumber("600", 8), require("quan.os").mode(path))
      assert.equal("merchant.key.pem\n", ossl.run("ls -A " .. q(K.dir .. "/sub"))) -- no temporary left
      assert.matches("^%-%-%-%-%-BEGIN " .. "PRIVATE KEY%-%-%-%-%-\n", sh.read(path))
      ossl.run("openssl pkey -check -noout -in " .. q(path))
      local pub = ossl.run("openssl pkey -pubout -in " .. q(path))
      assert.equal(pub, k:pem_public())
      -- the written key signs what the generated key verifies
      local again = crypto.private_key("file://" .. path)
      assert.is_true(k:verify("m", again:sign("m")))
      local v, msg, code = k:write_pem("/nonexistent/dir/k.pem")
      assert.is_nil(v)
      assert.equal("write_pem: cannot write /nonexistent/dir/k.pem: No such file or directory", msg)
      assert.equal("io", code)
      raises(function() k:public():write_pem(path) end,
        "calling 'write_pem' on bad self (private key expected, got a public key)")
      raises(function() crypto.generate_rsa(512) end,
        "bad argument #1 to 'generate_rsa' (bits must be between 1024 and 16384)")
    end)

    it("makes a CA and a leaf for 127.0.0.1 that openssl verify accepts", function()
      local ca_key = crypto.private_key("file://" .. K.pkcs8)
      local leaf_key = crypto.private_key("file://" .. K.other)
      local ca = crypto.make_certificate{key = ca_key, subject = "/CN=quan test CA/O=quan", ca = true,
        days = 2}
      local leaf = crypto.make_certificate{key = leaf_key:public(), issuer_key = ca_key,
        issuer_cert = ca, subject = "/CN=127.0.0.1", serial = "1234ABCD", days = 1,
        san = {"127.0.0.1", "localhost", "::1"}}
      assert.equal("/CN=quan test CA/O=quan", ca:subject())
      assert.equal(40, #ca:serial())
      assert.matches("^[0-9A-F]+$", ca:serial())
      assert.equal("1234ABCD", leaf:serial())
      local now = os.time()
      assert.is_true(leaf:not_before() <= now and leaf:not_after() > now + 86000)
      local capath = sh.write(K.dir .. "/ca.pem", ca:pem())
      local leafpath = sh.write(K.dir .. "/leaf.pem", leaf:pem())
      assert.equal(leafpath .. ": OK\n", ossl.run("openssl verify -CAfile " .. q(capath) .. " " .. q(leafpath)))
      ossl.run("openssl verify -CAfile " .. q(capath) .. " -verify_ip 127.0.0.1 -purpose sslserver "
        .. q(leafpath))
      local text = ossl.run("openssl x509 -noout -text -in " .. q(leafpath))
      assert.matches("IP Address:127%.0%.0%.1", text)
      assert.matches("DNS:localhost", text)
      assert.matches("CA:FALSE", text)
      assert.matches("CA:TRUE", ossl.run("openssl x509 -noout -text -in " .. q(capath)))
      assert.equal("serial=1234ABCD\n", ossl.run("openssl x509 -noout -serial -in " .. q(leafpath)))
      -- the leaf carries the leaf key; the CA key signed it
      assert.equal(leaf_key:pem_public(), leaf:public_key():pem_public())
      -- a leaf not from this CA is refused
      local other = crypto.make_certificate{key = crypto.generate_rsa(1024), subject = "/CN=other"}
      local otherpath = sh.write(K.dir .. "/other-cert.pem", other:pem())
      assert.is_false((ossl.ok("openssl verify -CAfile " .. q(capath) .. " " .. q(otherpath))))
    end)

    it("raises for malformed options", function()
      local k = crypto.private_key("file://" .. K.pkcs8)
      local cases = {
        {{key = k, subject = "/CN=x", colour = "red"}, "make_certificate: unknown option 'colour'"},
        {{subject = "/CN=x"}, "make_certificate: field 'key' must be an open quan.crypto.key"},
        {{key = "pem", subject = "/CN=x"}, "make_certificate: field 'key' must be a quan.crypto.key"},
        {{key = k}, 'make_certificate: field \'subject\' must be a string like "/CN=name"'},
        {{key = k, subject = "CN=x"}, 'make_certificate: field \'subject\' must be a string like "/CN=name"'},
        {{key = k, subject = "/CN"}, 'make_certificate: bad subject "/CN"'},
        {{key = k, subject = "/XX=y"}, 'make_certificate: bad subject "/XX=y"'},
        {{key = k, subject = "/CN=x", serial = "xyz"}, "make_certificate: field 'serial' must be 1 to 40 hex digits"},
        {{key = k, subject = "/CN=x", days = 0}, "make_certificate: field 'days' must be an integer from 1 to 36500"},
        {{key = k, subject = "/CN=x", san = {"a,IP:1.2.3.4"}},
          "make_certificate: san[1] must be a host name or IP address"},
        {{key = k, subject = "/CN=x", san = "localhost"}, "make_certificate: field 'san' must be an array of names"},
        {{key = k, subject = "/CN=x", issuer_key = k},
          "make_certificate: give both 'issuer_key' and 'issuer_cert', or neither"},
        {{key = k:public(), subject = "/CN=x"}, "make_certificate: a self-signed certificate needs a private 'key'"},
      }
      for _, c in ipairs(cases) do
        raises(function() crypto.make_certificate(c[1]) end, c[2])
      end
      local ca = assert(crypto.make_certificate{key = k, subject = "/CN=ca", ca = true})
      raises(function()
        crypto.make_certificate{key = k, subject = "/CN=x", issuer_cert = ca,
          issuer_key = crypto.private_key("file://" .. K.other)}
      end, "make_certificate: 'issuer_key' does not match 'issuer_cert'")
      raises(function() crypto.make_certificate("x") end,
        "bad argument #1 to 'make_certificate' (table expected, got string)")
    end)
  end)

  describe("docs/crypto.md", function()
    it("runs the lua examples, in order, as one script", function()
      local blocks = {}
      for i, b in ipairs(require("tests.support.mdexamples").blocks("docs/crypto.md")) do blocks[i] = b.code end
      assert.is_true(#blocks >= 5)
      local env = setmetatable({print = function() end}, {__index = _G})
      local fn = assert(load(table.concat(blocks, "\n"), "=docs/crypto.md examples", "t", env))
      fn()
      env.print = nil
      assert.same({}, setmetatable(env, nil), "the examples set no globals")
    end)
  end)
end)
