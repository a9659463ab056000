#!/usr/bin/env bash
# Stop the local SLURM cluster started by up.sh: cancel every job first (killing slurmd does not
# kill running jobs: slurmstepd is a separate process), then slurmd(s), slurmctld, slurmdbd,
# MariaDB and munged (the last two only if up.sh started them).
#   down.sh          keep state (job ids continue, accounting kept)
#   down.sh --purge  also delete $SYNSHOT_SLURM_DIR state, logs and the accounting database
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LAB=${SYNSHOT_SLURM_DIR:-$ROOT/.cache/slurm}
[ -d "$LAB" ] && LAB=$(cd "$LAB" && pwd -P)
# shellcheck source=slurm/cluster/lib.sh
. "$HERE/lib.sh"
log() { echo "down.sh: $*" >&2; }
PURGE=0
case "${1:-}" in
    "") ;;
    --purge) PURGE=1 ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
export SLURM_CONF="$LAB/etc/slurm.conf"
if [ -d "$LAB/run" ]; then exec 9>"$LAB/run/.lock"; flock -w 120 9 || { log "another up.sh/down.sh holds the lock"; exit 1; }; fi

if [ -e "$SLURM_CONF" ] && alive "$LAB/run/slurmctld.pid" slurmctld; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
        log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 150); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] || log "warning: jobs still listed after 30 s: $(squeue -h -o '%i %T' | tr '\n' ' ')"
    fi
fi
for pidfile in "$LAB"/run/slurmd-*.pid "$LAB/run/slurmctld.pid" "$LAB/run/slurmdbd.pid"; do
    [ -e "$pidfile" ] || continue
    stop_pidfile "$pidfile"
    rm -f "$pidfile"
done
if [ -e "$LAB/run/mariadb.ours" ]; then
    if [ "$PURGE" = 1 ]; then mariadb -e "DROP DATABASE IF EXISTS synshot_slurm_acct" 2>/dev/null || true; fi
    stop_pidfile /run/mysqld/synshot-mariadb.pid
    rm -f "$LAB/run/mariadb.ours" /run/mysqld/synshot-mariadb.pid
fi
if [ -e "$LAB/run/munged.ours" ]; then
    stop_pidfile /run/munge/munged.pid
    rm -f "$LAB/run/munged.ours"
fi
if [ "$PURGE" = 1 ]; then
    rm -rf "${LAB:?}/state" "${LAB:?}/log" "${LAB:?}/run" "${LAB:?}/etc" "${LAB:?}/fakegpu"
    log "state purged ($LAB)"
fi
log "cluster stopped"
