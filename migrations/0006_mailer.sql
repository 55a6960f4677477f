-- The mail workers' log: one row per (request, mode). A row is written
-- `pending` (committed) before the mail is sent and marked `sent` as soon as
-- the SMTP server accepted it; a request whose row says `sent` is never sent
-- again. Both modes run side by side, so each keeps its own rows.
CREATE TABLE mail_log (
    event_id     uuid        NOT NULL,
    mode         text        NOT NULL CHECK (mode IN ('stateless', 'stateful')),
    state        text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent')),
    user_id      text        NOT NULL,
    subject      text        NOT NULL,
    -- Where it went, and which version of the user that address came from.
    address      text,
    user_version bigint,
    -- Sends tried: more than one means a crash came between sending and marking.
    attempts     integer     NOT NULL DEFAULT 1,
    requested_at timestamptz,
    sent_at      timestamptz,
    PRIMARY KEY (event_id, mode)
);
