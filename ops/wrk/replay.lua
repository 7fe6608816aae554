-- replay.lua — the idempotent replay path: the same 100 (key, body) pairs
-- over and over. ops/bench first sends each pair once (201, MISS), so every
-- request wrk sends is a HIT: the stored response replayed, no handler, no
-- store write. SPEC section 4; it should stay within 2x of GET /healthz.
--
--   wrk -t2 -c64 -d10s --latency -s ops/wrk/replay.lua URL -- NONCE
--
-- Pair i (0..99): key "k" .. i .. "-" .. nonce and body
--   {"wallet":"0x" .. nonce .. "feed" .. zero-padded hex i (28 digits)}
-- ops/bench builds the identical bytes in replay_pairs() — keep them in step.
-- Run by hand: pre-register first, e.g. for i in 0..99:
--   curl -H 'Content-Type: application/json' -H "Idempotency-Key: k$i-$NONCE" \
--        -d "{\"wallet\":\"0x${NONCE}feed$(printf %028x $i)\"}" URL/api/register

local N = 100
local next_id = 1
function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
end

local function nonce_of(args)
   local n = args and args[1]
   if n and n:match("^%x%x%x%x%x%x%x%x$") then return n:lower() end
   return "00000000"
end

local reqs = {}
local i

function init(args)
   tid = tid or 1
   local nonce = nonce_of(args)
   for k = 0, N - 1 do
      local body = '{"wallet":"0x' .. nonce .. "feed" .. string.format("%028x", k) .. '"}'
      reqs[k + 1] = "POST /api/register HTTP/1.1\r\n" ..
                    "Host: " .. wrk.headers["Host"] .. "\r\n" ..
                    "Content-Type: application/json\r\n" ..
                    "Content-Length: " .. #body .. "\r\n" ..
                    "Idempotency-Key: k" .. k .. "-" .. nonce .. "\r\n\r\n" .. body
   end
   i = (tid * 37) % N -- threads start at different pairs
end

function request()
   i = i % N + 1
   return reqs[i]
end
