#!/usr/bin/env bash
# `make demo`: a live migration under client load on the local lab, driven by the Ansible
# collection exactly as a user would drive it.
#
#   1. playbooks/site.yml    lab namespaces, lab switch + NetMigrate pipeline and entries,
#                            three Redis nodes and their agents (from scratch: an existing demo
#                            lab is removed first, so every run measures the same thing);
#   2. playbooks/bench.yml   preload + closed-loop client load in the client namespace, the
#                            migration of DEMO_SLOTS from redis1 to redis2 (migrate.yml, with
#                            pre- and post-checks), load stopped, then `netmigrate bench report`;
#   3. prints the report:    reports/demo/report.json and reports/demo/*.png.
#
# The lab stays up afterwards (inspect it with `netmigrate lab status`, send requests with
# `ip netns exec nm-client netmigrate kv --to 10.0.1.1:50000 --keyspace 50000 get KEY`).
# Remove everything it made with:
#   ansible-playbook -i inventory/lab playbooks/lab_down.yml     (or: DEMO_KEEP_LAB=0 make demo)
#
# Environment: DEMO_SLOTS (default 0-4095), DEMO_KEYS (preloaded keys, default 20000),
# DEMO_PREFIX (lab namespace prefix, default nm), DEMO_KEEP_LAB (1: leave the lab up; default),
# DEMO_CPU (per-host CPU budgets, `netmigrate lab up --cpu`: default, off or HOST=FRACTION,...).
# Needs root (network namespaces) and the .venv made by scripts/bootstrap.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV_BIN=$ROOT/.venv/bin
SLOTS=${DEMO_SLOTS:-0-4095}
KEYS=${DEMO_KEYS:-20000}
PREFIX=${DEMO_PREFIX:-nm}
KEEP_LAB=${DEMO_KEEP_LAB:-1}
CPU=${DEMO_CPU:-default}
OUT=$ROOT/reports/demo

if [[ $(id -u) -ne 0 ]]; then
    echo "make demo: needs root (it creates network namespaces)" >&2
    exit 1
fi
[[ -x $VENV_BIN/ansible-playbook ]] || {
    echo "make demo: no $VENV_BIN/ansible-playbook; run scripts/bootstrap.sh first" >&2
    exit 1
}

# Ansible finds this checkout as the collection netmigrate.core through a private tree, and
# reads no ansible.cfg from elsewhere.
WORK=$ROOT/.run/demo
mkdir -p "$WORK/collections/ansible_collections/netmigrate"
ln -sfn "$ROOT" "$WORK/collections/ansible_collections/netmigrate/core"
: >"$WORK/ansible.cfg"
export PATH="$VENV_BIN:$PATH"
export ANSIBLE_CONFIG=$WORK/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH=$WORK/collections
export ANSIBLE_PYTHON_INTERPRETER=$VENV_BIN/python
export ANSIBLE_RETRY_FILES_ENABLED=0

# The controller is a host too: ansible-playbook, the modules it runs and `netmigrate migrate`
# run under the lab's controller CPU budget (netmigrate_lab_cpu), so they take no CPU from the
# switch, the client or the servers. Before site.yml has made the lab there is no budget yet
# and `lab exec` just runs the command.
playbook() {
    local book=$1
    shift
    echo "== ansible-playbook playbooks/$book $*"
    "$VENV_BIN/python" -m netmigrate.cli lab exec --prefix "$PREFIX" controller -- \
        ansible-playbook -i inventory/lab "playbooks/$book" -e "netmigrate_lab_prefix=$PREFIX" "$@"
}

if ip netns list | grep -q "^$PREFIX-sw\b"; then
    echo "== removing the previous demo lab ($PREFIX-*)"
    playbook lab_down.yml >"$WORK/lab_down.log" || {
        cat "$WORK/lab_down.log"
        exit 1
    }
fi

start=$SECONDS
playbook site.yml -e "netmigrate_lab_cpu=$CPU" >"$WORK/site.log" || {
    cat "$WORK/site.log"
    exit 1
}
echo "   lab up and configured in $((SECONDS - start)) s (log: $WORK/site.log)"

start=$SECONDS
playbook bench.yml -e "netmigrate_bench_dir=$OUT" -e "netmigrate_migration_slots=$SLOTS" \
    -e "netmigrate_load_keys=$KEYS" >"$WORK/bench.log" || {
    cat "$WORK/bench.log"
    exit 1
}
echo "   load + migration + report in $((SECONDS - start)) s (log: $WORK/bench.log)"

# The human summary, from the report itself (not from the log).
"$VENV_BIN/python" - "$OUT/report.json" <<'EOF'
import json
import sys

r = json.load(open(sys.argv[1]))
c = r["checker"]
print()
print("NetMigrate demo: live migration under load")
print(f"  moved {r['migrated_slots']} slots ({r['keys']} keys) in {r['duration_s']:.2f} s")
print(f"  throughput  before {r['throughput_before_ops']:>10.0f} ops/s   "
      f"during {r['throughput_during_ops']:>10.0f} ops/s")
print(f"  p99 latency before {r['p99_before_ms']:>10.2f} ms      "
      f"during {r['p99_during_ms']:>10.2f} ms")
print(f"  client errors {r['client_errors']} (retried by the client)")
print(f"  checker: {'OK' if c['ok'] else 'VIOLATIONS'} - lost writes {c['lost_writes']}, "
      f"stale reads {c['stale_reads']}, duplicates {c['duplicates']}")
print(f"  report: {sys.argv[1]}" + (f", plot: {r['plot']}" if r.get("plot") else ""))
sys.exit(0 if c["ok"] else 1)
EOF

if [[ $KEEP_LAB == 0 ]]; then
    playbook lab_down.yml >"$WORK/lab_down.log"
    echo "   lab removed"
else
    echo "   the lab is still up; remove it with: ansible-playbook -i inventory/lab playbooks/lab_down.yml"
fi
