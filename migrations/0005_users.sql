-- The users service. Every write changes a user row and adds an outbox row in
-- the same transaction; the relay publishes outbox rows as user_updated events
-- (keyed by user id) and marks them sent once the broker acknowledged them.

CREATE TABLE users (
    id         text        PRIMARY KEY,
    email      text        NOT NULL,
    name       text,
    -- Grows by one with every write; PUT with If-Match compares it.
    version    bigint      NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users_outbox (
    id         bigserial   PRIMARY KEY,
    -- The event's id: stable, so a republished row is recognisably the same event.
    event_id   uuid        NOT NULL UNIQUE,
    user_id    text        NOT NULL,
    version    bigint      NOT NULL,
    -- The event exactly as it goes on the topic.
    payload    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
-- The relay's queue: unsent rows in order.
CREATE INDEX users_outbox_unsent ON users_outbox (id) WHERE sent_at IS NULL;
