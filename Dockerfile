# syntax=docker/dockerfile:1
#
# sharedcare: ONE image holding all five binaries
#   /usr/local/bin/sharedcare-identity, -consent, -records, -audit  (one per Deployment)
#   /usr/local/bin/sharedcare                                       (the CLI: dev, demo, token, ...)
# One image rather than one per service: one build, one vulnerability scan, one
# tag to promote from dev to production, and the four services can never run
# mismatched builds of the shared kit and protos. The Helm chart picks the
# binary per Deployment through `command`, so the image has no ENTRYPOINT.
#
#   docker build -t sharedcare:dev .
#   docker run --rm sharedcare:dev                        # the CLI's help
#   docker run --rm -p 50051:50051 sharedcare:dev sharedcare-identity
#
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

# The builder's toolchain must be the one rust-toolchain.toml pins; the first
# RUN below fails the build if the two ever disagree. Bookworm because the
# runtime is Debian 12 as well: the binaries link the same glibc they run on.
ARG RUST_VERSION=1.95.0

# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
ARG RUST_VERSION
WORKDIR /src

COPY rust-toolchain.toml ./
RUN grep -qx "channel = \"${RUST_VERSION}\"" rust-toolchain.toml \
    || { echo "rust-toolchain.toml does not pin ${RUST_VERSION}: update RUST_VERSION in the Dockerfile to match" >&2; exit 1; }
# Proven equal to the pinned channel just above. Naming it here keeps rustup
# from fetching the file's developer-only components (rustfmt, clippy).
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION}

# The allow-list in .dockerignore decides what reaches here: manifests, the
# lock file, proto/, services/, tools/, tests/ (a workspace member). Never
# target/, data/ (it holds the dev admin secret) or .git/.
COPY . .

# Dependency caching without cargo-chef: the crates.io registry, git checkouts
# and the target directory live in BuildKit cache mounts that survive between
# builds, so a source change recompiles only the workspace crates. The
# binaries are copied out of the cache mount in the same step, because a
# cache mount is not part of the image.
# tools/release-build.sh is the one cargo command (CI runs the same script):
#   cargo build --release --locked -p sharedcare-identity -p sharedcare-consent
#     -p sharedcare-records -p sharedcare-audit -p sharedcare-cli
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    bash tools/release-build.sh \
    && install -D -m 0755 -t /out/bin \
        target/release/sharedcare-identity \
        target/release/sharedcare-consent \
        target/release/sharedcare-records \
        target/release/sharedcare-audit \
        target/release/sharedcare \
    && install -d -m 0750 /out/data

# ---------------------------------------------------------------------------
# Runtime: glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager. The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sharedcare" \
      org.opencontainers.image.description="sharedcare health and care data platform: identity, consent, records and audit gRPC services, and the sharedcare CLI" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /out/bin/ /usr/local/bin/
# The data dir (database.data_dir): SQLite files and dev-generated keys. In
# Kubernetes a volume is mounted here; its ownership comes from fsGroup.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/sharedcare
WORKDIR /var/lib/sharedcare

# No SHAREDCARE_* variables are set here on purpose: environment variables
# beat the config file, so an image default would silently override the
# chart's configuration.

# identity, consent, records, audit (gRPC over h2c); Prometheus metrics
# (telemetry.metrics_addr, the chart's default port).
EXPOSE 50051-50054 9464

USER 65532:65532
CMD ["sharedcare", "--help"]
