-- Keel schema version 13: runs by state, newest or oldest first.
-- The dashboard's and `keel runs list -s`'s pages of one state (failed runs
-- among a million) walk this index instead of every run, and counting runs per
-- state reads it instead of the table. A run's state changes a few times in
-- its life; step commits do not touch it.

CREATE INDEX runs_state ON runs (state, created_at, run_id);
