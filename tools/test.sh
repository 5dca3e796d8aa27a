#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, integration and cross-service
# tests, and the Helm chart tests (in a Python venv at .venv, made here). PostgreSQL tests run when SHAREDCARE_TEST_DATABASE_URL is set
# (.ci/run sets it) and say they were skipped otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${SHAREDCARE_TEST_DATABASE_URL:-}" ]]; then
    echo "note: SHAREDCARE_TEST_DATABASE_URL is not set: PostgreSQL tests will be SKIPPED"
fi

echo "--- cargo fmt --check"
cargo fmt --all --check

echo "--- cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "--- cargo test"
# Two cores: two test threads per binary keep socket tests from starving.
cargo test --workspace --locked -- --test-threads=2

echo "--- chart tests (the real Helm engine, via helm-python-sdk)"
if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet -r charts/tests/requirements.txt
.venv/bin/python -m pytest charts/tests -q
