-- A mail the SMTP server refused for good is dead-lettered (smtp_refused);
-- its row says so, with the address tried and the server's reason, instead
-- of staying `pending` as if a send had been interrupted. A redrive of the
-- request sends it again (any state but `sent` is sent).
ALTER TABLE mail_log DROP CONSTRAINT mail_log_state_check;
ALTER TABLE mail_log ADD CONSTRAINT mail_log_state_check
    CHECK (state IN ('pending', 'sent', 'refused'));
ALTER TABLE mail_log ADD COLUMN refused_reason text;
