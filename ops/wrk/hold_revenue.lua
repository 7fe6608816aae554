-- hold_revenue.lua — POST /api/v2/holds {from, to:"revenue", amount:"1"} as
-- one client (SPEC section 13): every request reserves 1 on one of the
-- client's accounts (its `held` rises under the account's row lock and the
-- CHECK that available stays >= 0), payable to `revenue`, the hot account a
-- capture would credit. The holds stay PENDING (nothing captures them; they
-- expire after SETTLED_HOLD_TIMEOUT, 1h by default): this is the cost of
-- the reservation, the "holds/claims" half of the Ledger API's write load.
-- The reserved accounts are spread over NACCOUNTS client accounts, so no
-- two connections reserve on one account at once unless NACCOUNTS < -c.
--
--   wrk -t2 -c64 -d10s --latency -s ops/wrk/hold_revenue.lua URL -- KEY PREFIX NACCOUNTS
--
-- KEY is the client's API key; its accounts are PREFIX .. j for j in
-- 0..NACCOUNTS-1, created and funded by ops/bench (an admin transfer from
-- the treasury each, as for transfer_revenue.lua) before the run. No
-- Idempotency-Key. A 422 insufficient_funds would mean the funding ran out;
-- it shows up as "Non-2xx or 3xx responses".

local next_id = 1
function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
end

local heads, n, j

function init(args)
   tid = tid or 1
   local key = args and args[1] or "sk_live_missing"
   local prefix = args and args[2] or "bench:"
   n = tonumber(args and args[3]) or 256
   heads = {}
   for k = 0, n - 1 do
      local body = '{"from":"' .. prefix .. k .. '","to":"revenue","amount":"1"}'
      heads[k + 1] = "POST /api/v2/holds HTTP/1.1\r\n" ..
                     "Host: " .. wrk.headers["Host"] .. "\r\n" ..
                     "Authorization: Bearer " .. key .. "\r\n" ..
                     "Content-Type: application/json\r\n" ..
                     "Content-Length: " .. #body .. "\r\n\r\n" .. body
   end
   j = (tid * 7919) % n -- threads walk the accounts from different places
end

function request()
   j = j % n + 1
   return heads[j]
end
