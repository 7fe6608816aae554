-- transfer_revenue.lua — POST /api/v2/transfers {from, to:"revenue", amount:"1"}
-- as one client (SPEC section 13): every request credits the one `revenue`
-- account, the hot account of the Ledger API (every capture and every shop's
-- spending lands there). The debited accounts are spread over NACCOUNTS
-- client accounts, so only revenue is shared.
--
--   wrk -t2 -c64 -d10s --latency -s ops/wrk/transfer_revenue.lua URL -- KEY PREFIX NACCOUNTS [spread]
--
-- With "spread" the transfers go from account j to account j+1 instead of
-- to revenue: the same work with no shared account, for comparison.
--
-- KEY is the client's API key; its accounts are PREFIX .. j for j in
-- 0..NACCOUNTS-1, created and funded by ops/bench (an admin transfer from
-- the treasury each) before the run. No Idempotency-Key.

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
   local spread = args and args[4] == "spread"
   heads = {}
   for k = 0, n - 1 do
      local to = spread and (prefix .. ((k + 1) % n)) or "revenue"
      local body = '{"from":"' .. prefix .. k .. '","to":"' .. to .. '","amount":"1"}'
      heads[k + 1] = "POST /api/v2/transfers HTTP/1.1\r\n" ..
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
