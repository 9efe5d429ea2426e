-- The C reference client of `make bench` (scripts/bench/cref/client.c, built
-- as build/cref beside quan): it sends what quan's client sends, completes
-- verified requests against the sandbox, and refuses answers that do not
-- verify. No timing: the figures are the benchmark's (scripts/bench/cref.lua).
local sbx = require "tests.support.sandbox"
local setup = require "scripts.bench.cref.setup"

describe("the C reference client (build/cref)", function()
  local h, common, commands
  local runs = 0

  lazy_setup(function()
    h = sbx.start()
    common = setup.argv(setup.sandbox_options(h))
    commands = setup.binaries()
    commands.floor = setup.join(commands.quan, { "--floor", "1" })
  end)

  lazy_teardown(function()
    if h then h:stop() end
  end)

  -- client(side, extra[, prefix]) -> setup.run's results for the C (side
  -- "c"), the quan twin ("quan") or the twin's floor mode ("floor": the
  -- pieces of the client, called without it) with the sandbox's arguments, a fresh
  -- out_request_no prefix (or the one given) and extra
  local function client(side, extra, prefix)
    runs = runs + 1
    prefix = prefix or ("spec" .. side .. runs .. "x")
    return setup.run(setup.join(commands[side], common, { "--prefix", prefix }, extra))
  end

  local function faults(spec)
    assert.equal(200, sbx.control(h, "/sandbox/faults", { spec = spec }).status)
  end

  it("is built beside quan", function()
    assert.truthy(require("quan.os").stat(commands.c[1]), commands.c[1])
  end)

  it("prepares the headers and body quan's client prepares", function()
    local _, _, c = client("c", { "--print-request", "7" }, "same")
    local _, _, quan = client("quan", { "--print-request", "7" }, "same")
    assert.is_string(c)
    assert.equal(quan, c)
    assert.matches("^Accept: application/json\nContent%-Type: application/json\nUser%-Agent: quan/[^\n]+\n"
      .. "Wechatpay%-Serial: PUB_KEY_ID_%d+\n\n{", c)
    assert.matches('"out_request_no":"same7"', c)
  end)

  for _, side in ipairs { "c", "quan", "floor" } do
    it(("completes verified requests sequentially and 16 in flight (%s)"):format(side), function()
      local values, why = client(side, { "--warm-up", "16", "--sequential", "3", "--parallel", "20" })
      assert.is_table(values, why)
      assert.equal(3, values.sequential_requests)
      assert.equal(20, values.parallel_requests)
      for _, k in ipairs { "ready_cpu_s", "sequential_cpu_s", "parallel_cpu_s", "sequential_wall_s" } do
        assert.is_number(values[k], k)
      end
      assert.is_true(values.parallel_maxrss_kib > 0)
      -- the warm-up opens the connections of 16 in flight (it stops trying
      -- after 64 bursts, so only a range is certain)
      assert.is_true(values.warm_up_requests >= 1 + 16, tostring(values.warm_up_requests))
      assert.is_true(values.warm_up_connections >= 1 and values.warm_up_connections <= 16)
      assert.is_true(values.final_connections >= 1 and values.final_connections <= 16)
    end)
  end

  it("starts, loads its keys and exits without a request when given no count", function()
    local values, why = client("c", {})
    assert.is_table(values, why)
    assert.is_number(values.ready_cpu_s)
    assert.is_nil(values.sequential_requests)
  end)

  it("refuses each tampered answer, naming the check", function()
    for _, case in ipairs {
      { "tamper=signature", "verify: response signature does not verify" },
      { "tamper=body", "verify: response signature does not verify" },
      { "tamper=serial", "verify: response signed by unknown serial" },
      { "tamper=timestamp", "verify: response timestamp %d+ is %d+ s from now" },
      { "error500=1", "HTTP 500: .*SYSTEM_ERROR" },
    } do
      faults(case[1])
      local values, why = client("c", { "--sequential", "1" })
      faults("")
      assert.is_nil(values, case[1])
      assert.matches("^cref ended %(exit 1%): cref: request 1: " .. case[2], why)
    end
    assert.is_table(client("c", { "--sequential", "1" })) -- the faults are off again
  end)

  it("validates and verifies in the floor mode too, as the client does", function()
    faults("tamper=signature")
    local values, why = client("floor", { "--sequential", "1" })
    faults("")
    assert.is_nil(values)
    assert.matches("cref %(quan%): request 1: verify: response signature does not verify", why)
    values, why = setup.run(setup.join(commands.floor, common,
      { "--prefix", "p", "--begin", "2020-01-01T00:00:00+08:00", "--sequential", "1" }))
    assert.is_nil(values)
    assert.matches("cref %(quan%): request 1: .*available_begin_time", why)
    assert.is_table(client("floor", { "--sequential", "1" }))
  end)

  it("runs quan binaries side by side against the C client (versus.lua)", function()
    local quan = commands.quan[1]
    local values, why, out = setup.run { quan, "scripts/bench/cref/versus.lua", quan, quan, "--", "3", "2" }
    assert.is_table(values, why)
    assert.matches("versus.requests: 2 rounds of 3 sequential and 3 at 16 in flight", out)
    assert.matches("versus.C: sequential [%d.]+ ms %(1.000 of C's%)", out)
    local _, lines = out:gsub("versus%.[^\n]*/quan: sequential [%d.]+ ms %([%d.]+ of C's%), 16 in flight", "")
    assert.equal(2, lines)
  end)

  it("sends coupons with --send-coupons (the load generator of scripts/bench/batch.lua), each answer verified", function()
    local stock = sbx.request(h, "POST", "/v3/marketing/favor/coupon-stocks",
      sbx.stock_body(h, { stock_use_rule = { max_coupons = 100, max_amount = 10000, max_coupons_per_user = 1 } })).json.stock_id
    assert.equal(200, sbx.request(h, "POST", "/v3/marketing/favor/stocks/" .. stock .. "/start",
      { stock_creator_mchid = h.mchid }).status)
    local _, _, shown = client("c", { "--send-coupons", stock, "--appid", h.appid, "--print-request", "3" }, "oGen")
    assert.matches(('\n{"appid":"%s","out_request_no":"oGen3","stock_creator_mchid":"%s","stock_id":"%s"}\n$')
      :format(h.appid, h.mchid, stock), shown)
    local values, why = client("c", { "--send-coupons", stock, "--appid", h.appid, "--sequential", "2",
                                      "--parallel", "20" }, "oGen")
    assert.is_table(values, why)
    assert.equal(20, values.parallel_requests)
    local db = assert(require("quan.sqlite").open(h.state .. "/sandbox.db"))
    local held = db:first("SELECT count(*) AS n, count(DISTINCT openid) AS users FROM coupons WHERE stock_id = ?", stock)
    db:close()
    assert.same({ 22, 22 }, { held.n, held.users })
    -- an answer that does not verify is refused here too
    faults("tamper=signature")
    values, why = client("c", { "--send-coupons", stock, "--appid", h.appid, "--sequential", "1" })
    faults("")
    assert.is_nil(values)
    assert.matches("verify: response signature does not verify", why)
    values, why = setup.run(setup.join(commands.c, common, { "--prefix", "p", "--send-coupons", stock }))
    assert.is_nil(values)
    assert.matches("cref: %-%-appid: expected the appid", why)
  end)

  it("refuses bad arguments with a message naming the argument", function()
    for _, case in ipairs {
      { { "--nonsense", "1" }, "unknown option '%-%-nonsense'" },
      { { "--cert", "nothing" }, "%-%-cert: expected NAME=PATH, got 'nothing'" },
      { { "--sequential", "many" }, "%-%-sequential: expected a count, got 'many'" },
      { { "--prefix", "no spaces" }, "%-%-prefix: expected letters, digits" },
      { { "--cert", "PUB_KEY_ID_1=/nonexistent.pem" }, "%-%-cert PUB_KEY_ID_1: cannot read /nonexistent.pem" },
    } do
      local values, why = setup.run(setup.join(commands.c, common, { "--prefix", "p" }, case[1]))
      assert.is_nil(values)
      assert.matches("cref: " .. case[2], why)
    end
    local values, why = setup.run(setup.join(commands.c, { "--prefix", "p" }))
    assert.is_nil(values)
    assert.matches("cref: %-%-base%-url: expected https://", why)
  end)
end)
