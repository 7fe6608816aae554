-- healthz.lua — GET /healthz: the cheapest route, the server's floor.
-- Also used against nginx (`return 200 "ok"` on every path) as the ceiling,
-- so both rows are measured with byte-identical requests.
--
--   wrk -t2 -c64 -d10s --latency -s ops/wrk/healthz.lua http://127.0.0.1:8080
--
-- No request()/response() callbacks: wrk sends one pre-built request, so the
-- client spends as little CPU as possible (it shares the machine's cores).
wrk.method = "GET"
wrk.path = "/healthz"
wrk.headers["Accept"] = "application/json"
