-- webhook_standard.lua — POST /api/webhooks/standard (Standard Webhooks
-- signatures, SPEC section 9): webhook intake, every event new and validly
-- signed. LuaJIT in wrk has no HMAC, so ops/bench signs the events ahead of
-- time (webhook_events()) and writes one per line to FILE:
--   <webhook-id> TAB <webhook-timestamp> TAB <webhook-signature> TAB <body>
-- Thread t of NTHREADS sends lines t, t+NTHREADS, ...; when a thread runs out
-- it starts over, and the repeats are answered 200 {"status":"duplicate"}
-- (ops/bench sizes FILE so that does not happen and warns when it does).
-- Timestamps must be within 5 minutes of the server's clock: sign just
-- before the run.
--
--   wrk -t2 -c64 -d10s --latency -s ops/wrk/webhook_standard.lua URL -- FILE NTHREADS

local next_id = 1
function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
end

local reqs, n, i

function init(args)
   tid = tid or 1
   local file = assert(args and args[1], "usage: -- FILE NTHREADS")
   local nthreads = tonumber(args[2]) or 1
   local host = wrk.headers["Host"]
   reqs, n = {}, 0
   local line_no = 0
   for line in io.lines(file) do
      if line_no % nthreads == (tid - 1) % nthreads then
         local id, ts, sig, body = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)$")
         if id then
            n = n + 1
            reqs[n] = "POST /api/webhooks/standard HTTP/1.1\r\n" ..
                      "Host: " .. host .. "\r\n" ..
                      "Content-Type: application/json\r\n" ..
                      "webhook-id: " .. id .. "\r\n" ..
                      "webhook-timestamp: " .. ts .. "\r\n" ..
                      "webhook-signature: " .. sig .. "\r\n" ..
                      "Content-Length: " .. #body .. "\r\n\r\n" .. body
         end
      end
      line_no = line_no + 1
   end
   assert(n > 0, "no events for this thread in " .. file)
   i = 0
end

function request()
   i = i % n + 1
   return reqs[i]
end
