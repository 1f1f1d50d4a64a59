# agentctl itself, for docker-compose.yml (needs a registry for its two base images).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p agentctl --bin agentctl

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/agentctl /usr/local/bin/agentctl
ENTRYPOINT ["agentctl"]
