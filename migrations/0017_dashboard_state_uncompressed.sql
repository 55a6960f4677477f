-- The dashboard's stored day state and repeat-detection windows are bytes
-- PostgreSQL stores out of line and does not compress: pglz spent most of a
-- run's storing on them (1M-event replay: 0.95 s to store 7 MB of day state
-- and 14 MB of windows, 0.25 s without compression; the windows are random
-- ids, the day state is rewritten on every run).
ALTER TABLE dashboard_day_state ALTER COLUMN state SET STORAGE EXTERNAL;
ALTER TABLE dashboard_current ALTER COLUMN windows SET STORAGE EXTERNAL;
