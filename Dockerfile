# syntax=docker/dockerfile:1
# One image recipe for every kappa-jobs service: the workspace is built once,
# the SERVICE build arg picks which binary the runtime image starts.
#   docker build --target runtime --build-arg SERVICE=gateway -t kappa-jobs/gateway .
ARG SERVICE=gateway

FROM rust:1-bookworm AS builder
# rdkafka builds librdkafka from source (cmake/make/g++) with zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake make g++ libz-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# sqlx checked macros must not need a live database at image build time.
ENV SQLX_OFFLINE=true
# Cache mounts keep the crate registry and incremental target dir across builds;
# binaries are copied out of the (mounted) target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace \
 && mkdir -p /out \
 && find target/release -maxdepth 1 -type f -executable -exec cp {} /out/ \; \
 && ls -l /out

FROM debian:bookworm-slim AS runtime
ARG SERVICE
# ca-certificates for TLS clients, curl for the compose healthcheck (/readyz).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --no-create-home kappa \
 && mkdir /data && chown kappa:kappa /data
# /data belongs to the service's user: a named volume mounted there starts
# as a copy of it (owner included), so the stateful mailer can create its
# store (mailer-store:/data in docker-compose.yml). Without it Docker makes
# the mount point root's, and the mailer, uid 10001, restarts forever.
WORKDIR /app
# All workspace binaries (gateway, loadgen, ...): handy for `docker compose run`.
COPY --from=builder /out/ /usr/local/bin/
COPY config/ /app/config/
# The entrypoint is fixed at build time by SERVICE; a symlink (not a shell
# wrapper) keeps the binary as PID 1 so it receives SIGTERM directly.
RUN test -x "/usr/local/bin/${SERVICE}" \
 && ln -s "/usr/local/bin/${SERVICE}" /usr/local/bin/service
# Listen addresses are per service (KAPPA__<SERVICE>__ADDR), set in docker-compose.yml.
ENV SERVICE=${SERVICE}
USER kappa
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/service"]
