-- register_unique_key.lua — register_unique.lua plus a unique Idempotency-Key
-- on every request: compared with register_unique, the overhead of a key
-- (claiming it, fingerprinting the body, storing the response in the same
-- transaction as the account).
--
--   wrk -t2 -c64 -d10s --latency -s ops/wrk/register_unique_key.lua URL -- NONCE
--
-- Key = "bench-" .. nonce .. "-" .. thread .. "-" .. counter; wallets as in
-- register_unique.lua. Every response should be 201 with X-Idempotency: MISS.

local next_id = 1
function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
end

local function nonce_of(args)
   local n = args and args[1]
   if n and n:match("^%x%x%x%x%x%x%x%x$") then return n:lower() end
   return string.format("%08x", os.time() % 0x7fffffff)
end

local head, prefix, keyprefix, clen
local counter = 0

function init(args)
   tid = tid or 1
   local nonce = nonce_of(args)
   prefix = "0x" .. nonce .. string.format("%04x", tid % 0x10000) .. "0000"
   keyprefix = "bench-" .. nonce .. "-" .. tid .. "-"
   clen = #('{"wallet":"' .. prefix .. string.rep("0", 24) .. '"}')
   head = "POST /api/register HTTP/1.1\r\n" ..
          "Host: " .. wrk.headers["Host"] .. "\r\n" ..
          "Content-Type: application/json\r\n" ..
          "Content-Length: " .. clen .. "\r\n" ..
          "Idempotency-Key: " .. keyprefix
end

function request()
   counter = counter + 1
   return head .. counter .. "\r\n\r\n" ..
          '{"wallet":"' .. prefix .. string.format("%024x", counter) .. '"}'
end
