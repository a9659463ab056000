#!/usr/bin/env bash
# Start (or keep running) a real local SLURM cluster: munged, optional slurmdbd+MariaDB,
# slurmctld and 1-2 slurmd emulating nodes n1, n2 on this host, with fake GPU GRES.
#
# Why: the launch scripts (slurm/train.sbatch, slurm/submit.py) are tested against real daemons,
# not mocks. /etc/slurm is never touched: everything lives under $SYNSHOT_SLURM_DIR and clients
# find it through SLURM_CONF (printed at the end: `eval "$(slurm/cluster/up.sh)"`).
#
# Idempotent: a second call with the same settings is a no-op (~0.1 s); a changed setting
# restarts the daemons with the new config. Liveness is read from /proc/PID/stat because on
# machines whose init does not reap orphans a dead daemon stays a zombie and `kill -0` lies.
#
# Knobs (environment):
#   SYNSHOT_SLURM_DIR    state/log/config folder            (default: <repo>/.cache/slurm)
#   SYNSHOT_SLURM_NODES  emulated nodes, 1 or 2              (default: 2)
#   SYNSHOT_SLURM_CPUS   CPUs declared per node              (default: 8, may exceed the hardware)
#   SYNSHOT_SLURM_GPUS   fake GPUs per node (0 = none)        (default: 4)
#   SYNSHOT_SLURM_DBD    accounting: auto | 1 | 0            (default: auto = on when installed or installable)
#   SYNSHOT_SLURM_PORT   slurmctld port; slurmdbd uses +2, slurmd nX uses 17000+X+offset (default: 6817)
#   SYNSHOT_SLURM_TIMEOUT seconds to wait for the nodes to become idle (default: 60)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LAB=${SYNSHOT_SLURM_DIR:-$ROOT/.cache/slurm}
NODES=${SYNSHOT_SLURM_NODES:-2}
CPUS=${SYNSHOT_SLURM_CPUS:-8}
GPUS=${SYNSHOT_SLURM_GPUS:-4}
DBD=${SYNSHOT_SLURM_DBD:-auto}
CTLD_PORT=${SYNSHOT_SLURM_PORT:-6817}
TIMEOUT=${SYNSHOT_SLURM_TIMEOUT:-60}
DBD_PORT=$((CTLD_PORT + 2))
NODE_PORT_BASE=$((17000 + CTLD_PORT - 6817))

# shellcheck source=slurm/cluster/lib.sh
. "$HERE/lib.sh"

die() { echo "up.sh: error: $*" >&2; exit 1; }
port_hint() {  # port_hint PORT: who else listens on PORT (a cluster left by another checkout, typically)
    local who
    who=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:.*' || true)
    [ -z "$who" ] || echo "; port $1 is held by $who: stop that cluster with its slurm/cluster/down.sh, or kill that pid"
}
log() { echo "up.sh: $*" >&2; }

[[ "$NODES" =~ ^[12]$ ]] || die "SYNSHOT_SLURM_NODES=$NODES: must be 1 or 2"
[[ "$CPUS" =~ ^[0-9]+$ && "$CPUS" -ge 1 ]] || die "SYNSHOT_SLURM_CPUS=$CPUS: must be a positive integer"
[[ "$GPUS" =~ ^[0-9]+$ ]] || die "SYNSHOT_SLURM_GPUS=$GPUS: must be an integer >= 0"
[[ "$DBD" =~ ^(auto|0|1)$ ]] || die "SYNSHOT_SLURM_DBD=$DBD: must be auto, 1 or 0"
[ "$(id -u)" = 0 ] || die "must run as root (slurmd runs jobs as root here and munged must be started as the munge user); run it with sudo, or use a real cluster"

# ---------------------------------------------------------------- packages
BASE_PKGS="slurmctld slurmd slurm-client munge"
DBD_PKGS="slurmdbd mariadb-server"
missing() { local p; for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done; }
apt_install() {
    command -v apt-get >/dev/null || die "packages missing ($*) and no apt-get: install them with your package manager"
    log "installing $*"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}
# shellcheck disable=SC2086
need=$(missing $BASE_PKGS)
[ -z "$need" ] || apt_install $need
if [ "$DBD" != 0 ]; then
    # shellcheck disable=SC2086
    need=$(missing $DBD_PKGS)
    if [ -n "$need" ]; then
        if [ "$DBD" = 1 ] || command -v apt-get >/dev/null; then
            # shellcheck disable=SC2086
            if ! (apt_install $need); then
                [ "$DBD" = 1 ] && die "SYNSHOT_SLURM_DBD=1 but $need could not be installed"
                log "accounting disabled: $need could not be installed (sacct and submitit's job.state will not work)"
                DBD=0
            fi
        else
            DBD=0
        fi
    fi
    [ "$DBD" = auto ] && DBD=1
fi

mkdir -p "$LAB"/{etc,state/ctld,state/d,run,log,fakegpu,jobs}
LAB=$(cd "$LAB" && pwd -P)  # canonical: the same folder reached through a symlink is the same cluster
# Several test runs may call up.sh at once: one at a time.
exec 9>"$LAB/run/.lock"  # daemons started below get `9>&-`: they must not inherit (and hold) the lock
flock -w 120 9 || die "another up.sh/down.sh holds $LAB/run/.lock for more than 120 s"
HOST=$(hostname -s)

# ---------------------------------------------------------------- /etc/hosts
# Emulated nodes are reached by name (MASTER_ADDR=n1): they must resolve to 127.0.0.1.
for name in "$HOST" $(seq -f 'n%g' 1 "$NODES"); do
    getent hosts "$name" >/dev/null || { echo "127.0.0.1 $name" >> /etc/hosts; log "added '127.0.0.1 $name' to /etc/hosts"; }
done

# ---------------------------------------------------------------- fake GPUs
for ((i = 0; i < GPUS; i++)); do
    [ -c "$LAB/fakegpu/gpu$i" ] || { rm -f "$LAB/fakegpu/gpu$i"; mknod -m 666 "$LAB/fakegpu/gpu$i" c 1 3; }
done

# ---------------------------------------------------------------- config
NODE_LIST=$([ "$NODES" = 1 ] && echo n1 || echo "n[1-$NODES]")
MEM=$(awk '/^MemTotal:/{print int($2/1024/'"$NODES"')}' /proc/meminfo)
NODE_LINES=""
for ((i = 1; i <= NODES; i++)); do
    gres=$([ "$GPUS" -gt 0 ] && echo " Gres=gpu:$GPUS" || true)
    NODE_LINES+="NodeName=n$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((NODE_PORT_BASE + i)) CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM$gres State=UNKNOWN"$'\n'
done
DB_NAME=synshot_slurm_acct
DB_USER=synshot_slurm
DB_PASS=synshot_slurm_local
if [ "$DBD" = 1 ]; then
    ACCOUNTING="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/none"
else
    ACCOUNTING="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

render() {  # render TEMPLATE OUT: replace each @KEY@ by the value of the shell variable KEY (pure bash)
    local text key
    text=$(<"$1")
    for key in LAB HOST NODES CTLD_PORT DBD_PORT NODE_LIST NODE_LINES ACCOUNTING DB_NAME DB_USER DB_PASS GPU_MAX; do
        text=${text//@$key@/${!key}}
    done
    if [[ "$text" =~ @[A-Z_]+@ ]]; then die "template $1 uses ${BASH_REMATCH[0]} which up.sh does not define"; fi
    printf '%s\n' "$text" > "$2"
}
GPU_MAX=$((GPUS - 1))
changed=0
install_conf() {  # install_conf TEMPLATE NAME [MODE]: write $LAB/etc/NAME, set changed=1 when it differs
    render "$HERE/$1" "$LAB/etc/$2.new"
    chmod "${3:-644}" "$LAB/etc/$2.new"
    if cmp -s "$LAB/etc/$2.new" "$LAB/etc/$2"; then rm -f "$LAB/etc/$2.new"; else mv -f "$LAB/etc/$2.new" "$LAB/etc/$2"; changed=1; fi
}
install_conf slurm.conf.in slurm.conf
if [ "$GPUS" -gt 0 ]; then
    install_conf gres.conf.in gres.conf
else
    printf '# no fake GPUs (SYNSHOT_SLURM_GPUS=0)\n' > "$LAB/etc/gres.conf.new"
    cmp -s "$LAB/etc/gres.conf.new" "$LAB/etc/gres.conf" && rm -f "$LAB/etc/gres.conf.new" || { mv -f "$LAB/etc/gres.conf.new" "$LAB/etc/gres.conf"; changed=1; }
fi
[ "$DBD" = 1 ] && install_conf slurmdbd.conf.in slurmdbd.conf 600
[ "$DBD" = 1 ] || rm -f "$LAB/etc/slurmdbd.conf"
export SLURM_CONF="$LAB/etc/slurm.conf"

# ---------------------------------------------------------------- munge
if ! alive /run/munge/munged.pid munged; then
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
    [ -s /etc/munge/munge.key ] || { log "creating /etc/munge/munge.key"; mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none; chown munge:munge /etc/munge/munge.key; chmod 0600 /etc/munge/munge.key; }
    runuser -u munge -- munged 9>&- || die "munged failed to start (see /var/log/munge/munged.log)"
    wait_alive /run/munge/munged.pid munged 10 || die "munged did not stay up (see /var/log/munge/munged.log)"
    touch "$LAB/run/munged.ours"
fi
munge -n | unmunge >/dev/null 2>&1 || die "munge round trip failed: 'munge -n | unmunge' (see /var/log/munge/munged.log)"

# ---------------------------------------------------------------- restart on config change
if [ "$changed" = 1 ]; then
    for pidfile in "$LAB"/run/slurmd-*.pid "$LAB/run/slurmctld.pid" "$LAB/run/slurmdbd.pid"; do
        [ -e "$pidfile" ] || continue
        if alive "$pidfile"; then log "config changed: stopping $(basename "$pidfile" .pid)"; stop_pidfile "$pidfile"; fi
    done
fi

# ---------------------------------------------------------------- accounting (MariaDB + slurmdbd)
if [ "$DBD" = 1 ]; then
    if ! mariadb -e 'select 1' >/dev/null 2>&1; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null 2>&1 || die "mariadb-install-db failed"
        # Socket only (no TCP port to collide with); the pid file must be in a mysql-owned folder.
        setsid /usr/sbin/mariadbd --user=mysql --skip-networking --innodb-buffer-pool-size=64M \
            --pid-file=/run/mysqld/synshot-mariadb.pid >"$LAB/log/mariadb.log" 2>&1 < /dev/null 9>&- &
        for _ in $(seq 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
        mariadb -e 'select 1' >/dev/null 2>&1 || die "MariaDB did not start (see $LAB/log/mariadb.log)"
        touch "$LAB/run/mariadb.ours"
    fi
    if [ ! -e "$LAB/state/ctld/job_state" ] && ! alive "$LAB/run/slurmctld.pid" slurmctld && ! alive "$LAB/run/slurmdbd.pid" slurmdbd; then
        # Fresh controller state: job ids restart at 1, so old accounting rows would shadow new jobs.
        mariadb -e "DROP DATABASE IF EXISTS $DB_NAME" || die "could not reset the accounting database $DB_NAME"
    fi
    mariadb -e "CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS'; GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost'; FLUSH PRIVILEGES;" \
        || die "could not create the MariaDB user for slurmdbd"
    if ! alive "$LAB/run/slurmdbd.pid" slurmdbd; then
        slurmdbd 9>&- || die "slurmdbd failed to start (see $LAB/log/slurmdbd.log)"
        wait_alive "$LAB/run/slurmdbd.pid" slurmdbd 10 || die "slurmdbd did not stay up (see $LAB/log/slurmdbd.log$(port_hint "$DBD_PORT"))"
        for _ in $(seq 50); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 0.2; done
    fi
fi

# ---------------------------------------------------------------- slurmctld + slurmd per node
if ! alive "$LAB/run/slurmctld.pid" slurmctld; then
    slurmctld 9>&- || die "slurmctld failed to start (see $LAB/log/slurmctld.log)"
    wait_alive "$LAB/run/slurmctld.pid" slurmctld 10 || die "slurmctld did not stay up (see $LAB/log/slurmctld.log$(port_hint "$CTLD_PORT"))"
fi
for pidfile in "$LAB"/run/slurmd-*.pid; do  # nodes no longer configured (2 -> 1)
    [ -e "$pidfile" ] || continue
    n=$(basename "$pidfile" .pid); n=${n#slurmd-}
    [ "${n#n}" -le "$NODES" ] 2>/dev/null || { alive "$pidfile" && stop_pidfile "$pidfile"; rm -f "$pidfile"; }
done
for ((i = 1; i <= NODES; i++)); do
    if ! alive "$LAB/run/slurmd-n$i.pid" slurmd; then
        mkdir -p "$LAB/state/d/n$i"
        slurmd -N "n$i" 9>&- || die "slurmd -N n$i failed to start (see $LAB/log/slurmd-n$i.log)"
        wait_alive "$LAB/run/slurmd-n$i.pid" slurmd 10 || die "slurmd n$i did not stay up (see $LAB/log/slurmd-n$i.log$(port_hint $((NODE_PORT_BASE + i))))"
    fi
done

# ---------------------------------------------------------------- wait until every node is idle
deadline=$((SECONDS + TIMEOUT))
while :; do
    states=$(sinfo -h -N -o '%N %t' 2>/dev/null || true)
    bad=$(awk '$2 !~ /^(idle|mix|alloc|comp)$/' <<<"$states")
    [ -n "$states" ] && [ -z "$bad" ] && break
    while read -r node st; do
        case "$st" in
            drain*|drng|down*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
            inval*) die "node $node is INVAL (config does not fit; see $LAB/log/slurmctld.log and $LAB/log/slurmd-$node.log)" ;;
        esac
    done <<<"$bad"
    [ "$SECONDS" -lt "$deadline" ] || die "nodes not idle after ${TIMEOUT}s: $(echo "$states" | tr '\n' ' ') (see $LAB/log/)"
    sleep 0.2
done
log "cluster up: $NODES node(s) $NODE_LIST, $CPUS CPUs + $GPUS fake GPUs each, accounting=$([ "$DBD" = 1 ] && echo slurmdbd || echo none), state in $LAB"
echo "export SLURM_CONF=$SLURM_CONF"
