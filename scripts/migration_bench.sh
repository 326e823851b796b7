#!/usr/bin/env bash
# Migration under load in the local lab: one run, one report (docs/benchmarks.md,
# "Migration under load (lab)"). Needs root. Usage:
#   [PARALLEL=64] [BATCH=512] [RATE=0] [BEFORE=5] [AFTER=5] \
#       scripts/migration_bench.sh [OUT_DIR] [KEYS] [CONCURRENCY]
# RATE is the migration's rate limit in keys per second (0: as fast as it goes); BEFORE and
# AFTER the seconds of load measured before and after it.
# Leaves the lab up (netmigrate lab down --prefix nmb takes it down).
set -euo pipefail
OUT=${1:-reports/migration-bench}
KEYS=${2:-100000}
CONC=${3:-16}
PARALLEL=${PARALLEL:-64}
BATCH=${BATCH:-512}
RATE=${RATE:-0}
BEFORE=${BEFORE:-5}
AFTER=${AFTER:-5}
PREFIX=nmb
NM=(python -m netmigrate.cli)
RUN_DIR=/run/netmigrate-lab/$PREFIX

mkdir -p "$OUT"
"${NM[@]}" lab up --full --prefix $PREFIX --grpc-addr 127.0.0.1:9659 --control-base 17100 >/dev/null
rm -f "$OUT/stop"
"${NM[@]}" bench load --stack "$RUN_DIR" --preload "$KEYS" --preload-direct --concurrency "$CONC" \
    --duration 3600 --stop-file "$OUT/stop" --out "$OUT/load" >"$OUT/load.out" &
LOAD_PID=$!
until [ -e "$OUT/load/ready" ]; do sleep 0.2; done
sleep "$BEFORE" # the "before" window
"${NM[@]}" migrate --switch 127.0.0.1:9659 --keyspace 10.0.1.1:50000 \
    --source 1=127.0.0.1:17101 --target 2=127.0.0.1:17102 --slots all \
    --parallel "$PARALLEL" --batch "$BATCH" --rate "$RATE" --quiet >"$OUT/migration.json"
sleep "$AFTER" # the "after" window
touch "$OUT/stop"
wait $LOAD_PID || true
"${NM[@]}" bench report --load "$OUT/load" --migration "$OUT/migration.json" --out "$OUT"
