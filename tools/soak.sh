#!/usr/bin/env bash
# The soak: an hour of mixed load on a release `sharedcare dev` (SQLite, a
# fresh data dir), reporting every minute each scenario's calls/s, p50, p99
# and failures, and dev's resident memory, open files and threads; at the
# end its memory at the start, peak and end, and its growth over the second
# half in MiB/hour. Not run by CI. Settings (environment):
#   SOAK_MINUTES (60), SOAK_RATE calls/s per scenario (200),
#   SOAK_BASE_PORT (21000: four ports outside the ephemeral range),
#   SOAK_OUT (soak-<time>.txt: the rows; the JSON goes beside it).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${SOAK_MINUTES:-60}
rate=${SOAK_RATE:-200}
port=${SOAK_BASE_PORT:-21000}
out=${SOAK_OUT:-soak-$(date -u +%Y%m%dT%H%M%SZ).txt}

cargo build --release --locked -p sharedcare-cli
bin=target/release/sharedcare
dir=$(mktemp -d)
"$bin" dev --data-dir "$dir/data" --base-port "$port" --log-level warn >"$dir/dev.log" 2>&1 &
dev=$!
trap 'kill "$dev" 2>/dev/null; wait "$dev" 2>/dev/null; rm -rf "$dir"' EXIT

# Serving once all four ports accept and the bootstrap file is written.
for _ in $(seq 1 120); do
    up=0
    for p in "$port" $((port + 1)) $((port + 2)) $((port + 3)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && up=$((up + 1))
    done
    [[ $up -eq 4 && -f "$dir/data/bootstrap.toml" ]] && break
    sleep 0.5
done

echo "soak: $minutes min at $rate calls/s per scenario; dev pid $dev; rows in $out"
"$bin" --base-port "$port" bench --data-dir "$dir/data" \
    --scenario get-record --scenario create-record --scenario search \
    --scenario get-patient --seed-records 1000 \
    --rate "$rate" --soak "$minutes" --watch-pid "$dev" --json \
    2> >(tee "$out" >&2) >"${out%.txt}.json"
