-- register_unique.lua — POST /api/register, a different wallet every request.
--
--   wrk -t2 -c64 -d10s --latency -s ops/wrk/register_unique.lua URL -- NONCE
--
-- NONCE (8 hex digits) makes wallets unique across runs against the same
-- database; ops/bench passes a fresh one per scenario. Without it a nonce is
-- derived from the clock. Wallet = "0x" .. nonce(8) .. thread(4) .. 0-pad ..
-- counter(12): 40 hex digits, unique across wrk's threads (each thread gets
-- its own id in setup()) and requests (a per-thread counter).
-- Any 409 (duplicate wallet) or 429 shows up as "Non-2xx or 3xx responses".

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

local head, prefix
local counter = 0

function init(args)
   tid = tid or 1
   prefix = "0x" .. nonce_of(args) .. string.format("%04x", tid % 0x10000) .. "0000"
   -- Every body has the same length, so the header block is built once.
   local sample = '{"wallet":"' .. prefix .. string.rep("0", 24) .. '"}'
   head = "POST /api/register HTTP/1.1\r\n" ..
          "Host: " .. wrk.headers["Host"] .. "\r\n" ..
          "Content-Type: application/json\r\n" ..
          "Content-Length: " .. #sample .. "\r\n\r\n"
end

function request()
   counter = counter + 1
   return head .. '{"wallet":"' .. prefix .. string.format("%024x", counter) .. '"}'
end
