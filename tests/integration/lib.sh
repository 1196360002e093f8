#!/usr/bin/env bash
# Shared by the daemon integration tests: a private environment (token,
# CA, certificates, config, policy) in a temp dir, a keywardd on random
# loopback ports, curl as the client. Source it; call kw_start.
set -euo pipefail

KW_REPO=${KEYWARD_REPO:?KEYWARD_REPO unset}
KW_BIN=${KEYWARDD:-}
KW_HSM=${KEYWARD_HSM:-}
KW_PY=/usr/bin/python3

kw_skip() {
	echo "SKIP: $*" >&2
	exit 77
}

kw_fail() {
	echo "FAIL: $*" >&2
	[ -n "${KW_DIR:-}" ] && [ -f "$KW_DIR/daemon.log" ] &&
		tail -n 40 "$KW_DIR/daemon.log" >&2
	exit 1
}

kw_need() {
	[ -n "$KW_BIN" ] && [ -x "$KW_BIN" ] || kw_skip "keywardd not built (KEYWARDD)"
	[ -n "$KW_HSM" ] && [ -x "$KW_HSM" ] || kw_skip "keyward-hsm not built (KEYWARD_HSM)"
	command -v curl >/dev/null || kw_skip "curl not found (apt-get install curl)"
	[ -x "$KW_PY" ] || kw_skip "$KW_PY not found"
}

# A free TCP port on 127.0.0.1 (bound and released: good enough for tests
# that run a handful of daemons).
kw_port() {
	"$KW_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

KW_PID=
kw_cleanup() {
	if [ -n "$KW_PID" ] && kill -0 "$KW_PID" 2>/dev/null; then
		kill -TERM "$KW_PID" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$KW_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$KW_PID" 2>/dev/null || true
	fi
	# A sanitizer report from any keywardd process fails the test, even
	# one whose process the master restarted without the test noticing.
	local rc=0
	if [ -n "${KW_DIR:-}" ] && [ -f "$KW_DIR/daemon.log" ] &&
		grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$KW_DIR/daemon.log"; then
		echo "FAIL: a sanitizer report in keywardd's log:" >&2
		grep -A20 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$KW_DIR/daemon.log" | head -60 >&2
		rc=1
	fi
	[ -n "${KW_DIR:-}" ] && [ -z "${KW_KEEP:-}" ] && rm -rf "$KW_DIR"
	[ "$rc" = 0 ] || exit 1
	return 0
}

# kw_setup [CONFIG_OVERRIDES_PY]: make the environment and config. The
# optional Python snippet edits the dict `c` before it is written.
kw_setup() {
	KW_DIR=$(mktemp -d /tmp/kwit.XXXXXX)
	trap kw_cleanup EXIT
	KEYWARD_HSM=$KW_HSM "$KW_REPO/scripts/dev-setup" "$KW_DIR/env" \
		>"$KW_DIR/setup.log" 2>&1 || kw_fail "dev-setup: $(tail -5 "$KW_DIR/setup.log")"
	KW_ENV=$KW_DIR/env
	KW_PORT=$(kw_port)
	KW_MPORT=$(kw_port)
	"$KW_PY" - "$KW_ENV/keywardd.json" "$KW_DIR/keywardd.json" "$KW_PORT" "$KW_MPORT" "${1:-}" <<'PY'
import json, sys
src, dst, port, mport, extra = sys.argv[1:6]
c = json.load(open(src))
c["listen"] = "127.0.0.1:" + port
c["metrics_listen"] = "127.0.0.1:" + mport
c["workers"] = 2
c["audit_sync_ms"] = 0
c["limits"] = {"header_timeout_ms": 2000, "max_body_bytes": 8192}
exec(extra)
json.dump(c, open(dst, "w"), indent=1)
PY
	KW_CFG=$KW_DIR/keywardd.json
}

kw_start() {
	local ready i
	ready=$(grep -c 'event=front.ready' "$KW_DIR/daemon.log" 2>/dev/null || true)
	"$KW_BIN" -c "$KW_CFG" >>"$KW_DIR/daemon.log" 2>&1 &
	KW_PID=$!
	kw_wait_healthy 15 || kw_fail "keywardd did not become healthy"
	# Health can answer before the front has logged front.ready (it
	# logs once its seccomp filter is on): wait for this start's line,
	# which tests read.
	for i in $(seq 100); do
		[ "$(grep -c 'event=front.ready' "$KW_DIR/daemon.log" || true)" -gt "${ready:-0}" ] && return 0
		sleep 0.1
	done
	kw_fail "keywardd's front did not log front.ready"
}

# kw_wait_healthy SECONDS: until /v1/health on the metrics port says ok.
kw_wait_healthy() {
	local i
	for i in $(seq $(($1 * 10))); do
		if curl -s -o /dev/null -w '%{http_code}' \
			"http://127.0.0.1:$KW_MPORT/v1/health" 2>/dev/null | grep -q 200; then
			return 0
		fi
		kill -0 "$KW_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# kw_req IDENTITY METHOD PATH [BODY]: prints the body, sets KW_CODE.
# IDENTITY is a file stem under env/clients (train-job, operator, app,
# rogue) or "none" for no client certificate.
kw_req() {
	local who=$1 method=$2 path=$3 body=${4:-} out
	local args=(-s -o "$KW_DIR/resp" -w '%{http_code}' -X "$method"
		--cacert "$KW_ENV/ca/ca.pem" "https://127.0.0.1:$KW_PORT$path")
	if [ "$who" != none ]; then
		args+=(--cert "$KW_ENV/clients/$who.pem" --key "$KW_ENV/clients/$who.key")
	fi
	if [ -n "$body" ]; then
		args+=(-H 'Content-Type: application/json' --data-binary "$body")
	fi
	KW_CODE=$(curl "${args[@]}" 2>/dev/null) || KW_CODE=${KW_CODE:-000}
	cat "$KW_DIR/resp" 2>/dev/null || true
}

# kw_datakeys_concurrently CONNS REQS BODY PREFIX: CONNS keep-alive
# connections at once (curl processes of the training job), each making
# REQS datakeys with BODY; connection i writes its statuses to PREFIX.i
# and answer j to PREFIX.i.j. Prints how many were answered 200.
kw_datakeys_concurrently() {
	local conns=$1 reqs=$2 body=$3 prefix=$4 i j pids=() args
	local url="https://127.0.0.1:$KW_PORT/v1/keys/datasets/datakey"
	for i in $(seq "$conns"); do
		args=()
		for j in $(seq "$reqs"); do
			args+=(-o "$prefix.$i.$j" "$url")
		done
		curl -s -w '%{http_code}\n' --cacert "$KW_ENV/ca/ca.pem" \
			--cert "$KW_ENV/clients/train-job.pem" --key "$KW_ENV/clients/train-job.key" \
			-H 'Content-Type: application/json' --data-binary "$body" \
			"${args[@]}" >"$prefix.$i" 2>&1 &
		pids+=($!)
	done
	wait "${pids[@]}" || true
	for i in $(seq "$conns"); do
		cat "$prefix.$i"
	done | grep -c '^200$' || true
}

# kw_expect CODE DESCRIPTION: the last kw_req's status.
kw_expect() {
	[ "$KW_CODE" = "$1" ] || kw_fail "$2: expected HTTP $1, got $KW_CODE: $(cat "$KW_DIR/resp" 2>/dev/null)"
}

# kw_json FIELD: a top-level field of the last response.
kw_json() {
	"$KW_PY" -c 'import json,sys; v=json.load(open(sys.argv[1])); [v:=v[k] for k in sys.argv[2].split(".")]; print(v)' "$KW_DIR/resp" "$1"
}

kw_children() {
	pgrep -P "$KW_PID" || true
}

# The keeper is the child that has the token's module mapped.
kw_keeper_pid() {
	local p
	for p in $(kw_children); do
		if grep -q "$(basename "$(kw_cfg_module)")" "/proc/$p/maps" 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

kw_front_pid() {
	local k p
	k=$(kw_keeper_pid)
	for p in $(kw_children); do
		[ "$p" != "$k" ] && echo "$p" && return
	done
}

kw_cfg_module() {
	"$KW_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["pkcs11"]["module"])' "$KW_CFG"
}

kw_audit() {
	"$KW_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["audit_log"])' "$KW_CFG"
}
