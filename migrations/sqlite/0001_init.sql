-- brand-idp schema v1 (SQLite). Times are Unix seconds (INTEGER) in every table so the
-- same SQL runs on both backends and the server's clock seam decides "now".

CREATE TABLE consumers (
    id            TEXT PRIMARY KEY,          -- the opaque, stable subject identifier
    username      TEXT NOT NULL,
    username_key  TEXT NOT NULL UNIQUE,      -- case-folded username: unique case-insensitively
    password_hash TEXT,                      -- PHC string; NULL: cannot log in with a password
    claims        TEXT NOT NULL DEFAULT '{}',-- standard profile claims, JSON object
    lp_attributes TEXT,                      -- LiveEngage engagement attributes, JSON
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE clients (
    client_id                 TEXT PRIMARY KEY,
    secret_hash               TEXT,          -- keyed hash of the secret; NULL for public clients
    name                      TEXT,
    redirect_uris             TEXT NOT NULL, -- JSON array of absolute URIs
    post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]',
    response_types            TEXT NOT NULL, -- JSON array
    auth_method               TEXT NOT NULL, -- client_secret_basic | client_secret_post | none
    options                   TEXT NOT NULL DEFAULT '{}', -- per-client options (LiveEngage), JSON
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    public_jwk    TEXT NOT NULL,             -- JSON Web Key, public part
    private_key   BLOB NOT NULL,            -- PKCS#8, AES-256-GCM under the secret key
    state         TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    created_at    INTEGER NOT NULL,
    activate_at   INTEGER,                    -- for 'next': when it starts signing
    activated_at  INTEGER,
    retired_at    INTEGER,
    publish_until INTEGER                     -- for 'retired': last moment it is in the JWKS
);
-- Exactly one active key, enforced by the database even when two instances bootstrap at once.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,             -- SHA-256 of the session id; the id itself is never stored
    data       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE auth_codes (
    code_hash      TEXT PRIMARY KEY,
    grant_id       TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    consumer_id    TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    auth_time      INTEGER NOT NULL,
    code_challenge TEXT,
    claims         TEXT,                     -- the request's `claims` parameter, JSON
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
);
CREATE INDEX auth_codes_expires_at ON auth_codes (expires_at);

CREATE TABLE access_tokens (
    token_hash  TEXT PRIMARY KEY,
    grant_id    TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    consumer_id TEXT NOT NULL,
    scope       TEXT NOT NULL,
    claims      TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id);
CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at);
