-- wechatpay.favor.schema: the request and response schemas of every cash-coupon
-- (代金券, /v3/marketing/favor/...) endpoint, as plain data.
--
-- One source serves the validator (wechatpay.favor.validate), the sandbox,
-- the REPL's help and completion, `quan check` and docs/campaigns.md. The
-- shape of a node is documented in docs/campaigns.md ("Schema format"); in
-- short:
--
--   node = { type = "object"|"array"|"string"|"integer"|"boolean"|"number",
--            name = field name (inside a parent's `fields`), desc = 描述 as the
--            docs write it, required = true|nil, enum = {...} (the seed's
--            spelling), accept = {...} (documented alternatives also accepted),
--            enum_desc = {value = meaning}, min/max (numbers), min_len/max_len
--            (characters), width = {cjk = n, ascii = m}, pattern (Lua pattern),
--            pattern_desc, forbid (characters), format = "rfc3339"|"json"|"url",
--            items (array element node), min_items/max_items, unique,
--            fields = { node, ... } in the docs' order, ["in"] = "path"|"query",
--            unit = "分"|"seconds since 00:00"|"minutes"|"coupons"|"%" (what a
--            number counts), note (the limit in words), example }
--   endpoint = { id, method, path ({var} templates), title, doc, body, query,
--                params (path variables), response, rules = { {id, path, desc} },
--                content_type, rate, paging }
--   paging = { offset = "page" (the query's offset is a page index from 0)
--              | "item" (a row offset), limit = the page size asked for when
--              the caller names none }: on list endpoints, for node:each
--
-- Facts: the seed's parameter table (create stock), the official API pages
-- (pay.weixin.qq.com/docs/merchant/apis/cash-coupons/) and the official SDKs'
-- models (wechatpay-go services/cashcoupons, wechatpay-java
-- service/cashcoupons); where they disagree, docs/campaigns.md "Decisions"
-- says which is followed. Nothing here is computed: the module only
-- adds `find` and an index by id over the data.
local M = {}

local RFC3339 = "RFC 3339 with an offset, e.g. 2026-11-11T10:00:00+08:00"

-- the character set of out_request_no (WXJ: letters, digits, | _ * -)
local REQUEST_NO = {
  type = "string", min_len = 1, max_len = 128,
  pattern = "^[A-Za-z0-9|_*%-]+$", pattern_desc = "letters, digits, | _ * - only",
}

local function copy(t, extra)
  local r = {}
  for k, v in pairs(t) do r[k] = v end
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

local function mchid(name, desc, required, where)
  return { name = name, type = "string", desc = desc, required = required,
           min_len = 1, max_len = 20, ["in"] = where, example = "9856000" }
end

local STOCK_STATUS = { "unactivated", "audit", "running", "stoped", "paused" }
local STOCK_STATUS_DESC = { unactivated = "未激活", audit = "审核中", running = "运行中",
                            stoped = "已停止", paused = "暂停发放" }

local TRADE_TYPE = { "MICROAPP", "APPPAY", "PPAY", "CARD", "FACE", "OTHER" }
local TRADE_TYPE_DESC = { MICROAPP = "小程序支付", APPPAY = "APP支付", PPAY = "免密支付",
                          CARD = "刷卡支付", FACE = "人脸支付", OTHER = "其他支付" }

-- ---------------------------------------------------------------------------
-- create stock: every field of the seed at its depth, plus the newer fields
-- (jump_target, mini_program_appid/path, combine_use) of OAS 2024.11.18.

local create_stock_body = {
  type = "object", desc = "创建代金券批次请求",
  fields = {
    { name = "stock_name", type = "string", required = true, desc = "批次名称",
      min_len = 1, width = { cjk = 9, ascii = 20 }, forbid = "_,;|",
      note = "at most 9 Chinese characters or 20 letters; no _ , ; |",
      example = "微信支付代金券批次" },
    { name = "available_begin_time", type = "string", required = true, desc = "开始时间",
      format = "rfc3339", max_len = 32,
      note = "not in the past, at most 365 days ahead", example = "2015-05-20T13:29:35.120+08:00" },
    { name = "available_end_time", type = "string", required = true, desc = "结束时间",
      format = "rfc3339", max_len = 32,
      note = "later than the begin time, at most 90 days after it",
      example = "2015-05-20T13:29:35.120+08:00" },
    { name = "stock_use_rule", type = "object", required = true, desc = "发放规则",
      fields = {
        { name = "max_coupons", type = "integer", required = true, desc = "发放总上限",
          min = 5, max = 10000000, unit = "coupons", note = "5 to 10,000,000 coupons" },
        { name = "max_amount", type = "integer", required = true, desc = "总预算",
          min = 1, max = 10000000000, unit = "分",
          note = "分; = max_coupons × coupon_amount; at most 100,000,000 元 (1亿元)" },
        { name = "max_amount_by_day", type = "integer", desc = "单天发放上限金额",
          min = 1, unit = "分", note = "分; not more than max_amount" },
        { name = "max_coupons_per_user", type = "integer", required = true, desc = "单个用户可领个数",
          min = 1, max = 60, unit = "coupons", note = "1 to 60 and not more than max_coupons" },
        { name = "natural_person_limit", type = "boolean", required = true, desc = "是否开启自然人限制" },
        { name = "prevent_api_abuse", type = "boolean", required = true, desc = "api发券防刷" },
      } },
    { name = "no_cash", type = "boolean", required = true, desc = "是否无资金流",
      note = "true = 免充值 (no pre-funding), false = 预充值 (budget locked at activation)" },
    { name = "stock_type", type = "string", required = true, desc = "批次类型", max_len = 16,
      enum = { "NORMAL", "DISCOUNT", "EXCHAHGE", "RANDOM", "DISCOUNT_CUT" },
      enum_desc = { NORMAL = "固定面额满减券批次", DISCOUNT = "折扣券批次",
                    EXCHAHGE = "换购券批次 (the API's spelling)", RANDOM = "千人千面券批次",
                    DISCOUNT_CUT = "立减与折扣" },
      note = "the create API documents only NORMAL as supported; EXCHAHGE is the API's spelling" },
    { name = "comment", type = "string", desc = "批次备注", min_len = 1, max_len = 60 },
    { name = "belong_merchant", type = "string", required = true, desc = "归属商户号",
      min_len = 1, max_len = 20, note = "the creating merchant's own mchid", example = "98568865" },
    { name = "pattern_info", type = "object", desc = "样式信息",
      fields = {
        { name = "description", type = "string", required = true, desc = "使用说明", min_len = 1, max_len = 1000,
          note = "required in pattern_info (Go SDK, the official table)" },
        { name = "merchant_logo", type = "string", desc = "商户logo", format = "url", max_len = 128,
          note = "a media_url from the image-upload API; 120×120 px" },
        { name = "merchant_name", type = "string", desc = "商户名称", min_len = 1,
          width = { cjk = 12, ascii = 36 }, note = "at most 12 Chinese characters or 36 letters" },
        { name = "background_color", type = "string", desc = "背景颜色",
          enum = { "Color010", "Color020", "Color030", "Color040", "Color050",
                   "Color060", "Color070", "Color080", "Color090", "Color100" },
          accept = { "COLOR010", "COLOR020", "COLOR030", "COLOR040", "COLOR050", "COLOR060",
                     "COLOR070", "COLOR080", "COLOR081", "COLOR082", "COLOR090", "COLOR100",
                     "COLOR101", "COLOR102" },
          enum_desc = { Color010 = "#63B359", Color020 = "#2C9F67", Color030 = "#509FC9",
                        Color040 = "#5885CF", Color050 = "#9062C0", Color060 = "#D09A45",
                        Color070 = "#E4B138", Color080 = "#EE903C", Color090 = "#DD6549",
                        Color100 = "#CC463D" },
          note = "omit rather than send an empty string" },
        { name = "coupon_image", type = "string", desc = "券详情图片", format = "url",
          note = "a media_url from the image-upload API; 850×350 px" },
        { name = "jump_target", type = "string", desc = "跳转目标",
          enum = { "PAYMENT_CODE", "MINI_PROGRAM", "DEFAULT_PAGE" },
          enum_desc = { PAYMENT_CODE = "跳转至微信支付付款码", MINI_PROGRAM = "跳转至商户小程序",
                        DEFAULT_PAGE = "跳转至默认页" } },
        { name = "mini_program_appid", type = "string", desc = "小程序AppID", min_len = 1,
          note = "required when jump_target is MINI_PROGRAM" },
        { name = "mini_program_path", type = "string", desc = "小程序路径", min_len = 1,
          note = "required when jump_target is MINI_PROGRAM" },
      } },
    { name = "coupon_use_rule", type = "object", required = true, desc = "核销规则",
      fields = {
        { name = "coupon_available_time", type = "object", desc = "券可核销时间",
          note = "optional: WxJava cannot send it and the API takes stocks without it",
          fields = {
            { name = "available_begin_time", type = "string", desc = "开始时间", format = "rfc3339",
              note = "within the stock's available time" },
            { name = "available_end_time", type = "string", desc = "结束时间", format = "rfc3339",
              note = "later than the begin time, within the stock's available time" },
            { name = "fix_available_time", type = "object", desc = "固定时间段可用",
              fields = {
                { name = "available_week_day", type = "array", unique = true, max_items = 7,
                  desc = "可用星期数(0代表周日，1代表周一，以此类推)",
                  items = { type = "integer", desc = "可用星期数", enum = { 0, 1, 2, 3, 4, 5, 6 },
                            enum_desc = { [0] = "周日", "周一", "周二", "周三", "周四", "周五", "周六" } },
                  note = "empty = every day" },
                { name = "begin_time", type = "integer", required = true, desc = "当天开始时间",
                  min = 0, max = 86400, unit = "seconds since 00:00", note = "seconds since 00:00; less than end_time" },
                { name = "end_time", type = "integer", desc = "当天结束时间", min = 1, max = 86399,
                  unit = "seconds since 00:00", note = "seconds since 00:00; default 86399 (23:59:59)" },
              } },
            { name = "second_day_available", type = "boolean", desc = "领取第二天生效" },
            { name = "available_time_after_receive", type = "integer", desc = "领取后有效时间",
              min = 0, max = 1440, unit = "minutes",
              note = "minutes, at most 1440 (the API's limit); 0 = not used; not together with fix_available_time; "
                .. "not in effect yet (该字段暂未开放)" },
          } },
        { name = "fixed_normal_coupon", type = "object", desc = "固定面额满减券使用规则",
          note = "required when stock_type is NORMAL",
          fields = {
            { name = "coupon_amount", type = "integer", required = true, desc = "面额",
              min = 2, max = 100000, unit = "分", note = "分; more than 1 分, at most 1000 元" },
            { name = "transaction_minimum", type = "integer", required = true, desc = "门槛",
              min = 1, unit = "分", note = "分; greater than coupon_amount" },
          } },
        { name = "discount_coupon", type = "object", desc = "折扣券使用规则",
          fields = {
            { name = "discount_amount_max", type = "integer", desc = "最高折扣金额", min = 0, unit = "分" },
            { name = "discount_percent", type = "integer", desc = "折扣百分比", min = 0, max = 100, unit = "%" },
            { name = "transaction_minimum", type = "integer", desc = "门槛", min = 0, unit = "分" },
          } },
        { name = "exchange_coupon", type = "object", desc = "换购券使用规则",
          fields = {
            { name = "exchange_price", type = "integer", desc = "单品换购价", min = 0, unit = "分" },
            { name = "transaction_minimum", type = "integer", desc = "消费门槛", min = 0, unit = "分" },
          } },
        { name = "goods_tag", type = "array", desc = "订单优惠标记", min_items = 1, max_items = 50,
          items = { type = "string", desc = "订单优惠标记", min_len = 1, max_len = 128,
                    pattern = "^[A-Za-z0-9_]+$", pattern_desc = "letters, digits, _ only" } },
        { name = "limit_pay", type = "array", desc = "指定支付方式", min_items = 1, max_items = 1,
          items = { type = "string", desc = "指定支付方式", min_len = 1 },
          note = "exactly one payment-method code, e.g. ICBC_CREDIT" },
        { name = "limit_card", type = "object", desc = "指定银行卡BIN",
          note = "effective only when limit_pay names a bank card",
          fields = {
            { name = "name", type = "string", required = true, desc = "银行卡名称", min_len = 1,
              width = { cjk = 4, ascii = 8 }, note = "at most 4 Chinese characters" },
            { name = "bin", type = "array", required = true, desc = "指定卡BIN",
              min_items = 1, max_items = 10,
              items = { type = "string", desc = "指定卡BIN", min_len = 6, max_len = 9 } },
          } },
        { name = "trade_type", type = "array", desc = "支付方式", unique = true,
          items = { type = "string", desc = "支付方式", enum = TRADE_TYPE, enum_desc = TRADE_TYPE_DESC } },
        { name = "available_items", type = "array", desc = "可核销商品编码", min_items = 1, max_items = 50,
          items = { type = "string", desc = "可核销商品编码", min_len = 1, max_len = 128 } },
        { name = "unavailable_items", type = "array", desc = "不参与优惠商品编码", max_items = 50,
          items = { type = "string", desc = "不参与优惠商品编码", min_len = 1, max_len = 128 } },
        { name = "available_merchants", type = "array", desc = "可核销商户号", max_items = 50,
          items = { type = "string", desc = "可核销商户号", min_len = 1, max_len = 20 } },
        { name = "combine_use", type = "boolean", desc = "是否可叠加其他优惠",
          note = "default: may be combined" },
      } },
    copy(REQUEST_NO, { name = "out_request_no", required = true, desc = "商户单据号",
                       example = "89560002019101000121" }),
    { name = "ext_info", type = "string", desc = "扩展属性", format = "json", min_len = 1, max_len = 128,
      example = '{"exinfo1":"1234","exinfo2":"3456"}' },
  },
}

local create_stock_rules = {
  { id = "max_amount_product", path = "stock_use_rule.max_amount",
    desc = "max_amount = max_coupons × coupon_amount" },
  { id = "minimum_above_amount", path = "coupon_use_rule.fixed_normal_coupon.transaction_minimum",
    desc = "transaction_minimum > coupon_amount" },
  { id = "per_user_within_total", path = "stock_use_rule.max_coupons_per_user",
    desc = "max_coupons_per_user ≤ max_coupons" },
  { id = "by_day_within_total", path = "stock_use_rule.max_amount_by_day",
    desc = "max_amount_by_day ≤ max_amount" },
  { id = "begin_not_past", path = "available_begin_time", desc = "not earlier than now" },
  { id = "begin_within_365_days", path = "available_begin_time", desc = "at most 365 days ahead" },
  { id = "end_after_begin", path = "available_end_time", desc = "available_end_time > available_begin_time" },
  { id = "span_90_days", path = "available_end_time", desc = "at most 90 days after available_begin_time" },
  { id = "day_window_order", path = "coupon_use_rule.coupon_available_time.fix_available_time.end_time",
    desc = "begin_time < end_time" },
  { id = "coupon_time_window", path = "coupon_use_rule.coupon_available_time.available_end_time",
    desc = "coupon available_begin_time < available_end_time, both within the stock's time" },
  { id = "after_receive_exclusive",
    path = "coupon_use_rule.coupon_available_time.available_time_after_receive",
    desc = "available_time_after_receive > 0 not together with fix_available_time" },
  { id = "normal_needs_fixed", path = "coupon_use_rule.fixed_normal_coupon",
    desc = "required when stock_type is NORMAL" },
  { id = "mini_program_target", path = "pattern_info.mini_program_appid",
    desc = "mini_program_appid and mini_program_path required when jump_target is MINI_PROGRAM" },
}

-- ---------------------------------------------------------------------------
-- shared response objects

local stock_object = {
  type = "object", desc = "批次详情",
  fields = {
    { name = "stock_id", type = "string", desc = "批次号" },
    { name = "stock_creator_mchid", type = "string", desc = "创建批次的商户号" },
    { name = "stock_name", type = "string", required = true, desc = "批次名称" },
    { name = "status", type = "string", desc = "批次状态", enum = STOCK_STATUS, enum_desc = STOCK_STATUS_DESC },
    { name = "create_time", type = "string", format = "rfc3339", desc = "创建时间" },
    { name = "description", type = "string", required = true, desc = "使用说明" },
    { name = "stock_use_rule", type = "object", desc = "满减券批次使用规则",
      fields = {
        { name = "max_coupons", type = "integer", desc = "发放总上限", unit = "coupons" },
        { name = "max_amount", type = "integer", desc = "总预算", unit = "分" },
        { name = "max_amount_by_day", type = "integer", desc = "单天发放上限金额", unit = "分" },
        { name = "max_coupons_per_user", type = "integer", desc = "单个用户可领个数", unit = "coupons" },
        { name = "natural_person_limit", type = "boolean", desc = "是否开启自然人限制" },
        { name = "prevent_api_abuse", type = "boolean", desc = "api发券防刷" },
        { name = "fixed_normal_coupon", type = "object", desc = "固定面额批次特定信息",
          fields = {
            { name = "coupon_amount", type = "integer", desc = "面额", unit = "分" },
            { name = "transaction_minimum", type = "integer", desc = "门槛", unit = "分" },
          } },
        { name = "coupon_type", type = "string", desc = "券类型", enum = { "NORMAL", "CUT_TO" } },
        { name = "goods_tag", type = "array", desc = "订单优惠标记", items = { type = "string" } },
        { name = "trade_type", type = "array", desc = "支付方式", items = { type = "string", enum = TRADE_TYPE } },
        { name = "combine_use", type = "boolean", desc = "是否可叠加其他优惠" },
      } },
    { name = "available_begin_time", type = "string", format = "rfc3339", required = true, desc = "可用开始时间" },
    { name = "available_end_time", type = "string", format = "rfc3339", required = true, desc = "可用结束时间" },
    { name = "distributed_coupons", type = "integer", desc = "已发券数量", unit = "coupons" },
    { name = "no_cash", type = "boolean", required = true, desc = "是否无资金流" },
    { name = "start_time", type = "string", format = "rfc3339", desc = "激活批次的时间" },
    { name = "stop_time", type = "string", format = "rfc3339", desc = "终止批次的时间" },
    { name = "cut_to_message", type = "object", desc = "减至批次特定信息",
      fields = {
        { name = "single_price_max", type = "integer", desc = "可用优惠的商品最高单价", unit = "分" },
        { name = "cut_to_price", type = "integer", desc = "减至后的优惠单价", unit = "分" },
      } },
    { name = "singleitem", type = "boolean", desc = "是否单品优惠" },
    { name = "stock_type", type = "string", required = true, desc = "批次类型" },
    { name = "card_id", type = "string", desc = "微信卡包ID" },
    { name = "business_type", type = "string", desc = "业务类型", enum = { "MULTIUSE" } },
  },
}

local coupon_object = {
  type = "object", desc = "代金券详情",
  fields = {
    { name = "stock_creator_mchid", type = "string", required = true, desc = "创建批次的商户号" },
    { name = "stock_id", type = "string", required = true, desc = "批次号" },
    { name = "coupon_id", type = "string", desc = "代金券id" },
    { name = "cut_to_message", type = "object", desc = "减至批次特定信息",
      fields = {
        { name = "single_price_max", type = "integer", desc = "可用优惠的商品最高单价", unit = "分" },
        { name = "cut_to_price", type = "integer", desc = "减至后的优惠单价", unit = "分" },
      } },
    { name = "coupon_name", type = "string", required = true, desc = "代金券名称" },
    { name = "status", type = "string", required = true, desc = "代金券状态",
      enum = { "SENDED", "USED", "EXPIRED", "RECOVER" },
      enum_desc = { SENDED = "可用", USED = "已实扣", EXPIRED = "已过期", RECOVER = "已回收" } },
    { name = "description", type = "string", required = true, desc = "使用说明" },
    { name = "create_time", type = "string", format = "rfc3339", required = true, desc = "领券时间" },
    { name = "coupon_type", type = "string", required = true, desc = "券类型",
      enum = { "NORMAL", "CUT_TO" }, enum_desc = { NORMAL = "满减券", CUT_TO = "减至券" } },
    { name = "no_cash", type = "boolean", desc = "是否无资金流" },
    { name = "available_begin_time", type = "string", format = "rfc3339", required = true, desc = "可用开始时间" },
    { name = "available_end_time", type = "string", format = "rfc3339", required = true, desc = "可用结束时间" },
    { name = "singleitem", type = "boolean", required = true, desc = "是否单品优惠" },
    { name = "normal_coupon_information", type = "object", desc = "满减券信息",
      fields = {
        { name = "coupon_amount", type = "integer", required = true, desc = "面额", unit = "分" },
        { name = "transaction_minimum", type = "integer", required = true, desc = "门槛", unit = "分" },
      } },
    { name = "out_request_no", type = "string", desc = "商户单据号",
      note = "sent by the API though in no model (WxJava issue #3089, confirmed by WeChat Pay)" },
    { name = "consume_information", type = "object", desc = "已实扣代金券核销信息",
      note = "in the COUPON.USE notification only, not in query answers (WeChat Pay staff, 2020, 2021)",
      fields = {
        { name = "consume_time", type = "string", format = "rfc3339", desc = "核销时间" },
        { name = "consume_mchid", type = "string", desc = "核销商户号" },
        { name = "transaction_id", type = "string", desc = "核销订单号" },
        { name = "goods_detail", type = "array", desc = "单品信息",
          items = { type = "object", fields = {
            { name = "goods_id", type = "string", desc = "单品编码" },
            { name = "quantity", type = "integer", desc = "单品数量" },
            { name = "price", type = "integer", desc = "单品单价", unit = "分" },
            { name = "discount_amount", type = "integer", desc = "优惠金额", unit = "分" },
          } } },
      } },
    { name = "available_balance", type = "number", desc = "剩余金额", unit = "分" },
    { name = "business_type", type = "string", desc = "业务类型", enum = { "MULTIUSE" } },
  },
}

-- stock_codes(total, list, item) -> the answer of a stock's merchants or items:
-- one page of code strings
local function stock_codes(total_desc, list_desc, item_desc)
  return { type = "object", fields = {
    { name = "total_count", type = "integer", required = true, desc = total_desc },
    { name = "data", type = "array", desc = list_desc, items = { type = "string", desc = item_desc } },
    { name = "offset", type = "integer", required = true, desc = "分页页码" },
    { name = "limit", type = "integer", required = true, desc = "分页大小" },
    { name = "stock_id", type = "string", required = true, desc = "批次号" },
  } }
end

local function page_of(item, desc)
  return {
    type = "object", desc = desc,
    fields = {
      { name = "total_count", type = "integer", required = true, desc = "总数量" },
      { name = "limit", type = "integer", required = true, desc = "分页大小" },
      { name = "offset", type = "integer", required = true, desc = "分页页码" },
      { name = "data", type = "array", desc = "结果集", items = item },
    },
  }
end

local function stock_id_param()
  return { type = "object", fields = {
    { name = "stock_id", type = "string", required = true, desc = "批次号", ["in"] = "path", min_len = 1 },
  } }
end

local function creator_body(desc)
  return { type = "object", desc = desc, fields = {
    mchid("stock_creator_mchid", "创建批次的商户号", true),
  } }
end

local function lifecycle(verb, id, title, time_field, time_desc, doc)
  return {
    id = id, method = "POST", path = "/v3/marketing/favor/stocks/{stock_id}/" .. verb, title = title,
    doc = doc, params = stock_id_param(), body = creator_body(title .. "请求"),
    response = { type = "object", fields = {
      { name = time_field, type = "string", format = "rfc3339", required = true, desc = time_desc },
      { name = "stock_id", type = "string", required = true, desc = "批次号" },
    } },
  }
end

local flow_response = { type = "object", fields = {
  { name = "url", type = "string", required = true, desc = "下载链接", note = "valid for 30 s" },
  { name = "hash_value", type = "string", required = true, desc = "安全校验码" },
  { name = "hash_type", type = "string", required = true, desc = "哈希算法类型", enum = { "SHA1" } },
} }

local function flow(kind, id, title, doc)
  return {
    id = id, method = "GET", path = "/v3/marketing/favor/stocks/{stock_id}/" .. kind, title = title,
    doc = doc, params = stock_id_param(), response = flow_response, unsigned_download = true,
  }
end

-- offset and limit of a list endpoint: every list of the family counts its
-- offset in pages (favor-api §3.2, §4.3, §5; fidelity research item a)
local function paged_query(extra, offset_max, limit_max)
  local fields = {
    { name = "offset", type = "integer", required = true, desc = "分页页码", ["in"] = "query",
      min = 0, max = offset_max, unit = "pages", note = "a page index from 0, not a row offset" },
    { name = "limit", type = "integer", required = true, desc = "分页大小", ["in"] = "query",
      min = 1, max = limit_max, unit = "rows" },
  }
  for _, f in ipairs(extra) do fields[#fields + 1] = f end
  return { type = "object", fields = fields }
end

M.endpoints = {
  {
    id = "create_stock", method = "POST", path = "/v3/marketing/favor/coupon-stocks",
    title = "创建代金券批次", doc = "创建代金券批次，包括预充值&免充值类型。",
    rate = "60/min per merchant", idempotent = "out_request_no",
    body = create_stock_body, rules = create_stock_rules,
    response = { type = "object", fields = {
      { name = "stock_id", type = "string", required = true, desc = "批次号" },
      { name = "create_time", type = "string", format = "rfc3339", required = true, desc = "创建时间" },
    } },
  },
  lifecycle("start", "start_stock", "激活代金券批次", "start_time", "生效时间",
            "激活批次；预充值批次激活时从商户余额锁定预算。"),
  lifecycle("pause", "pause_stock", "暂停代金券批次", "pause_time", "暂停时间",
            "暂停后批次停止发放，用户无法通过任何渠道领取。"),
  lifecycle("restart", "restart_stock", "重启代金券批次", "restart_time", "生效时间",
            "重启已暂停的批次，重启后可继续发券。"),
  lifecycle("stop", "stop_stock", "终止代金券批次", "stop_time", "终止时间",
            "终止未激活的批次 (wechatpay-go only)。"),
  {
    id = "query_stock", method = "GET", path = "/v3/marketing/favor/stocks/{stock_id}",
    title = "查询批次详情", doc = "查询单个批次的详情。", rate = "500/s",
    params = stock_id_param(),
    query = { type = "object", fields = {
      mchid("stock_creator_mchid", "创建批次的商户号", true, "query"),
    } },
    response = stock_object,
  },
  {
    id = "list_stocks", method = "GET", path = "/v3/marketing/favor/stocks",
    title = "条件查询批次列表", doc = "按条件分页查询商户创建的批次。", rate = "1000/s",
    query = paged_query({
      mchid("stock_creator_mchid", "创建批次的商户号", true, "query"),
      { name = "create_start_time", type = "string", format = "rfc3339", desc = "起始时间", ["in"] = "query" },
      { name = "create_end_time", type = "string", format = "rfc3339", desc = "终止时间", ["in"] = "query" },
      { name = "status", type = "string", desc = "批次状态", ["in"] = "query",
        enum = STOCK_STATUS, enum_desc = STOCK_STATUS_DESC },
    }, nil, 10),
    paging = { offset = "page", limit = 10 },
    response = page_of(stock_object, "批次列表"),
  },
  {
    id = "send_coupon", method = "POST", path = "/v3/marketing/favor/users/{openid}/coupons",
    title = "发放代金券", doc = "向用户发放指定批次的代金券。", rate = "500/s",
    idempotent = "out_request_no",
    params = { type = "object", fields = {
      { name = "openid", type = "string", required = true, desc = "用户openid", ["in"] = "path", min_len = 1 },
    } },
    body = { type = "object", desc = "发放代金券请求", fields = {
      { name = "stock_id", type = "string", required = true, desc = "批次号", min_len = 1, max_len = 20 },
      copy(REQUEST_NO, { name = "out_request_no", required = true, desc = "商户单据号" }),
      { name = "appid", type = "string", required = true, desc = "公众账号ID", min_len = 1, max_len = 128 },
      mchid("stock_creator_mchid", "创建批次的商户号", true),
      { name = "coupon_value", type = "integer", desc = "指定面额发券，面额", min = 1, unit = "分",
        note = "only for the specified-face-value scenario" },
      { name = "coupon_minimum", type = "integer", desc = "指定面额发券，券门槛", min = 1, unit = "分",
        note = "only for the specified-face-value scenario" },
    } },
    rules = {
      { id = "value_with_minimum", path = "coupon_minimum",
        desc = "coupon_value and coupon_minimum together, coupon_minimum > coupon_value" },
    },
    response = { type = "object", fields = {
      { name = "coupon_id", type = "string", required = true, desc = "代金券id" },
    } },
  },
  {
    id = "query_coupon", method = "GET", path = "/v3/marketing/favor/users/{openid}/coupons/{coupon_id}",
    title = "查询代金券详情", doc = "查询用户的某张代金券。", rate = "500/s",
    params = { type = "object", fields = {
      { name = "openid", type = "string", required = true, desc = "用户openid", ["in"] = "path", min_len = 1 },
      { name = "coupon_id", type = "string", required = true, desc = "代金券id", ["in"] = "path", min_len = 1 },
    } },
    query = { type = "object", fields = {
      { name = "appid", type = "string", required = true, desc = "公众账号ID", ["in"] = "query", min_len = 1 },
    } },
    response = coupon_object,
  },
  {
    id = "list_user_coupons", method = "GET", path = "/v3/marketing/favor/users/{openid}/coupons",
    title = "根据商户号查用户的券", doc = "按条件查询用户的代金券。", rate = "500/s",
    params = { type = "object", fields = {
      { name = "openid", type = "string", required = true, desc = "用户openid", ["in"] = "path", min_len = 1 },
    } },
    query = { type = "object", fields = {
      { name = "appid", type = "string", required = true, desc = "公众账号ID", ["in"] = "query", min_len = 1 },
      { name = "stock_id", type = "string", desc = "批次号", ["in"] = "query" },
      { name = "status", type = "string", desc = "券状态", ["in"] = "query", enum = { "SENDED", "USED" },
        enum_desc = { SENDED = "可用", USED = "已实扣" } },
      mchid("creator_mchid", "创建批次的商户号", nil, "query"),
      mchid("sender_mchid", "批次发放商户号", nil, "query"),
      mchid("available_mchid", "可用商户号", nil, "query"),
      { name = "offset", type = "integer", desc = "分页页码", ["in"] = "query", min = 0, unit = "pages",
        note = "a page index from 0, not a row offset; ignored with available_mchid" },
      { name = "limit", type = "integer", desc = "分页大小", ["in"] = "query", min = 1, max = 20, unit = "rows",
        note = "default 20; ignored with available_mchid" },
      { name = "business_type", type = "string", desc = "业务类型", ["in"] = "query", enum = { "MULTIUSE" } },
    } },
    rules = {
      { id = "one_mchid_filter", path = "creator_mchid",
        desc = "exactly one of creator_mchid, sender_mchid, available_mchid" },
    },
    -- 10 a page: WxJava documents at most 10, OAS/GO a default of 20
    paging = { offset = "page", limit = 10 },
    response = page_of(coupon_object, "代金券列表"),
  },
  {
    id = "list_merchants", method = "GET", path = "/v3/marketing/favor/stocks/{stock_id}/merchants",
    title = "查询代金券可用商户", doc = "查询批次的可用商户号。", rate = "1000/min",
    params = stock_id_param(),
    query = paged_query({ mchid("stock_creator_mchid", "创建批次的商户号", true, "query") }, 1000, 50),
    paging = { offset = "page", limit = 50 },
    response = stock_codes("可用商户总数量", "可用商户列表", "商户号"),
  },
  {
    id = "list_items", method = "GET", path = "/v3/marketing/favor/stocks/{stock_id}/items",
    title = "查询代金券可用单品", doc = "查询批次的可核销商品编码。", rate = "600/min",
    params = stock_id_param(),
    query = paged_query({ mchid("stock_creator_mchid", "创建批次的商户号", true, "query") }, 500, 100),
    paging = { offset = "page", limit = 100 },
    response = stock_codes("可用单品编码总数", "可用单品编码", "商品编码"),
  },
  {
    id = "set_callbacks", method = "POST", path = "/v3/marketing/favor/callbacks",
    title = "设置消息通知地址", doc = "设置接收营销事件通知的URL。", rate = "1000/min",
    body = { type = "object", desc = "设置消息通知地址请求", fields = {
      mchid("mchid", "商户号", true),
      { name = "notify_url", type = "string", required = true, desc = "通知地址", format = "url",
        min_len = 1, max_len = 256 },
      { name = "switch", type = "boolean", desc = "回调开关", note = "true = push on, false = off" },
    } },
    response = { type = "object", fields = {
      { name = "update_time", type = "string", format = "rfc3339", required = true, desc = "修改时间" },
      { name = "notify_url", type = "string", required = true, desc = "通知地址" },
    } },
  },
  {
    id = "query_callbacks", method = "GET", path = "/v3/marketing/favor/callbacks",
    title = "查询消息通知地址", doc = "查询营销事件通知地址。", rate = "2000/s",
    query = { type = "object", fields = { mchid("mchid", "商户号", true, "query") } },
    response = { type = "object", fields = {
      { name = "mchid", type = "string", required = true, desc = "商户号" },
      { name = "notify_url", type = "string", required = true, desc = "通知地址" },
    } },
  },
  {
    id = "upload_image", method = "POST", path = "/v3/marketing/favor/media/image-upload",
    title = "图片上传(营销专用)", doc = "上传图片，返回可用于 merchant_logo / coupon_image 的 media_url。",
    content_type = "multipart/form-data",
    -- the multipart `meta` part, which is also what gets signed; the JSON body
    -- schema of this endpoint is this node
    meta = { type = "object", desc = "媒体文件元信息", fields = {
      { name = "filename", type = "string", required = true, desc = "文件名称", min_len = 1, max_len = 128,
        pattern = "%.[JjBbPp][PpMmNn][GgPp]$", pattern_desc = "ends in .JPG, .BMP or .PNG" },
      { name = "sha256", type = "string", required = true, desc = "文件摘要", min_len = 64, max_len = 64,
        pattern = "^[0-9a-fA-F]+$", pattern_desc = "SHA-256 of the file as 64 hex digits" },
    } },
    response = { type = "object", fields = {
      { name = "media_url", type = "string", required = true, desc = "媒体文件URL地址" },
    } },
  },
  flow("use-flow", "use_flow", "下载批次核销明细", "批次核销明细文件的下载链接，30秒内有效。"),
  flow("refund-flow", "refund_flow", "下载批次退款明细", "批次退款明细文件的下载链接，30秒内有效。"),
}

-- ---------------------------------------------------------------------------
-- lookup

-- the path every endpoint of the family starts with: "/v3/marketing/favor"
M.family = (function()
  local prefix = M.endpoints[1].path
  for _, ep in ipairs(M.endpoints) do
    while ep.path:sub(1, #prefix + 1) ~= prefix .. "/" do prefix = prefix:match("^(.*)/[^/]*$") end
  end
  return prefix
end)()

M.by_id = {}
local compiled = {}           -- method -> { {pattern, vars, endpoint}, ... }
for _, ep in ipairs(M.endpoints) do
  M.by_id[ep.id] = ep
  local vars = {}
  local pat = "^" .. ep.path:gsub("[%-%.]", "%%%0"):gsub("{([%w_]+)}", function(v)
    vars[#vars + 1] = v
    return "([^/]+)"
  end) .. "/?$"
  local list = compiled[ep.method] or {}
  compiled[ep.method] = list
  list[#list + 1] = { pat, vars, ep }
end

-- find(method, path) -> endpoint, vars | nil
-- path may be a template ("/v3/.../{stock_id}/start"), a concrete path, a path
-- without the leading slash, with a query string, or a full URL.
local found, found_n = {}, 0   -- method -> path -> { endpoint, vars } | false

local function search(method, path)
  local list = compiled[method:upper()]
  if not list then return nil end
  path = path:gsub("^%a[%w+.-]*://[^/]*", ""):gsub("[?#].*$", "")
  if path:sub(1, 1) ~= "/" then path = "/" .. path end
  for i = 1, #list do
    local c = list[i]
    local caps = { path:match(c[1]) }
    if caps[1] ~= nil then
      local vars = {}
      for k, v in ipairs(c[2]) do vars[v] = caps[k] end   -- no vars: caps[1] is the path
      return c[3], vars
    end
  end
  return nil
end

local function lookup(method, path)
  local by_path = found[method]
  local hit = by_path and by_path[path]
  if hit == nil then
    local ep, vars = search(method, path)
    hit = ep and { ep, vars } or false
    if found_n >= 256 then found, found_n = {}, 0 end
    by_path = found[method] or {}
    found[method] = by_path
    by_path[path], found_n = hit, found_n + 1
  end
  return hit
end

-- lookup(method, path) -> endpoint | nil: find without the variables (for the
-- validator's hot path)
function M.lookup(method, path)
  local hit = lookup(method, path)
  return hit and hit[1] or nil
end

function M.find(method, path)
  if type(method) ~= "string" then error("schema.find: method must be a string", 2) end
  if type(path) ~= "string" then error("schema.find: path must be a string", 2) end
  local hit = lookup(method, path)
  if not hit then return nil end
  local vars = {}
  for k, v in pairs(hit[2]) do vars[k] = v end
  return hit[1], vars
end

-- field(node, "a.b.c") -> the node at that dotted path (array items through "[]"
-- or a number) | nil: for help and completion
function M.field(node, dotted)
  dotted = dotted:gsub("%[%d*%]", ".[]")
  for part in dotted:gmatch("[^.]+") do
    if not node then return nil end
    if node.type == "array" and (part == "[]" or tonumber(part)) then
      node = node.items
    else
      local found
      for _, f in ipairs(node.fields or {}) do
        if f.name == part then found = f break end
      end
      node = found
    end
  end
  return node
end

return M
