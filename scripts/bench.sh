#!/bin/sh
# scripts/bench.sh: `make bench`. Runs every scripts/bench/*.lua with the
# built binary; each prints `name: value` lines, ratios measured in the same
# run. Timings are of this machine at this moment: compare ratios, not values.
set -eu
cd "$(dirname "$0")/.."
QUAN=${QUAN:-build/quan}
for b in ${BENCH:-$(ls scripts/bench/*.lua 2>/dev/null)}; do
  echo "== $b"
  "$QUAN" "$b" || echo "bench failed: $b"
done
