-- 029: the PostgreSQL twin makes its posting triggers find a captured hold
-- by id alone (PL/pgSQL's generic plan could prefer a partial index of
-- every pending hold). SQLite's triggers are planned per statement with its
-- own planner and were not measured for this: nothing to change here. This
-- file keeps the two migration lists in step.
SELECT 1;
