#!/usr/bin/env bash
# kill -9 of the keeper at random points of a rotation loop: after each
# restart no acknowledged key version is lost, exactly one version is
# active, and data wrapped before the crash still unwraps.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
runs=${KW_KILL_RUNS:-20}
kw_setup
kw_start
ctx='{"context":{"dataset":"imagenet-2026"}}'
kw_req operator POST /v1/keys '{"name":"datasets"}' >/dev/null
kw_expect 201 "create key"
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 200 "datakey"
wrapped=$(kw_json wrapped)
plain=$(kw_json plaintext)

rotate_loop() {
	while :; do
		code=$(curl -s -o "$KW_DIR/rot.resp" -w '%{http_code}' -X POST \
			--cacert "$KW_ENV/ca/ca.pem" --cert "$KW_ENV/clients/operator.pem" \
			--key "$KW_ENV/clients/operator.key" \
			"https://127.0.0.1:$KW_PORT/v1/keys/datasets/rotate" 2>/dev/null) || code=000
		if [ "$code" = 200 ]; then
			"$KW_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["active_version"])' \
				"$KW_DIR/rot.resp" >>"$KW_DIR/acked" 2>/dev/null || true
		fi
	done
}

: >"$KW_DIR/acked"
for run in $(seq "$runs"); do
	rotate_loop &
	loop=$!
	sleep "0.$((RANDOM % 400 + 20))"
	keeper=$(kw_keeper_pid)
	[ -n "$keeper" ] && kill -KILL "$keeper" 2>/dev/null || true
	kill "$loop" 2>/dev/null || true
	wait "$loop" 2>/dev/null || true
	kw_wait_healthy 15 || kw_fail "run $run: not healthy after the keeper was killed"
	kw_req operator GET /v1/keys/datasets >/dev/null
	kw_expect 200 "run $run: show key"
	"$KW_PY" - "$KW_DIR/resp" "$KW_DIR/acked" "$run" <<'PY' || kw_fail "run $run: key state wrong: $(cat "$KW_DIR/resp")"
import json, sys
key = json.load(open(sys.argv[1]))
acked = {int(l) for l in open(sys.argv[2]) if l.strip()}
states = {v["version"]: v["state"] for v in key["versions"]}
active = [v for v, s in states.items() if s == "active"]
if len(active) != 1 or active[0] != key["active_version"]:
    sys.exit("run %s: active versions %r" % (sys.argv[3], active))
lost = sorted(v for v in acked if v not in states)
if lost:
    sys.exit("run %s: acknowledged versions lost: %r" % (sys.argv[3], lost))
if any(s not in ("active", "decrypt-only") for s in states.values()):
    sys.exit("run %s: unexpected states %r" % (sys.argv[3], states))
PY
	kw_req train-job POST /v1/keys/datasets/decrypt "{\"wrapped\":\"$wrapped\",\"context\":{\"dataset\":\"imagenet-2026\"}}" >/dev/null
	kw_expect 200 "run $run: decrypt of a version-1 blob"
	[ "$(kw_json plaintext)" = "$plain" ] || kw_fail "run $run: DEK changed"
done
n=$(wc -l <"$KW_DIR/acked")
echo "PASS: $runs keeper kills during rotations, $n rotations acknowledged, none lost"
