#!/usr/bin/env bash
# Checks, and with --apply raises, the limits a Crier node needs for CONNS concurrent connections
# (default 1,000,000). See docs/performance.md for what each setting is for.
#
#   scripts/limits.sh [--apply] [CONNS]
#
# Without --apply it only reports and exits 1 when a limit is too low. With --apply (as root) it
# writes the kernel settings with sysctl and raises this shell's file limit; for a service, also
# set LimitNOFILE= in its systemd unit (printed below).
set -euo pipefail

apply=0
if [[ ${1:-} == --apply ]]; then apply=1; shift; fi
conns=${1:-1000000}
# Headroom for the listener, store, logs and connections being accepted or closed.
files=$((conns + conns / 10 + 1024))

low=0
check() { # name current wanted how-to-raise
	local name=$1 cur=$2 want=$3 how=$4
	if ((cur >= want)); then
		printf 'ok    %-40s %12s (need %s)\n' "$name" "$cur" "$want"
	elif ((apply)); then
		printf 'raise %-40s %12s -> %s\n' "$name" "$cur" "$want"
		eval "$how"
	else
		printf 'LOW   %-40s %12s (need %s): %s\n' "$name" "$cur" "$want" "$how"
		low=1
	fi
}
sysctl_of() { cat "/proc/sys/${1//.//}"; }

check fs.nr_open "$(sysctl_of fs.nr_open)" "$files" "sysctl -w fs.nr_open=$files"
check fs.file-max "$(sysctl_of fs.file-max)" "$files" "sysctl -w fs.file-max=$files"
check "ulimit -Hn (this shell)" "$(ulimit -Hn)" "$files" "ulimit -Hn $files"
check "ulimit -Sn (this shell)" "$(ulimit -Sn)" "$files" "ulimit -Sn $files"
# Accept queues: a mass reconnect (after a restart or a network blip) arrives all at once.
backlog=$((conns >= 100000 ? 65535 : 1024))
check net.core.somaxconn "$(sysctl_of net.core.somaxconn)" "$backlog" "sysctl -w net.core.somaxconn=$backlog"
check net.ipv4.tcp_max_syn_backlog "$(sysctl_of net.ipv4.tcp_max_syn_backlog)" "$backlog" \
	"sysctl -w net.ipv4.tcp_max_syn_backlog=$backlog"
# Pages of socket memory before TCP starts to squeeze buffers (third field: the hard ceiling).
# An idle connection holds almost none; a busy one a few pages.
tcp_mem_max=$(awk '{print $3}' /proc/sys/net/ipv4/tcp_mem)
want_pages=$((conns * 4))
check "net.ipv4.tcp_mem (max pages)" "$tcp_mem_max" "$want_pages" \
	"sysctl -w net.ipv4.tcp_mem='$((want_pages / 2)) $((want_pages * 3 / 4)) $want_pages'"
if [[ -r /proc/sys/net/netfilter/nf_conntrack_max ]]; then
	check net.netfilter.nf_conntrack_max "$(sysctl_of net.netfilter.nf_conntrack_max)" "$files" \
		"sysctl -w net.netfilter.nf_conntrack_max=$files"
fi

echo
echo "systemd unit for crier: LimitNOFILE=$files"
echo "load generators on the same host: spread source addresses (crier bench --source-ips N, about one per 50,000 connections)"
if ((low)); then
	echo "some limits are too low for $conns connections; rerun with --apply as root" >&2
	exit 1
fi
