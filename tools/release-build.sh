#!/usr/bin/env bash
# The release build of the five sharedcare binaries: the one cargo command the
# container image runs (the Dockerfile calls this script), so CI can run the
# image's build step without a container engine:
#
#   bash tools/release-build.sh
#
# Binaries land in ${CARGO_TARGET_DIR:-target}/release/:
#   sharedcare-identity sharedcare-consent sharedcare-records sharedcare-audit
#   sharedcare (the CLI, from the sharedcare-cli package)
set -euo pipefail
cd "$(dirname "$0")/.."

set -x
cargo build --release --locked \
    -p sharedcare-identity \
    -p sharedcare-consent \
    -p sharedcare-records \
    -p sharedcare-audit \
    -p sharedcare-cli
