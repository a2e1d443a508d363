-- Version 2: the request nonces every office server shares, so that a
-- signed sync, acknowledgement or authorization request is answered once
-- whichever server it reaches (a replay to another server is refused).
CREATE TABLE request_nonces (
    terminal_id bigint NOT NULL,
    nonce bytea NOT NULL,
    seen_at bigint NOT NULL,
    PRIMARY KEY (terminal_id, nonce)
);
CREATE INDEX request_nonces_seen ON request_nonces (seen_at);
