-- One row per grant: the authorization code until it is redeemed, then the access token it
-- was exchanged for (an implicit-flow access token gets a row of its own, with no code anyone
-- holds). Redeeming a code and recording its access token is then one statement, and a
-- replayed code revokes its grant's token by updating one row.
CREATE TABLE grants (
    code_hash        TEXT PRIMARY KEY,  -- SHA-256 of the code (implicit flow: of a random value nobody holds)
    client_id        TEXT NOT NULL,
    consumer_id      TEXT NOT NULL,
    redirect_uri     TEXT NOT NULL,
    scope            TEXT NOT NULL,
    nonce            TEXT,
    auth_time        BIGINT NOT NULL,
    code_challenge   TEXT,
    claims           TEXT,              -- the request's `claims` parameter, JSON
    subject          TEXT,              -- the consumer's claims when the code was issued, JSON
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,    -- of the code; the row is kept an access-token lifetime longer
    used_at          BIGINT,
    token_hash       TEXT,              -- SHA-256 of the access token, which names this row (no index needed)
    token_expires_at BIGINT,
    revoked_at       BIGINT
);
CREATE INDEX grants_expires_at ON grants (expires_at);

-- Access tokens live on as grants without a code, keyed by their hash: a token of the old
-- format (no '.') is looked up as 'migrated:<its hash>'. Codes not yet redeemed are not carried
-- over: they live minutes, and a relying party that holds one starts a new login.
INSERT INTO grants (code_hash, client_id, consumer_id, redirect_uri, scope, claims, auth_time, created_at,
                    expires_at, used_at, token_hash, token_expires_at, revoked_at)
SELECT 'migrated:' || token_hash, client_id, consumer_id, '', scope, claims, created_at, created_at,
       created_at, created_at, token_hash, expires_at, revoked_at
FROM access_tokens;

DROP TABLE access_tokens;
DROP TABLE auth_codes;
