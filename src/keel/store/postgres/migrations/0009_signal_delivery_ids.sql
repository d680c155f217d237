-- Keel PostgreSQL schema version 9: signal delivery ids.
-- A signal sent with a delivery id is stored once per continue-as-new chain; a
-- repeat is a no-op. chain_id is the chain of the run it was sent to (set only
-- with a delivery id), so the index still holds after unconsumed signals move
-- to a successor run. Both NULL for a signal without an id (no index entry).

ALTER TABLE signals ADD COLUMN delivery_id text COLLATE "C";
ALTER TABLE signals ADD COLUMN chain_id text COLLATE "C";

CREATE UNIQUE INDEX signals_delivery ON signals (chain_id, delivery_id)
    WHERE delivery_id IS NOT NULL;
