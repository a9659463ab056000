# Helpers shared by up.sh and down.sh (sourced, not executed).
# Liveness comes from /proc/PID/stat: on an init that does not reap orphans a stopped daemon
# stays a zombie, and `kill -0` would still report it alive.

pid_state() {  # pid_state PID -> single-letter process state (R, S, Z, ...) or nothing
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }          # drop "pid (comm) " (comm may contain spaces)
    echo "${stat%% *}"
}

alive() {  # alive PIDFILE [COMM]: the pid in PIDFILE runs (not a zombie) and, if given, is COMM
    local pid st
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    st=$(pid_state "$pid")
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ] || return 1
    [ -z "${2:-}" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

wait_alive() {  # wait_alive PIDFILE COMM SECONDS: daemons write their pid file a few ms after forking
    local i
    for ((i = 0; i < $3 * 10; i++)); do alive "$1" "$2" && return 0; sleep 0.1; done
    return 1
}

stop_pidfile() {  # stop_pidfile PIDFILE: SIGTERM, wait up to 15 s, then SIGKILL
    local pid i
    pid=$(cat "$1" 2>/dev/null) || return 0
    alive "$1" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        [ -n "$(pid_state "$pid")" ] && [ "$(pid_state "$pid")" != Z ] || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
