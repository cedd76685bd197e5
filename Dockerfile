# Multi-stage build: compile with the Rust toolchain, ship a small Debian image with only
# the binary and CA certificates, running as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY tests ./tests
RUN cargo build --release --locked --bin sipgw-bulk

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /work --create-home sipgw
COPY --from=build /src/target/release/sipgw-bulk /usr/local/bin/sipgw-bulk
USER 10001
WORKDIR /work
ENTRYPOINT ["sipgw-bulk"]
CMD ["--help"]
