-- wechatpay.sign: the request signature (WECHATPAY2-SHA256-RSA2048) and the
-- response message that is verified. Pure string work; the RSA operations
-- are the key objects' (quan.crypto keys, held as userdata in C).
local M = {}

M.SCHEME = "WECHATPAY2-SHA256-RSA2048"

-- message(method, target, timestamp, nonce, body) -> the request's
-- string-to-sign: five lines each ended by "\n"; `target` is the path and
-- query exactly as sent, `body` the exact body bytes ("" when none)
function M.message(method, target, timestamp, nonce, body)
  return method .. "\n" .. target .. "\n" .. timestamp .. "\n" .. nonce .. "\n" .. (body or "") .. "\n"
end

-- authorization(mchid, serial, timestamp, nonce, signature) -> the
-- Authorization header value
function M.authorization(mchid, serial, timestamp, nonce, signature)
  return M.SCHEME .. ' mchid="' .. mchid .. '",serial_no="' .. serial .. '",timestamp="' .. timestamp
    .. '",nonce_str="' .. nonce .. '",signature="' .. signature .. '"'
end

-- redact(authorization) -> the header with the signature replaced
function M.redact(auth)
  return (auth:gsub('signature="[^"]*"', 'signature="[redacted]"'))
end

-- response_message(timestamp, nonce, body) -> what a response signature covers
function M.response_message(timestamp, nonce, body)
  return timestamp .. "\n" .. nonce .. "\n" .. (body or "") .. "\n"
end

return M
