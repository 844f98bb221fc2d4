# Tidings in a container: one static-ish binary on Debian slim, running as an
# unprivileged user, its state in a volume. See README, "Run as a service".
#
#   docker build -t tidings .
#   docker run -d --name tidings -v tidings-data:/var/lib/tidings \
#       -p 8080:8080 -e TIDINGS_BASE_URL=https://alerts.example.org/ \
#       -e TIDINGS_SMTP_PASSWORD=... tidings
#   docker kill -s HUP tidings     # reload /etc/tidings/config.toml
#   docker stop tidings            # SIGTERM: finishes work in progress first

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tidings \
    && install -m 0755 target/release/tidings /usr/local/bin/tidings

FROM debian:bookworm-slim
# CA certificates for https feeds and SMTP over TLS; nothing else.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tidings --shell /usr/sbin/nologin tidings \
    && install -d -o tidings -g tidings -m 0750 /var/lib/tidings \
    && install -d -m 0755 /etc/tidings
COPY --from=build /usr/local/bin/tidings /usr/local/bin/tidings
# The shipped config, with its state moved to the volume and both listeners on every
# interface of the container, so that published ports reach them: the subscriber pages
# every digest links to (8080; their public address comes from TIDINGS_BASE_URL) and the
# admin listener (9108; publish it only where you want it: -p 127.0.0.1:9108:9108).
# tests/container.rs applies these edits and checks the result.
COPY config.toml /etc/tidings/config.toml
RUN sed -i \
        -e 's|^database = .*|database = "/var/lib/tidings/tidings.db"|' \
        -e 's|^folder = .*|folder = "/var/lib/tidings/mail"|' \
        -e 's|^listen = .*|listen = "0.0.0.0:8080"|' \
        -e 's|^admin_listen = .*|admin_listen = "0.0.0.0:9108"|' \
        /etc/tidings/config.toml \
    && tidings --config /etc/tidings/config.toml check-config

USER tidings
WORKDIR /var/lib/tidings
VOLUME /var/lib/tidings
EXPOSE 8080 9108
ENV TIDINGS_CONFIG=/etc/tidings/config.toml
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s CMD ["tidings", "health"]
ENTRYPOINT ["tidings"]
CMD ["run"]
