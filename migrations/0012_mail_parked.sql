-- The stateful mailer's parked mail requests (services/mailer/src/park.rs).
-- A request whose user is not in the worker's address store, once the store
-- has read past the request, may still have its user on the way (created in
-- the users service just before, its user_updated not out of the outbox
-- yet). Instead of holding its partition, the worker parks it here in the
-- transaction that commits the request's offset; it is sent when the user
-- appears, or dead-lettered (unknown_user) once decide_by has passed.
CREATE TABLE mail_parked (
    mode             text        NOT NULL CHECK (mode IN ('stateless', 'stateful')),
    event_id         uuid        NOT NULL,
    user_id          text        NOT NULL,
    -- The mail as the worker rendered it (services/mailer/src/mail.rs `Mail`).
    mail             jsonb       NOT NULL,
    -- The request's record: what its dead letter copies.
    origin_topic     text        NOT NULL,
    origin_partition integer     NOT NULL CHECK (origin_partition >= 0),
    origin_offset    bigint      NOT NULL CHECK (origin_offset >= 0),
    parked_at        timestamptz NOT NULL DEFAULT now(),
    -- The request's arrival plus mailer.wait_for_user_ms (wall clock: the
    -- user's event may never come, so no event can be waited for).
    decide_by        timestamptz NOT NULL,
    PRIMARY KEY (mode, event_id)
);

-- A user's later requests are parked behind its parked ones (their order).
CREATE INDEX mail_parked_user ON mail_parked (mode, user_id);
-- Parked requests are sent in their stream order.
CREATE INDEX mail_parked_order ON mail_parked (mode, origin_partition, origin_offset);
