-- Failed-login counters, shared by every instance (brute-force and credential-stuffing
-- throttling). Keys are SHA-256 of "account:<username>", "ip:<address>" or
-- "pair:<address>|<username>", so the table does not list usernames.
CREATE TABLE login_throttle (
    key          TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    last_failure BIGINT NOT NULL
);
CREATE INDEX login_throttle_window_start ON login_throttle (window_start);
