# shellcheck shell=bash
# minidelta's login node (sourced by scripts/minidelta): Debian's OpenSSH server in a network
# namespace of its own, playing Delta's login node (dt-login03...) for deltajobs' laptop side.
#
#   $LOGIN_NS        network namespace; a veth pair joins it to the host: $LOGIN_HOST_ADDR (host
#                    side) and $LOGIN_ADDR (eth0 inside, sshd's address). Its own hostname
#                    ($LOGIN_NAME, a UTS namespace), the host's filesystem (namespaces share mounts).
#   SLURM            the host's /etc/slurm/slurm.conf and munge socket; `ip netns exec` binds
#                    /etc/netns/$LOGIN_NS/hosts over /etc/hosts, where the controller's name is
#                    $LOGIN_HOST_ADDR (on the host it is 127.0.0.1, the namespace's own loopback).
#   $LOGIN_USER      a real Unix user (home, bash), key authentication only, in SLURM's accounting
#                    with the test accounts; `module` works in its ssh commands (~/.bashrc).
#   PyPI             through an HTTP CONNECT proxy on $LOGIN_HOST_ADDR:$LOGIN_PROXY_PORT (the
#                    namespace has no route out); sshd hands https_proxy to every session.
#   Files            host key and the user's client key: $LOGIN_STATE (kept across down/up);
#                    sshd's log $SSHD_LOG (one "Accepted publickey for ..." line per authentication),
#                    the client config $SSH_CLIENT_CONFIG (`Host $LOGIN_NAME`) and its known_hosts.
#
# The namespace is not named md-*: `up --nodes N` removes those and leaves this one alone.

readonly LOGIN_NS="mdlogin"
readonly LOGIN_NAME="minidelta-login"
readonly LOGIN_USER="${MINIDELTA_LOGIN_USER:-mdlogin}"
readonly LOGIN_SUBNET="${MINIDELTA_LOGIN_SUBNET:-10.78.0}"
readonly LOGIN_HOST_ADDR="$LOGIN_SUBNET.1"
readonly LOGIN_ADDR="$LOGIN_SUBNET.2"
readonly LOGIN_PORT=22
readonly LOGIN_VETH="mdlogin0" # the host's end; the namespace's end is its eth0
readonly LOGIN_PROXY_PORT=3128
readonly LOGIN_STATE="$STATE_DIR/login"
readonly LOGIN_HOST_KEY="$LOGIN_STATE/ssh_host_ed25519_key"
readonly LOGIN_CLIENT_KEY="$LOGIN_STATE/id_ed25519"
readonly SSHD_CONFIG="$LOGIN_STATE/sshd_config"
readonly SSHD_PID="$RUN_DIR/sshd.pid"
readonly SSHD_LOG="$RUN_DIR/sshd.log"
readonly LOGIN_PROXY_PID="$RUN_DIR/login-proxy.pid"
readonly LOGIN_PROXY_LOG="$LOG_DIR/login-proxy.log"
readonly SSH_CLIENT_CONFIG="$RUN_DIR/ssh_config"
readonly LOGIN_KNOWN_HOSTS="$RUN_DIR/ssh_known_hosts"
readonly LOGIN_HOSTS="/etc/netns/$LOGIN_NS/hosts"
readonly LOGIN_PACKAGES=(openssh-server openssh-client rsync)

login_packages_missing() {
    local bin
    for bin in /usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen /usr/bin/rsync; do
        [[ -x $bin ]] || return 0
    done
    return 1
}

login_install_packages() {
    login_packages_missing || return 0
    wait_for_other_apt
    log "installing ${LOGIN_PACKAGES[*]} (log: $LOG_DIR/apt.log)"
    if ! apt-get install -y --no-install-recommends "${LOGIN_PACKAGES[@]}" </dev/null >>"$LOG_DIR/apt.log" 2>&1; then
        apt-get update </dev/null >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get update failed, see $LOG_DIR/apt.log"
        apt-get install -y --no-install-recommends "${LOGIN_PACKAGES[@]}" </dev/null >>"$LOG_DIR/apt.log" 2>&1 \
            || die "apt-get install ${LOGIN_PACKAGES[*]} failed, see $LOG_DIR/apt.log"
    fi
    login_packages_missing && die "${LOGIN_PACKAGES[*]} installed but sshd/ssh/rsync still missing"
    return 0
}

# login_running: sshd of the login node is alive (/proc, so that non-root `status` works).
login_running() { pid_alive "$SSHD_PID" sshd; }

# login_port_open: something answers an SSH banner on $LOGIN_ADDR:$LOGIN_PORT (no authentication,
# so no line in the log but sshd's "Connection closed ... [preauth]").
login_port_open() {
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && head -c 7 <&3' sh "$LOGIN_ADDR" "$LOGIN_PORT" 2>/dev/null \
        | grep -q '^SSH-2.0'
}

# login_keys: the host key and the test user's client key, generated once. The client key belongs
# to whoever ran `sudo` (root otherwise), mode 0600, so that their ssh accepts it.
login_keys() {
    local owner=${SUDO_USER:-root} key
    mkdir -p "$LOGIN_STATE"
    chmod 0755 "$LOGIN_STATE"
    for key in "$LOGIN_HOST_KEY" "$LOGIN_CLIENT_KEY"; do
        if [[ ! -s $key || ! -s $key.pub ]]; then
            rm -f "$key" "$key.pub"
            ssh-keygen -q -t ed25519 -N '' -C "$LOGIN_USER@$LOGIN_NAME (minidelta)" -f "$key" </dev/null \
                || die "ssh-keygen could not write $key"
            log "generated $key"
        fi
    done
    chown root:root "$LOGIN_HOST_KEY"
    chmod 0600 "$LOGIN_HOST_KEY"
    chown "$owner:" "$LOGIN_CLIENT_KEY"
    chmod 0600 "$LOGIN_CLIENT_KEY"
}

# login_user: $LOGIN_USER with a home and bash, no password (not locked: '*', so that sshd without
# PAM lets a key in), the client key authorised, and `module` in every bash (~/.bashrc, before
# Debian's "not interactive: return", as RHEL's /etc/bashrc does on Delta -- a guess about Delta).
# The test is `type module`, not Lmod's variables: a job's bash inherits SSH_CLIENT from the login
# session, so Debian's bash reads ~/.bashrc instead of BASH_ENV (the TaskProlog's Lmod), with
# LMOD_CMD set and no `module` function (exported functions do not survive sbatch's /bin/sh).
login_user() {
    local home ssh_dir rc line
    if ! id "$LOGIN_USER" >/dev/null 2>&1; then
        log "creating user $LOGIN_USER"
        useradd --create-home --shell /bin/bash --user-group "$LOGIN_USER" \
            || die "useradd $LOGIN_USER failed"
    fi
    [[ $(getent shadow "$LOGIN_USER" | cut -d: -f2) == '*' ]] || usermod -p '*' "$LOGIN_USER"
    home=$(getent passwd "$LOGIN_USER" | cut -d: -f6)
    [[ -d $home ]] || die "the home of $LOGIN_USER ($home) is missing"
    ssh_dir="$home/.ssh"
    install -d -o "$LOGIN_USER" -g "$LOGIN_USER" -m 0700 "$ssh_dir"
    if ! cmp -s "$LOGIN_CLIENT_KEY.pub" "$ssh_dir/authorized_keys"; then
        install -o "$LOGIN_USER" -g "$LOGIN_USER" -m 0600 "$LOGIN_CLIENT_KEY.pub" "$ssh_dir/authorized_keys"
        log "authorised $LOGIN_CLIENT_KEY for $LOGIN_USER"
    fi
    rc="$home/.bashrc"
    line="type module >/dev/null 2>&1 || { [ -r /etc/profile.d/lmod.sh ] && . /etc/profile.d/lmod.sh; } $MARKER"
    if ! grep -qxF "$line" "$rc" 2>/dev/null; then
        { echo "$line"; grep -vF "$MARKER" "$rc" 2>/dev/null || true; } >"$rc.minidelta"
        chown "$LOGIN_USER:$LOGIN_USER" "$rc.minidelta"
        chmod 0644 "$rc.minidelta"
        mv -f "$rc.minidelta" "$rc"
        log "$rc: module in every bash"
    fi
}

# login_accounts: $LOGIN_USER in every test account, $GPU_ACCOUNT by default, as setup_accounts
# does for root; the new associations inherit their account's QOS (its SU balance).
login_accounts() {
    local acct
    for acct in "$GPU_ACCOUNT" "$CPU_ACCOUNT" "$LIMITED_ACCOUNT"; do
        if [[ -z $(sacctmgr -n -P show assoc where cluster="$CLUSTER" account="$acct" user="$LOGIN_USER" format=user </dev/null) ]]; then
            log "adding user $LOGIN_USER to account $acct"
            sacctmgr -i add user "$LOGIN_USER" Account="$acct" Cluster="$CLUSTER" </dev/null >/dev/null
        fi
    done
    if [[ $(sacctmgr -n -P show user "$LOGIN_USER" format=defaultaccount </dev/null) != "$GPU_ACCOUNT" ]]; then
        sacctmgr -i modify user where name="$LOGIN_USER" set DefaultAccount="$GPU_ACCOUNT" </dev/null >/dev/null
    fi
}

# login_python: the modules' Python runs for other users too. It lives under the interpreter that
# built deltajobs' venv; a directory on its way that others cannot enter (/root, 0700, with pyenv)
# gets o+x (enter, not list) and is said.
login_python() {
    local exe dir
    exe=$(readlink -f "$("$PYTHON" -c 'import sys; print(sys._base_executable)')")
    dir=${exe%/*}
    while [[ -n $dir ]]; do
        if (((8#$(stat -c %a "$dir") & 1) == 0)); then
            chmod o+x "$dir"
            log "$dir: o+x, so that $LOGIN_USER and its jobs can run $exe (the modules' Python)"
        fi
        dir=${dir%/*}
    done
    runuser -u "$LOGIN_USER" -- "$exe" -c 'pass' </dev/null || die "$LOGIN_USER cannot run $exe"
}

# login_hosts: the namespace's /etc/hosts (ip netns exec binds it over /etc/hosts): the controller's
# name at the host's end of the veth, the login node's own name, and the nodes' lines. Rewritten in
# place, so that a running namespace sees the change.
login_hosts() {
    local content
    content="$(printf '%s\n' "127.0.0.1 localhost $MARKER" "$LOGIN_HOST_ADDR $NODE" "$LOGIN_ADDR $LOGIN_NAME"
        grep -F "$HOSTS_MARKER" /etc/hosts || true)"
    mkdir -p "${LOGIN_HOSTS%/*}"
    [[ -f $LOGIN_HOSTS && $(cat "$LOGIN_HOSTS") == "$content" ]] && return 0
    printf '%s\n' "$content" >"$LOGIN_HOSTS"
}

# login_name_on_host [clear]: the login node's name in the host's /etc/hosts (the nodes': namespaces
# share it), as Delta's compute nodes resolve dt-login03: a job finds the host it was submitted from
# by SLURM_SUBMIT_HOST (a notebook listens on its address toward it: deltajobs.injob.notebook).
login_name_on_host() {
    local tmp marker="# minidelta login node"
    tmp=$(mktemp)
    grep -vF "$marker" /etc/hosts >"$tmp" || true
    [[ ${1:-} == clear ]] || printf '%s %s %s\n' "$LOGIN_ADDR" "$LOGIN_NAME" "$marker" >>"$tmp"
    cat "$tmp" >/etc/hosts # in place: /etc/hosts may be a bind mount
    rm -f "$tmp"
}

# login_network: the namespace, the veth pair and a default route through the host, which is how
# a several-node cluster's controller address ($SUBNET.1) is reached too.
login_network() {
    login_hosts
    ip netns list | grep -qw "$LOGIN_NS" && return 0
    log "creating namespace $LOGIN_NS ($LOGIN_NAME, $LOGIN_ADDR; host end $LOGIN_VETH $LOGIN_HOST_ADDR)"
    ip link del "$LOGIN_VETH" >/dev/null 2>&1 || true
    ip netns add "$LOGIN_NS"
    ip link add "$LOGIN_VETH" type veth peer name mdlogin-tmp
    ip link set mdlogin-tmp netns "$LOGIN_NS"
    ip netns exec "$LOGIN_NS" ip link set mdlogin-tmp name eth0
    ip netns exec "$LOGIN_NS" ip addr add "$LOGIN_ADDR/24" dev eth0
    ip netns exec "$LOGIN_NS" ip link set eth0 up
    ip netns exec "$LOGIN_NS" ip link set lo up
    ip addr add "$LOGIN_HOST_ADDR/24" dev "$LOGIN_VETH"
    ip link set "$LOGIN_VETH" up
    ip netns exec "$LOGIN_NS" ip route add default via "$LOGIN_HOST_ADDR"
}

# login_sshd_config: key authentication only, for $LOGIN_USER only, logging every authentication.
login_sshd_config() {
    cat <<EOF
$MARKER -- sshd of minidelta's login node, rewritten by '$PROG up --login'.
ListenAddress $LOGIN_ADDR:$LOGIN_PORT
HostKey $LOGIN_HOST_KEY
PidFile $SSHD_PID
# VERBOSE: "Accepted publickey for USER from ADDR port N ssh2: ED25519 SHA256:..." per authentication.
LogLevel VERBOSE
AllowUsers $LOGIN_USER
PermitRootLogin no
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
# deltajobs multiplexes its commands over one ControlMaster connection, and tunnels TensorBoard.
MaxSessions 64
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
SetEnv https_proxy=http://$LOGIN_HOST_ADDR:$LOGIN_PROXY_PORT
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

# login_start_sshd: sshd in the namespace under the login node's hostname, its log in $SSHD_LOG
# (appended). Restarted when its configuration changed.
login_start_sshd() {
    local changed=0
    if write_if_changed "$SSHD_CONFIG" 0644 "$(login_sshd_config)"; then changed=1; fi
    install -d -m 0755 /run/sshd # sshd's privilege separation directory
    /usr/sbin/sshd -t -f "$SSHD_CONFIG" || die "sshd rejects $SSHD_CONFIG (see above)"
    if ((changed)) && login_running; then stop_pid sshd "$SSHD_PID" sshd; fi
    if ! login_running; then
        touch "$SSHD_LOG"
        chmod 0644 "$SSHD_LOG"
        log "starting sshd in $LOGIN_NS ($LOGIN_ADDR:$LOGIN_PORT, log $SSHD_LOG)"
        # shellcheck disable=SC2016 # expanded by the inner shell
        ip netns exec "$LOGIN_NS" unshare --uts sh -c 'hostname "$1" && exec /usr/sbin/sshd -f "$2" -E "$3" </dev/null' \
            sh "$LOGIN_NAME" "$SSHD_CONFIG" "$SSHD_LOG" 9>&- || die "sshd failed to start, see $SSHD_LOG"
        mark_started sshd
    fi
    wait_for "$TIMEOUT" "sshd on $LOGIN_ADDR:$LOGIN_PORT (log: $SSHD_LOG)" login_port_open || exit 1
}

# login_start_proxy: PyPI for the login node (scripts/minidelta.d/login_proxy.py).
login_start_proxy() {
    pid_alive "$LOGIN_PROXY_PID" python && return 0
    setsid "$PYTHON" "$REPO_DIR/scripts/minidelta.d/login_proxy.py" --listen "$LOGIN_HOST_ADDR" \
        --port "$LOGIN_PROXY_PORT" --pid-file "$LOGIN_PROXY_PID" </dev/null >>"$LOGIN_PROXY_LOG" 2>&1 9>&- &
    mark_started login-proxy
    wait_for 10 "the login node's proxy (log: $LOGIN_PROXY_LOG)" pid_alive "$LOGIN_PROXY_PID" python || exit 1
}

# login_client_config: the OpenSSH client config that reaches the login node, and its known host.
login_client_config() {
    write_if_changed "$LOGIN_KNOWN_HOSTS" 0644 "$LOGIN_NAME $(cut -d' ' -f1,2 "$LOGIN_HOST_KEY.pub")" || true
    write_if_changed "$SSH_CLIENT_CONFIG" 0644 "$MARKER -- minidelta's login node ('$PROG up --login').
# Use it from ~/.ssh/config (at the top, before any Host line): Include $SSH_CLIENT_CONFIG
Host $LOGIN_NAME
    HostName $LOGIN_ADDR
    Port $LOGIN_PORT
    User $LOGIN_USER
    IdentityFile $LOGIN_CLIENT_KEY
    IdentitiesOnly yes
    HostKeyAlias $LOGIN_NAME
    UserKnownHostsFile $LOGIN_KNOWN_HOSTS
    StrictHostKeyChecking yes" || true
}

# login_up: the login node, on a running cluster. Idempotent: a second run changes nothing.
login_up() {
    login_install_packages
    login_keys
    login_user
    login_python
    login_accounts
    login_network
    login_name_on_host
    login_start_proxy
    login_start_sshd
    login_client_config
    ssh -F "$SSH_CLIENT_CONFIG" -o BatchMode=yes -o ConnectTimeout=10 "$LOGIN_NAME" true </dev/null \
        || die "ssh -F $SSH_CLIENT_CONFIG $LOGIN_NAME fails (sshd log: $SSHD_LOG)"
    log "login node is up: ssh -F $SSH_CLIENT_CONFIG $LOGIN_NAME ($LOGIN_USER@$LOGIN_ADDR:$LOGIN_PORT)"
}

# login_down: stop sshd and the proxy, remove the namespace (its veth pair goes with it) and the
# client config. Keys, the user and its home stay.
login_down() {
    stop_pid sshd "$SSHD_PID" sshd
    stop_pid login-proxy "$LOGIN_PROXY_PID" python
    if ip netns list | grep -qw "$LOGIN_NS"; then
        kill_netns "$LOGIN_NS"
        ip netns del "$LOGIN_NS"
        log "removed namespace $LOGIN_NS"
    fi
    ip link del "$LOGIN_VETH" >/dev/null 2>&1 || true
    rm -rf "/etc/netns/$LOGIN_NS"
    login_name_on_host clear
    rm -f "$SSH_CLIENT_CONFIG" "$LOGIN_KNOWN_HOSTS"
}

# login_fail: the login node dies: sshd and every session (ssh commands, a `logs --follow`) are
# killed at once; the namespace stays, `heal login` (login_up) starts sshd again.
login_fail() {
    ip netns list | grep -qw "$LOGIN_NS" || die "the login node is not up (sudo $0 login)"
    log "failing the login node: killing sshd and every session in namespace $LOGIN_NS"
    kill_netns "$LOGIN_NS"
    rm -f "$SSHD_PID"
}

# login_status: one line; returns 1 when the login node was started but is not answering.
login_status() {
    if login_running && login_port_open; then
        printf '%-10s up (started by minidelta): ssh -F %s %s (%s@%s:%s, log %s)\n' login \
            "$SSH_CLIENT_CONFIG" "$LOGIN_NAME" "$LOGIN_USER" "$LOGIN_ADDR" "$LOGIN_PORT" "$SSHD_LOG"
    elif started_by_us sshd; then
        printf '%-10s DOWN (sshd log: %s)\n' login "$SSHD_LOG"
        return 1
    else
        printf '%-10s not started (sudo %s login)\n' login "$0"
    fi
}
