#!/usr/bin/env bash
# Runs the scenarios of docs/performance.md, each three times against a fresh server, and prints
# one JSON line per run into perf-results/ plus the medians. Needs about 15 minutes on 2 cores.
#
#   scripts/perf.sh [SCENARIO...]      scenarios: floor publish fanout1 fanout50 throughput idle
set -euo pipefail
cd "$(dirname "$0")/.."
out=perf-results
mkdir -p "$out"
bin=$(mktemp -d)/crier
go build -o "$bin" ./cmd/crier
port=18930
url=http://127.0.0.1:$port
runs=${RUNS:-3}
dur=${DURATION:-20s}

server() { # starts a fresh memory-only server, sets $pid
	"$bin" serve --memory --listen "127.0.0.1:$port" --log-level warn "$@" &
	pid=$!
	for _ in $(seq 50); do curl -fsS "$url/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
	echo "server did not start" >&2
	exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" || true; }

scenario() { # name, then crier bench flags
	local name=$1
	shift
	: >"$out/$name.jsonl"
	for i in $(seq "$runs"); do
		server
		"$bin" bench --server "$url" --pid "$pid" --json "$@" | tee -a "$out/$name.jsonl"
		stop
	done
}

median() { # file, jq expression
	jq -s "[.[] | $2] | sort | .[length/2|floor]" "$1"
}

(($#)) || set -- floor publish fanout1 fanout50 throughput idle
for s in "$@"; do
	case $s in
	floor)
		: >"$out/floor.jsonl"
		for i in $(seq "$runs"); do "$bin" bench floor --json | tee -a "$out/floor.jsonl"; done
		echo "floor µs/write: $(median "$out/floor.jsonl" .floor_us_per_write)"
		;;
	publish)
		# The publish path alone: no subscriber, memory store, as fast as accepted, 8 publishers
		# (a publisher owns channels, so 8 channels).
		scenario publish --subscribers 0 --channels 8 --rate 0 --publishers 8 --duration "$dur" --warmup 2s
		echo "publish: server µs/publish $(median "$out/publish.jsonl" .server_cpu_us_per_publish)," \
			"publishes/s $(median "$out/publish.jsonl" .publishes_per_s)"
		;;
	fanout1 | fanout50)
		# One channel, 10,000 subscribers; 1 publish/s (one message at a time) or 50/s (queued).
		rate=${s#fanout}
		for t in ws sse; do
			scenario "$s-$t" --transport "$t" --subscribers 10000 --channels 1 --rate "$rate" \
				--duration "$dur" --warmup 2s --source-ips 2 --floor "$dur"
			echo "$s $t: server s/1M $(median "$out/$s-$t.jsonl" .server_cpu_s_per_million)," \
				"floor of the run $(median "$out/$s-$t.jsonl" .floor.writer_us_per_write) µs," \
				"server/floor $(median "$out/$s-$t.jsonl" .server_vs_floor)," \
				"p50 $(median "$out/$s-$t.jsonl" .latency_p50_ms) ms, p99 $(median "$out/$s-$t.jsonl" .latency_p99_ms) ms," \
				"generator µs/delivery $(median "$out/$s-$t.jsonl" .bench_cpu_us_per_delivery)," \
				"server in user space $(median "$out/$s-$t.jsonl" .server_cpu_user_share)"
		done
		;;
	throughput)
		# 1,000 channels of 10 subscribers, publishing over HTTP as fast as accepted.
		for t in ws sse; do
			scenario "throughput-$t" --transport "$t" --subscribers 10000 --channels 1000 --rate 0 \
				--publishers 8 --duration "$dur" --warmup 2s --source-ips 2 --floor "$dur"
			echo "throughput $t: server s/1M $(median "$out/throughput-$t.jsonl" .server_cpu_s_per_million)," \
				"floor of the run $(median "$out/throughput-$t.jsonl" .floor.writer_us_per_write) µs," \
				"deliveries/s $(median "$out/throughput-$t.jsonl" .deliveries_per_s)," \
				"p99 $(median "$out/throughput-$t.jsonl" .latency_p99_ms) ms," \
				"server in user space $(median "$out/throughput-$t.jsonl" .server_cpu_user_share)"
		done
		;;
	idle)
		for t in ws sse; do
			scenario "idle-$t" --transport "$t" --subscribers 19000 --channels 100 --idle "${IDLE:-5m}" --source-ips 4
			echo "idle $t: KiB/conn $(median "$out/idle-$t.jsonl" .server_rss_per_conn_kib)," \
				"disconnected $(median "$out/idle-$t.jsonl" .disconnected)"
		done
		;;
	*) echo "unknown scenario $s" >&2; exit 2 ;;
	esac
done
