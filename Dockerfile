# brand-idp container image: a release build of the single binary on a slim runtime.
#
#   docker build -t brand-idp .
#   docker run --rm -p 8080:8080 -v brand-idp-data:/var/lib/brand-idp brand-idp
#
# Without DATABASE_URL the server uses the embedded SQLite database in /var/lib/brand-idp;
# see docker-compose.yml for PostgreSQL.

FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, against placeholder sources, so this layer is rebuilt only when
# Cargo.toml or Cargo.lock change. aws-lc-sys and the bundled SQLite compile with the C
# compiler the image already has.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/it \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs tests/it/main.rs \
    && cargo build --release --locked \
    && rm -rf src tests

# The real sources. Migrations (and templates and static files, once they exist) are
# embedded into the binary at compile time, so everything is copied.
COPY . .
# The copied files may be older than the placeholder build; make sure cargo rebuilds them.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/brand-idp /usr/local/bin/brand-idp

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 brandidp \
    && useradd --system --uid 10001 --gid brandidp --home-dir /var/lib/brand-idp \
       --no-create-home --shell /usr/sbin/nologin brandidp \
    && install -d -o brandidp -g brandidp -m 0700 /var/lib/brand-idp
COPY --from=builder /usr/local/bin/brand-idp /usr/local/bin/brand-idp
WORKDIR /var/lib/brand-idp
ENV BRAND_IDP_LISTEN=0.0.0.0:8080 BRAND_IDP_DATA_DIR=/var/lib/brand-idp
EXPOSE 8080
USER brandidp
# No HEALTHCHECK: the image has no HTTP client. docker-compose.yml probes /readyz with bash.
ENTRYPOINT ["brand-idp"]
CMD ["serve"]
