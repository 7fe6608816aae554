-- claim_prepare.lua — POST /api/claim/prepare {wallet, amount:"1"}: creates a
-- claim intent and a hold on the wallet's own account (SPEC sections 6-8).
-- A claim spends what the wallet was paid: ops/bench registers NWALLETS
-- wallets first and pays each a large amount through the API (a signed
-- webhook payment), so nothing fails for lack of funds.
--
--   wrk -t2 -c64 -d10s --latency -s ops/wrk/claim_prepare.lua URL -- NONCE NWALLETS
--
-- Wallet j (0..NWALLETS-1) = "0x" .. nonce .. "c1a1" .. zero-padded hex j (28
-- digits); ops/bench builds the same strings in claim_wallets().
-- Requests carry no Idempotency-Key (it is optional; register_unique_key
-- shows what a key costs). A 404 "not_found" means the route is missing.

local next_id = 1
function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
end

local head, wallets, n, j

function init(args)
   tid = tid or 1
   local nonce = (args and args[1] and args[1]:match("^%x%x%x%x%x%x%x%x$")) and args[1]:lower()
                 or "00000000"
   n = tonumber(args and args[2]) or 256
   wallets = {}
   for k = 0, n - 1 do
      wallets[k + 1] = "0x" .. nonce .. "c1a1" .. string.format("%028x", k)
   end
   local clen = #('{"wallet":"' .. wallets[1] .. '","amount":"1"}')
   head = "POST /api/claim/prepare HTTP/1.1\r\n" ..
          "Host: " .. wrk.headers["Host"] .. "\r\n" ..
          "Content-Type: application/json\r\n" ..
          "Content-Length: " .. clen .. "\r\n\r\n"
   j = (tid * 7919) % n -- threads walk the wallets from different places
end

function request()
   j = j % n + 1
   return head .. '{"wallet":"' .. wallets[j] .. '","amount":"1"}'
end
