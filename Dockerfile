# syntax=docker/dockerfile:1
#
# tokenmint: one static-ish binary (glibc) on distroless, running as nonroot (65532).
#   docker build -t ghcr.io/tokenmint/tokenmint:0.1.0 .
# The chart runs the same image twice per pod: `tokenmint operator` and `tokenmint serve`.

FROM rust:1-bookworm AS builder
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo resolves every target the manifest declares, the benchmark included.
COPY benches ./benches
# Cache mounts keep the registry and target dir between builds (BuildKit); the binary is
# copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked \
    && install -m 0755 target/release/tokenmint /tokenmint

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="tokenmint" \
      org.opencontainers.image.description="Kubernetes operator that mints API tokens (JWTs) into Secrets and rotates them" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /tokenmint /tokenmint
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/tokenmint"]
