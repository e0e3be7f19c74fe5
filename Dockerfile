# certgate container image: `docker build -t certgate .`
#
# The default command serves /etc/certgate/certgate.json (mount it, and the files it names);
# for sidecar mode pass `run` and the CERTGATE_* environment variables instead (docs/kubernetes.md,
# "Container").

FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, with placeholder sources: this layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
# Build-time settings (the allocator's purging defaults), needed from the first build on.
COPY .cargo ./.cargo
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# The real sources. COPY can keep their modification times, which may be older than the
# placeholder build above, so touch them to make cargo rebuild the certgate crate.
COPY src ./src
RUN touch src/lib.rs src/main.rs \
 && cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/certgate /usr/local/bin/certgate
# The distroless "nonroot" user, numeric so Kubernetes can check runAsNonRoot.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["certgate"]
CMD ["run", "--config", "/etc/certgate/certgate.json"]
