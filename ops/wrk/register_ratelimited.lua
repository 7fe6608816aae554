-- register_ratelimited.lua — exactly register_unique.lua (same requests), kept
-- as its own scenario because ops/bench runs it against two fresh servers:
-- one with every RL_* policy disabled (0) and one with the limiter on and
-- limits set far above the load (1e9). The difference between the two rows
-- is the cost of the limiter (both policies of the route: per client IP and
-- per wallet, each a GCRA check on a sharded in-process table).
--
--   wrk -t2 -c64 -d10s --latency -s ops/wrk/register_ratelimited.lua URL -- NONCE
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "register_unique.lua")
