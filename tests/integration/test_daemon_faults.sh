#!/usr/bin/env bash
# keywardd under faults: the front killed, the HSM failing (fault module
# wrapping SoftHSM), the audit log unwritable.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
fault_mod=${KW_FAULT_MODULE:-}
[ -n "$fault_mod" ] && [ -f "$fault_mod" ] || kw_skip "fault module not built (KW_FAULT_MODULE)"

kw_setup "
import os
d = os.path.dirname(dst)
c['pkcs11']['env']['KWFAULT_MODULE'] = c['pkcs11']['module']
c['pkcs11']['env']['KWFAULT_FILE'] = d + '/fault'
c['pkcs11']['module'] = '$fault_mod'
"
kw_start
ctx='{"context":{"dataset":"imagenet-2026"}}'
kw_req operator POST /v1/keys '{"name":"datasets"}' >/dev/null
kw_expect 201 "create key"

set_fault() {
	printf '%s\n' "$1" >"$KW_DIR/fault.new"
	mv "$KW_DIR/fault.new" "$KW_DIR/fault"
}

# --- the front dies: the master restarts it, keys are still served
front=$(kw_front_pid)
[ -n "$front" ] || kw_fail "no front process"
kill -KILL "$front"
kw_wait_healthy 10 || kw_fail "not healthy again after the front was killed"
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 200 "datakey after the front was restarted"
[ "$(kw_front_pid)" != "$front" ] || kw_fail "front pid unchanged"

# --- the HSM fails: 503 quickly, health says so within 1 s, recovery
set_fault $'func=*\nrv=CKR_DEVICE_REMOVED'
start=$(date +%s%N)
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 503 "datakey while the HSM is removed"
ms=$((($(date +%s%N) - start) / 1000000))
[ "$ms" -lt 2000 ] || kw_fail "503 took ${ms} ms"
grep -q Retry-After "$KW_DIR/resp" && true
sleep 1
code=$(curl -s -o "$KW_DIR/health" -w '%{http_code}' "http://127.0.0.1:$KW_MPORT/v1/health")
[ "$code" = 503 ] || kw_fail "health during the HSM fault: $code $(cat "$KW_DIR/health")"
grep -q '"hsm":"down"' "$KW_DIR/health" || kw_fail "health does not say the HSM is down: $(cat "$KW_DIR/health")"
for _ in 1 2 3; do
	kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
	kw_expect 503 "datakey while the HSM is still removed"
done
set_fault ""
ok=
for _ in $(seq 50); do
	kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
	[ "$KW_CODE" = 200 ] && ok=1 && break
	sleep 0.1
done
[ -n "$ok" ] || kw_fail "no recovery within 5 s of the HSM fault clearing"
kw_wait_healthy 5 || kw_fail "health not ok after recovery"

# --- token signing fails in the HSM: 503, never a token signed otherwise
tok='{"audience":"gw","scope":["model:llama-70b:infer"]}'
kw_req app POST /v1/tokens "$tok" >/dev/null
kw_expect 200 "a token while the HSM works"
set_fault $'func=C_Sign\nrv=CKR_DEVICE_ERROR'
kw_req app POST /v1/tokens "$tok" >/dev/null
kw_expect 503 "a token while HSM signing fails"
grep -q '"token"' "$KW_DIR/resp" && kw_fail "a token was issued while HSM signing failed"
set_fault ""
ok=
for _ in $(seq 50); do
	kw_req app POST /v1/tokens "$tok" >/dev/null
	[ "$KW_CODE" = 200 ] && ok=1 && break
	sleep 0.1
done
[ -n "$ok" ] || kw_fail "token issuance did not recover after the signing fault"
# a slow HSM answers late, not wrong
set_fault $'func=C_Encrypt\nsleep_ms=300\ntimes=1'
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 200 "datakey on a slow HSM"
set_fault ""
# the RNG fails: no key at all rather than a weak one
set_fault $'func=C_GenerateRandom\nrv=CKR_FUNCTION_FAILED'
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 503 "datakey when the HSM RNG fails"
set_fault ""

# --- the audit log becomes unwritable: fail closed, health says why
if [ "$(id -u)" -eq 0 ] && mkdir -p "$KW_DIR/small" &&
	mount -t tmpfs -o size=256k tmpfs "$KW_DIR/small" 2>/dev/null; then
	trap 'KW_KEEP=1 kw_cleanup; umount "$KW_DIR/small" 2>/dev/null; rm -rf "$KW_DIR"' EXIT
	kill -TERM "$KW_PID"
	wait "$KW_PID" 2>/dev/null || true
	KW_PID=
	"$KW_PY" - "$KW_CFG" "$KW_DIR/small/audit.log" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["audit_log"] = sys.argv[2]
json.dump(c, open(sys.argv[1], "w"))
PY
	kw_start
	kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
	kw_expect 200 "datakey with a small audit volume"
	dd if=/dev/zero of="$KW_DIR/small/fill" bs=4k 2>/dev/null || true
	# The log's last page may still have room for a few records.
	full=
	for _ in $(seq 60); do
		kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
		if [ "$KW_CODE" = 503 ]; then
			full=1
			break
		fi
		kw_expect 200 "datakey while the audit volume fills"
	done
	[ -n "$full" ] || kw_fail "the audit log never filled up"
	grep -q '"plaintext"' "$KW_DIR/resp" && kw_fail "a DEK left without its audit record"
	rm -f "$KW_DIR/small/fill"
	kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
	kw_expect 503 "datakey after space is back (still failed closed until restart)"
	code=$(curl -s -o "$KW_DIR/health" -w '%{http_code}' "http://127.0.0.1:$KW_MPORT/v1/health")
	[ "$code" = 503 ] || kw_fail "health with a broken audit log: $code"
	grep -q '"audit":"failed"' "$KW_DIR/health" || kw_fail "health does not name the audit log: $(cat "$KW_DIR/health")"
else
	echo "SKIP (part): audit-full test needs root to mount a small tmpfs" >&2
fi

echo "PASS: daemon faults"
