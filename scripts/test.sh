#!/usr/bin/env bash
# Runs every test of Crier, installing first what the tests need (Debian packages, npm packages).
# Usage: scripts/test.sh            (the README's test command; .ci/run calls it)
#        FUZZTIME=30s scripts/test.sh   (longer fuzzing of every fuzz target; a duration or a count like 10000x)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

# Debian packages, each installed only when its command is missing.
missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v curl >/dev/null || missing+=(curl)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
	step "apt-get install ${missing[*]}"
	if [[ $(id -u) -ne 0 ]]; then sudo=sudo; else sudo=; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

step "npm packages: third-party clients (test/node) and playwright-core (test/browser)"
for dir in test/node test/browser; do
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done

step "go vet"
go vet ./...

step "go test -race (every package; the node and browser tests are required here, not skipped)"
export CRIER_REQUIRE_NODE=1 CRIER_REQUIRE_BROWSER=1
go test -race -count=1 -timeout 15m ./...

step "fuzz every fuzz target briefly (seed corpus plus ${FUZZTIME:=10000x} new inputs)"
# A count rather than a duration by default: a duration's deadline can end a run that is
# mid-input, which Go reports as a failure ("context deadline exceeded") with no failing input.
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "$pkg $target"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"
	done
done

step "smoke load test: crier bench, 1,000 subscribers (fails only on lost, duplicated or reordered messages)"
bin=$(mktemp -d)
trap 'kill "${server_pid:-}" 2>/dev/null || true; rm -rf "$bin"' EXIT
go build -o "$bin/crier" ./cmd/crier
"$bin/crier" serve --memory --listen 127.0.0.1:18931 --log-level warn &
server_pid=$!
for _ in $(seq 50); do curl -fsS http://127.0.0.1:18931/healthz >/dev/null 2>&1 && break; sleep 0.1; done
for transport in ws sse; do
	"$bin/crier" bench --server http://127.0.0.1:18931 --transport "$transport" --subscribers 1000 \
		--channels 10 --rate 200 --duration 3s --warmup 0s --pid "$server_pid" --floor 2s
done
kill -TERM "$server_pid"
wait "$server_pid"

step "all tests passed"
