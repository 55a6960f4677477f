-- Claim-check store: payloads of events too large for the stream. Only a token
-- (plus hash and size) travels through Kafka; consumers fetch the bytes here.
CREATE TABLE claim_checks (
    token        uuid        PRIMARY KEY,
    payload      bytea       NOT NULL,
    -- sha256 of payload, checked on every read so a corrupted row is an error, never wrong data.
    sha256       bytea       NOT NULL CHECK (length(sha256) = 32),
    size_bytes   bigint      NOT NULL CHECK (size_bytes >= 0),
    content_type text        NOT NULL,
    -- 'pending' from insert until the event carrying the token is acknowledged by Kafka.
    state        text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'committed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    committed_at timestamptz
);

-- Payloads are mostly already-compressed media or base64: skip TOAST's pglz
-- compression, which costs CPU and saves little.
ALTER TABLE claim_checks ALTER COLUMN payload SET STORAGE EXTERNAL;

-- The sweeper scans only pending rows, oldest first.
CREATE INDEX claim_checks_pending_idx ON claim_checks (created_at) WHERE state = 'pending';
