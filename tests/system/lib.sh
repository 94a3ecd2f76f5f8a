# shellcheck shell=bash
# Helpers of the system test (tests/system/run): a cached Debian 12 rootfs, containers booted with
# systemd-nspawn, commands run inside them with nsenter, and the assertions' plumbing. Sourced, not run.
#
# A container is named; its rootfs is extracted afresh from the cached tarball into $WORK/ct/<name>, and
# it boots with `systemd-nspawn --boot --register=no --keep-unit` (the host has no systemd, DESIGN §7) in a
# cgroup of its own, so two containers never share nspawn's payload/supervisor cgroups. Every container
# sees the local apt repository read-only at /srv/logtank-repo. Networking: a private network namespace
# per container (its own loopback, so the daemons' fixed ports never meet the host's), or a named one that
# several containers share (their daemons then need different ports).

# Packages of the cached rootfs (DESIGN §7's recipe); the tarball's name carries their hash, so changing the
# list builds a new one.
ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,apt,rsync,procps,iproute2
ROOTFS_SUITE=bookworm
ROOTFS_MIRROR=${LOGTANK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The local apt repositories ($REPO, and $REPO_UPGRADE when set) appear read-only in every container here
# (and at $REPO_IN_CT-upgrade); only the first is in its sources.list.d from the start.
REPO_IN_CT=/srv/logtank-repo
# How long a container may take to boot (systemd `running`), and a daemon to reach a state.
BOOT_TIMEOUT_S=60
# shellcheck disable=SC2034 # used by run and replication
STATE_TIMEOUT_S=30

declare -A CT_NSPAWN_PID=()
declare -A CT_LEADER=()

say() { printf '%s %s\n' "$(date +%T)" "$*"; }

rootfs_tarball() {
    local hash
    hash=$(printf '%s %s' "$ROOTFS_SUITE" "$ROOTFS_PACKAGES" | sha256sum | cut -c1-12)
    echo "$WORK/rootfs-$ROOTFS_SUITE-$hash.tar"
}

# Builds the cached rootfs tarball once (debootstrap, about a minute); later runs reuse it.
ensure_rootfs() {
    local tarball tmp
    tarball=$(rootfs_tarball)
    [ -s "$tarball" ] && return 0
    say "debootstrap $ROOTFS_SUITE (minbase + $ROOTFS_PACKAGES) into a cached tarball"
    tmp=$(mktemp -d "$WORK/rootfs.XXXXXX")
    if ! debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" "$ROOTFS_SUITE" "$tmp" "$ROOTFS_MIRROR" \
        >"$WORK/debootstrap.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap.log"
        rm -rf "$tmp"
        return 1
    fi
    # mktemp made it 0700: non-root services (dbus, the logtank user) could not reach anything.
    chmod 755 "$tmp"
    echo logtank-test >"$tmp/etc/hostname"
    # No getty on the host's console; nspawn gives the container a read-only console anyway.
    rm -f "$tmp/etc/systemd/system/getty.target.wants/"*
    rm -rf "$tmp/var/cache/apt/archives/"*.deb
    tar -C "$tmp" --numeric-owner -cpf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$tmp"
}

# ct_boot NAME [NETNS]: a fresh container from the cached rootfs, booted and `running`.
ct_boot() {
    local name=$1 dir=$WORK/ct/$1
    ct_destroy "$name"
    mkdir -p "$dir"
    chmod 755 "$dir"
    tar -C "$dir" --numeric-owner -xpf "$(rootfs_tarball)"
    echo "deb [trusted=yes] file:$REPO_IN_CT ./" >"$dir/etc/apt/sources.list.d/logtank.list"
    ct_start "$@"
}

# ct_start NAME [NETNS]: boots the container's existing rootfs (again, after ct_stop: a reboot).
ct_start() {
    local name=$1 netns=${2:-} dir=$WORK/ct/$1 net_args=() bind_args=() pid leader i state cg
    bind_args=(--bind-ro="$REPO:$REPO_IN_CT")
    [ -n "${REPO_UPGRADE:-}" ] && bind_args+=(--bind-ro="$REPO_UPGRADE:$REPO_IN_CT-upgrade")
    if [ -n "$netns" ]; then
        net_args=(--network-namespace-path="/run/netns/$netns")
    else
        net_args=(--private-network)
    fi
    # Its own cgroup in the named (systemd) and unified hierarchies: nspawn --keep-unit puts its payload
    # and supervisor cgroups under the cgroup it was started in.
    for cg in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
        [ -d "$cg" ] && mkdir -p "$cg/logtank-system-$name"
    done
    (
        for cg in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
            [ -d "$cg/logtank-system-$name" ] && echo $BASHPID >"$cg/logtank-system-$name/cgroup.procs"
        done
        exec setsid systemd-nspawn --boot --register=no --keep-unit --console=read-only \
            -D "$dir" -M "$name" "${net_args[@]}" "${bind_args[@]}" \
            >>"$LOG_DIR/container-$name.log" 2>&1
    ) &
    pid=$!
    CT_NSPAWN_PID[$name]=$pid
    state=
    for ((i = 0; i < BOOT_TIMEOUT_S * 10; i++)); do
        leader=$(pgrep -P "$pid" -x systemd | head -n 1)
        if [ -n "$leader" ]; then
            CT_LEADER[$name]=$leader
            state=$(ct "$name" systemctl is-system-running 2>/dev/null)
            case $state in running | degraded) break ;; esac
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "container $name: systemd-nspawn exited; its log:"
            tail -n 30 "$LOG_DIR/container-$name.log"
            return 1
        fi
        sleep 0.1
    done
    if [ "$state" = degraded ]; then
        echo "container $name booted degraded:"
        ct "$name" systemctl --failed --no-pager
    elif [ "$state" != running ]; then
        echo "container $name did not boot within ${BOOT_TIMEOUT_S}s (state: ${state:-none})"
        return 1
    fi
}

# ct NAME CMD...: runs CMD in the container (all its namespaces), with a clean environment, for at most
# CT_TIMEOUT_S seconds: a command that never returns (a read that loops) fails instead of hanging the suite;
# timeout kills its whole process group, the processes inside the container included.
CT_TIMEOUT_S=${CT_TIMEOUT_S:-120}
ct() {
    local name=$1
    shift
    timeout --kill-after=10 "$CT_TIMEOUT_S" nsenter -t "${CT_LEADER[$name]}" -a \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

# ct_sh NAME SCRIPT: runs a shell script in the container.
ct_sh() {
    local name=$1
    shift
    ct "$name" sh -c "$*"
}

# ct_stop NAME: powers the container off (waits for nspawn to exit, kills it if it does not); the rootfs stays.
ct_stop() {
    local name=$1 pid=${CT_NSPAWN_PID[$1]:-} i cg
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        ct "$name" systemctl poweroff --no-block >/dev/null 2>&1 || true
        for ((i = 0; i < 300; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "container $name did not power off; killing its systemd-nspawn ($pid)"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    fi
    unset "CT_NSPAWN_PID[$name]" "CT_LEADER[$name]"
    for cg in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
        [ -d "$cg/logtank-system-$name" ] || continue
        # Empty by now: remove the tree nspawn left, deepest first.
        find "$cg/logtank-system-$name" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

# ct_destroy NAME: ct_stop, then the rootfs goes.
ct_destroy() {
    ct_stop "$1"
    rm -rf "${WORK:?}/ct/$1"
}

# wait_for SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s until it succeeds, for SECONDS of wall-clock
# time (a slow attempt counts).
wait_for() {
    local seconds=$1 what=$2 started=$SECONDS
    shift 2
    while :; do
        if "$@" >/dev/null 2>&1; then
            # Slow waits are worth knowing about (the suite's time budget).
            [ $((SECONDS - started)) -ge 2 ] && echo "($what: $((SECONDS - started))s)"
            return 0
        fi
        [ $((SECONDS - started)) -ge "$seconds" ] && break
        sleep 0.2
    done
    echo "timed out after ${seconds}s waiting for: $what"
    return 1
}
