#!/usr/bin/env bash
# The local, REAL SLURM cluster of the tests and the demo: slurmctld, three emulated compute nodes
# (one `slurmd -D -N nodeK` each), slurmdbd with its own MariaDB. All on loopback; all state (config,
# spool, logs, pids, database) in ONE folder outside the checkout. Users of a real cluster never need it
# (see slurm/README.md).
#
#   slurm/cluster.sh up        start what is not running (installs the Debian packages when missing);
#                              a healthy running cluster is reused in about a second. Waits until the
#                              nodes are up and sacct answers.
#   slurm/cluster.sh down      stop the cluster's own processes (by PID file; nothing else is touched)
#   slurm/cluster.sh status    daemons (PID, health), sinfo, squeue summary; exit 1 when not healthy
#   slurm/cluster.sh env       the exports clients need:  source <(slurm/cluster.sh env)
#
# Environment: SIMCLR_SLURM_DIR (state folder, default ~/.cache/simclr-suite/slurm),
#              SIMCLR_SLURM_PORT_BASE (default 17000: slurmctld, +1..+3 the slurmds, +4 slurmdbd, +5 MariaDB),
#              SIMCLR_SLURM_UP_TIMEOUT (seconds `up` waits for each daemon, default 90).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
D="$(realpath -m "${SIMCLR_SLURM_DIR:-$HOME/.cache/simclr-suite/slurm}")"
BASE="${SIMCLR_SLURM_PORT_BASE:-17000}"
UP_TIMEOUT="${SIMCLR_SLURM_UP_TIMEOUT:-90}"
CLUSTER=simclr-local
NODES=(node1 node2 node3)
CPUS=4          # claimed per node (more than the machine has: SlurmdParameters=config_overrides)
MEM_MB=4000     # claimed per node; memory is not a consumable (CR_CPU), this only bounds --mem
PORT_CTLD=$BASE
PORT_DBD=$((BASE + 4))
PORT_DB=$((BASE + 5))
PACKAGES=(slurmctld slurmd slurm-client slurmdbd mariadb-server)

# Every daemon gets these; SIMCLR_SLURM_DIR in a process's environment is also how this script
# recognises its own processes (a PID file alone could point at a recycled PID).
export SLURM_CONF="$D/etc/slurm.conf"
export SIMCLR_SLURM_DIR="$D"

log() { echo "[cluster] $*" >&2; }
die() { echo "[cluster] ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- the daemons: name -> executable, port, command line ------------------------------------------
DAEMONS=(mariadb slurmdbd slurmctld "${NODES[@]/#/slurmd-}")   # start order; stop is the reverse
exe_of() { case "$1" in mariadb) echo mariadbd ;; slurmd-*) echo slurmd ;; *) echo "$1" ;; esac; }
port_of() {
    case "$1" in
        mariadb) echo "$PORT_DB" ;; slurmdbd) echo "$PORT_DBD" ;; slurmctld) echo "$PORT_CTLD" ;;
        slurmd-node*) echo $((BASE + ${1#slurmd-node})) ;;
    esac
}
set_cmd() {  # set_cmd NAME: the daemon's command line into the array CMD (foreground mode)
    case "$1" in
        mariadb) CMD=(mariadbd "--defaults-file=$D/etc/mariadb.cnf") ;;
        slurmdbd) CMD=(slurmdbd -D) ;;   # finds slurmdbd.conf next to $SLURM_CONF
        # -i on a fresh state folder: there is no state to recover yet.
        slurmctld) CMD=(slurmctld -D -f "$SLURM_CONF"); [ -e "$D/state/job_state" ] || CMD+=(-i) ;;
        slurmd-*) CMD=(slurmd -D -N "${1#slurmd-}" -f "$SLURM_CONF") ;;
    esac
}
# is_exe PATH NAME: PATH (from /proc/PID/exe) is the program NAME (Debian installs slurmd as slurmd-wlm).
is_exe() { local b; b="$(basename "${1% (deleted)}")"; [ "$b" = "$2" ] || [ "$b" = "$2-wlm" ]; }
pidfile_of() { echo "$D/pids/$1.pid"; }

# Prints the daemon's PID when it runs and is ours (right executable, our marker in its environment).
pid_of() {
    local f pid exe
    f="$(pidfile_of "$1")"
    [ -s "$f" ] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1   # also fails for zombies
    is_exe "$exe" "$(exe_of "$1")" || return 1
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -xF "SIMCLR_SLURM_DIR=$D" >/dev/null || return 1
    echo "$pid"
}

port_busy() {
    if command -v ss >/dev/null; then
        [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
port_owner() { command -v ss >/dev/null && ss -Htlnp "sport = :$1" 2>/dev/null | grep -o 'users:.*' | head -1; }

# --- health checks (each quick, silent, exit status only) -----------------------------------------
mycli() { "$1" "--defaults-file=$D/etc/mariadb.cnf" "${@:2}"; }
healthy() {
    case "$1" in
        mariadb) mycli mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1 ;;
        slurmdbd) timeout 10 sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1 ;;
        slurmctld) timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' ;;
        slurmd-*) node_state "${1#slurmd-}" | grep -Eq '^(idle|allocated|mixed|completing)$' ;;
    esac
}
node_state() { timeout 10 sinfo -h -N -n "$1" -o '%T' 2>/dev/null | head -1; }
sacct_answers() {
    timeout 10 sacct -n -X -a -S now-1minutes >/dev/null 2>&1 &&
        timeout 10 sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"
}

wait_until() {  # wait_until DESCRIPTION DAEMON-OR-'' COMMAND...: poll up to UP_TIMEOUT seconds
    local what="$1" daemon="$2" t0=$SECONDS
    shift 2
    until "$@"; do
        if [ -n "$daemon" ] && ! pid_of "$daemon" >/dev/null; then
            die "$daemon exited while starting; see $D/log/$daemon.out and $D/log/ ($(tail -3 "$D/log/$daemon.out" 2>/dev/null | tr '\n' ' '))"
        fi
        [ $((SECONDS - t0)) -lt "$UP_TIMEOUT" ] || die "timed out after ${UP_TIMEOUT}s waiting for $what; see logs in $D/log/"
        sleep 0.2
    done
}

# --- pieces of `up` --------------------------------------------------------------------------------
ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "Debian packages missing (${missing[*]}); install them as root: apt-get install ${missing[*]}"
    log "installing ${missing[*]} (apt-get; no service is started by it)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >&2
}

# Emulated node names do not resolve, but torch.distributed (submitit's TorchDistributedEnvironment)
# takes MASTER_ADDR from SLURM_JOB_NODELIST: map them to loopback.
ensure_hosts() {
    local missing=() n
    for n in "${NODES[@]}"; do
        getent ahostsv4 "$n" 2>/dev/null | grep -q '^127\.0\.0\.1 ' || missing+=("$n")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -w /etc/hosts ]; then
        echo "127.0.0.1 ${missing[*]}  # simclr-suite local SLURM cluster (slurm/cluster.sh)" >>/etc/hosts
        log "added ${missing[*]} -> 127.0.0.1 to /etc/hosts"
    else
        log "WARNING: cannot write /etc/hosts: ${missing[*]} do not resolve, multi-node jobs need MASTER_ADDR=127.0.0.1"
    fi
}

render() {  # render TEMPLATE OUT: substitute @KEY@ placeholders (pure bash: paths may hold any character)
    local s
    s="$(cat "$1")"
    s="${s//@DIR@/$D}"
    s="${s//@CLUSTER@/$CLUSTER}"
    s="${s//@PORT_CTLD@/$PORT_CTLD}"
    s="${s//@PORT_NODE_FIRST@/$((BASE + 1))}"
    s="${s//@PORT_NODE_LAST@/$((BASE + ${#NODES[@]}))}"
    s="${s//@PORT_DBD@/$PORT_DBD}"
    s="${s//@PORT_DB@/$PORT_DB}"
    s="${s//@CPUS@/$CPUS}"
    s="${s//@MEM_MB@/$MEM_MB}"
    s="${s//@DB_PASS@/$(cat "$D/etc/db.pass")}"
    (umask 077 && printf '%s\n' "$s" >"$2")
}

# Writes the configs; returns 0 when they changed (so that running daemons must be restarted).
write_configs() {
    local changed=1 f
    [ -s "$D/etc/db.pass" ] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$D/etc/db.pass")
    for f in slurm.conf slurmdbd.conf mariadb.cnf; do
        render "$here/$f.in" "$D/etc/$f.new"
        if cmp -s "$D/etc/$f.new" "$D/etc/$f"; then
            rm -f "$D/etc/$f.new"
        else
            mv -f "$D/etc/$f.new" "$D/etc/$f"
            changed=0
        fi
    done
    chmod 600 "$D/etc/slurmdbd.conf"   # slurmdbd refuses a readable file (it holds the DB password)
    chmod 644 "$D/etc/slurm.conf" "$D/etc/mariadb.cnf"
    return $changed
}

start_daemon() {
    local name="$1" f
    f="$(pidfile_of "$name")"
    # The wrapper writes its own PID, then execs the daemon: the PID file is exactly the daemon's PID.
    # setsid: the daemons outlive the shell (and a Ctrl-C in it) that ran `up`; 9>&-: they must not
    # inherit (and so hold forever) the lock of this script.
    set_cmd "$name"
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$f" "${CMD[@]}" </dev/null >>"$D/log/$name.out" 2>&1 9>&- &
    local t0=$SECONDS
    until pid_of "$name" >/dev/null; do
        [ $((SECONDS - t0)) -lt 10 ] || die "$name did not start; see $D/log/$name.out"
        sleep 0.05
    done
}

init_mariadb() {
    if [ ! -d "$D/db/mysql" ]; then
        log "initialising MariaDB in $D/db"
        rm -rf "$D/db"
        mariadb-install-db "--defaults-file=$D/etc/mariadb.cnf" --auth-root-authentication-method=socket \
            --skip-test-db >"$D/log/mariadb-install.out" 2>&1 ||
            die "mariadb-install-db failed; see $D/log/mariadb-install.out"
    fi
}

ensure_db_user() {  # idempotent; root logs in through the socket (unix_socket auth)
    local pw
    pw="$(cat "$D/etc/db.pass")"
    mycli mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
        ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
        die "could not create the database user 'slurm'; see $D/log/mariadb.log"
}

resume_bad_nodes() {  # a node left DOWN/DRAIN (e.g. after a killed step) would stall every test
    local n st
    for n in "${NODES[@]}"; do
        st="$(node_state "$n")"
        case "$st" in
            down* | drain* | fail*) scontrol update "NodeName=$n" State=RESUME >/dev/null 2>&1 || true ;;
        esac
    done
}

any_running() { local d; for d in "${DAEMONS[@]}"; do pid_of "$d" >/dev/null && return 0; done; return 1; }

cmd_up() {
    local t0 started=() d p
    t0="$(now)"
    ensure_packages
    mkdir -p "$D"/{etc,state,log,run,pids,db} "${NODES[@]/#/$D/spool/}"
    exec 9>"$D/.lock"
    flock -w 600 9 || die "another 'cluster.sh' holds $D/.lock"
    ensure_hosts
    if write_configs && any_running; then
        log "configuration changed: restarting the cluster's daemons (state and running jobs are kept)"
        stop_all keep-jobs
    fi
    # Every port we are about to use must be free BEFORE anything starts: a foreign listener is an error.
    for d in "${DAEMONS[@]}"; do
        pid_of "$d" >/dev/null && continue
        p="$(port_of "$d")"
        if port_busy "$p"; then
            die "port $p (for $d) is already in use by another process $(port_owner "$p"); stop it, or choose other ports with SIMCLR_SLURM_PORT_BASE (now $BASE: uses $BASE-$((BASE + 5)))"
        fi
    done
    for d in "${DAEMONS[@]}"; do
        if pid_of "$d" >/dev/null; then
            continue
        fi
        [ "$d" = mariadb ] && init_mariadb
        start_daemon "$d"
        started+=("$d")
        case "$d" in
            mariadb) wait_until "MariaDB to answer" mariadb healthy mariadb; ensure_db_user ;;
            slurmdbd) wait_until "slurmdbd to answer" slurmdbd healthy slurmdbd ;;
            slurmctld) wait_until "slurmctld to answer" slurmctld healthy slurmctld ;;
        esac
    done
    # Checks of the whole cluster, also on the warm path (a daemon may run but be stuck).
    wait_until "slurmctld to answer" "" healthy slurmctld
    resume_bad_nodes
    for d in "${NODES[@]/#/slurmd-}"; do wait_until "$d to be up in sinfo" "$d" healthy "$d"; done
    wait_until "sacct (slurmdbd) to answer and know cluster $CLUSTER" "" sacct_answers
    if [ ${#started[@]} -eq 0 ]; then
        log "reused the running cluster in $(since "$t0") s ($D)"
    else
        log "started ${started[*]} in $(since "$t0") s ($D)"
    fi
    log "clients: source <(slurm/cluster.sh env)"
}

stop_pid() {  # stop_pid NAME: SIGTERM, then SIGKILL after 20 s
    local name="$1" pid t0=$SECONDS
    pid="$(pid_of "$name")" || { rm -f "$(pidfile_of "$name")"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    while pid_of "$name" >/dev/null; do
        if [ $((SECONDS - t0)) -ge 20 ]; then
            log "$name ($pid) ignored SIGTERM for 20 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.1
    done
    rm -f "$(pidfile_of "$name")"
    log "stopped $name ($pid)"
}

stop_all() {  # stop_all [keep-jobs]: keep-jobs restarts daemons under running jobs (slurmd re-attaches)
    local d i pid exe
    if [ "${1:-}" != keep-jobs ] && pid_of slurmctld >/dev/null; then
        # Jobs first, so no job step outlives its slurmd.
        timeout 10 squeue -h -o %A 2>/dev/null | xargs -r timeout 10 scancel 2>/dev/null || true
        for _ in $(seq 50); do [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_pid "${DAEMONS[i]}"; done
    [ "${1:-}" = keep-jobs ] && return 0
    # Job steps whose slurmd is gone: only processes carrying this cluster's marker.
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || continue
        is_exe "$exe" slurmstepd || continue
        tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -xF "SIMCLR_SLURM_DIR=$D" >/dev/null || continue
        kill -KILL "$pid" 2>/dev/null && log "killed leftover slurmstepd ($pid)"
    done
}

cmd_down() {
    [ -d "$D" ] || { log "nothing to stop ($D does not exist)"; return 0; }
    exec 9>"$D/.lock"
    flock -w 600 9 || die "another 'cluster.sh' holds $D/.lock"
    stop_all
    log "cluster stopped (state kept in $D)"
}

cmd_status() {
    local ok=0 d pid h
    echo "state folder: $D   SLURM_CONF=$SLURM_CONF"
    printf '%-14s %-8s %-6s %s\n' DAEMON PID PORT HEALTH
    for d in "${DAEMONS[@]}"; do
        if pid="$(pid_of "$d")"; then
            if healthy "$d"; then h=ok; else h="NOT ANSWERING"; ok=1; fi
        else
            pid=-; h="not running"; ok=1
        fi
        printf '%-14s %-8s %-6s %s\n' "$d" "$pid" "$(port_of "$d")" "$h"
    done
    if pid_of slurmctld >/dev/null; then
        echo
        timeout 10 sinfo -o '%10P %6a %10l %6D %10T %N' || ok=1
        echo
        echo "jobs by state: $(timeout 10 squeue -h -o %T | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')"
        timeout 10 squeue -o '%.8i %.9P %.24j %.8T %.10M %.6D %R' | head -21
    fi
    return $ok
}

cmd_env() {
    printf 'export SIMCLR_SLURM_DIR=%q\n' "$D"
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF"
    # Whoever sources this expects the cluster: cluster-marked tests fail (not skip) when it is down.
    echo 'export SIMCLR_REQUIRE_CLUSTER=1'
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
