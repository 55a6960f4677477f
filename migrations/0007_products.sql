-- The product DAG's join: the product creator's durable buffer (one row per
-- product and per expected part, written in the same transaction as the
-- creator's consumer offsets), the products it decides, and its outbox of
-- product_created / product_failed events.

CREATE TABLE products (
    id           text        PRIMARY KEY,
    seller_id    text,
    -- pending: buffering parts; then active (every part passed), rejected (a
    -- part failed) or incomplete (a part never came before the deadline).
    status       text        NOT NULL CHECK (status IN ('pending', 'active', 'rejected', 'incomplete')),
    -- The metadata as uploaded, and as the metadata branch normalised it.
    metadata     jsonb       NOT NULL,
    normalized   jsonb,
    reason       text,
    -- The product_uploaded event: its id (a redelivery is recognised) and time.
    upload_event uuid        NOT NULL,
    uploaded_at  timestamptz NOT NULL,
    -- When the creator first buffered it, and until when it waits.
    buffered_at  timestamptz NOT NULL DEFAULT now(),
    deadline_at  timestamptz NOT NULL,
    finished_at  timestamptz
);
CREATE INDEX products_by_status ON products (status, id);
-- The deadline sweeper's queue.
CREATE INDEX products_deadlines ON products (deadline_at) WHERE status = 'pending';

CREATE TABLE product_parts (
    product_id text        NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    -- metadata, image-1, image-2, ..., video
    part       text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('metadata', 'image', 'video')),
    state      text        NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'processed', 'failed')),
    -- The uploaded file (claim-check token, sha256, size, content type).
    asset      jsonb,
    result     jsonb,
    reason     text,
    arrived_at timestamptz,
    PRIMARY KEY (product_id, part)
);

CREATE TABLE products_outbox (
    id         bigserial   PRIMARY KEY,
    -- Stable per product: the decision is published once, whoever made it.
    event_id   uuid        NOT NULL UNIQUE,
    product_id text        NOT NULL,
    payload    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX products_outbox_unsent ON products_outbox (id) WHERE sent_at IS NULL;
