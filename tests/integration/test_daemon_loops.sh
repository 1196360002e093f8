#!/usr/bin/env bash
# keywardd's front with two event loops (workers=4): requests in flight
# on all four channels from both loops, each answered and audited once,
# no answer given to the wrong connection; the per-address connection
# limit holds across the loops' listeners; a stalled keeper gives 503 at
# the deadline and its late answers are dropped.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
kw_setup 'c["workers"] = 4; c["limits"]["per_ip_connections"] = 3'
kw_start

grep -q 'event=front.ready .*threads=2 channels=4' "$KW_DIR/daemon.log" ||
	kw_fail "front loops: $(grep front.ready "$KW_DIR/daemon.log")"

kw_req operator POST /v1/keys '{"name":"datasets"}' >/dev/null
kw_expect 201 "create key"

# --- three keep-alive connections (the per-address limit), 40 datakeys
# each, then every one decrypted on the same connections: a plaintext
# that came back to the wrong request would not match its wrapped key.
ctx='{"context":{"dataset":"imagenet-2026","purpose":"train"}}'
audit=$(kw_audit)
before=$(wc -l <"$audit")
ok=$(kw_datakeys_concurrently 3 40 "$ctx" "$KW_DIR/dk")
[ "$ok" = 120 ] || kw_fail "datakeys over two loops: $ok of 120 answered 200: $(sort "$KW_DIR"/dk.[123] | uniq -c)"

"$KW_PY" - "$KW_DIR" "$ctx" <<'PY' || kw_fail "a decrypt did not give back its datakey's plaintext"
import json, sys
d, ctx = sys.argv[1], json.loads(sys.argv[2])
for i in (1, 2, 3):
    with open(f"{d}/dec.{i}.req", "w") as f, open(f"{d}/dec.{i}.want", "w") as w:
        for j in range(1, 41):
            dk = json.load(open(f"{d}/dk.{i}.{j}"))
            body = dict(ctx, wrapped=dk["wrapped"])
            json.dump(body, open(f"{d}/dec.{i}.{j}.json", "w"))
            w.write(dk["plaintext"] + "\n")
PY
durl="https://127.0.0.1:$KW_PORT/v1/keys/datasets/decrypt"
pids=()
for i in 1 2 3; do
	args=()
	for j in $(seq 40); do
		args+=(-o "$KW_DIR/dec.$i.$j.out" --data-binary "@$KW_DIR/dec.$i.$j.json" "$durl")
		[ "$j" = 40 ] || args+=(--next --cacert "$KW_ENV/ca/ca.pem"
			--cert "$KW_ENV/clients/train-job.pem" --key "$KW_ENV/clients/train-job.key"
			-H 'Content-Type: application/json' -s -w '%{http_code}\n')
	done
	curl -s -w '%{http_code}\n' --cacert "$KW_ENV/ca/ca.pem" \
		--cert "$KW_ENV/clients/train-job.pem" --key "$KW_ENV/clients/train-job.key" \
		-H 'Content-Type: application/json' "${args[@]}" >"$KW_DIR/dec.$i" 2>&1 &
	pids+=($!)
done
wait "${pids[@]}" || true
ok=$(cat "$KW_DIR"/dec.[123] | grep -c '^200$' || true)
[ "$ok" = 120 ] || kw_fail "decrypts over two loops: $ok of 120 answered 200: $(sort "$KW_DIR"/dec.[123] | uniq -c)"
"$KW_PY" - "$KW_DIR" <<'PY' || kw_fail "a decrypt answered with another request's key"
import json, sys
d = sys.argv[1]
for i in (1, 2, 3):
    want = open(f"{d}/dec.{i}.want").read().split()
    for j in range(1, 41):
        got = json.load(open(f"{d}/dec.{i}.{j}.out"))["plaintext"]
        if got != want[j - 1]:
            sys.exit(f"connection {i} request {j}: wrong plaintext")
PY
after=$(wc -l <"$audit")
[ $((after - before)) = 240 ] || kw_fail "$((after - before)) audit records for 240 requests"

# --- per address: three connections held open, a fourth is refused,
# and once one closes a new one is served
# (their input: a FIFO this shell keeps open, so that they stay idle)
mkfifo "$KW_DIR/idle"
exec 7<>"$KW_DIR/idle"
held=()
for i in 1 2 3; do
	openssl s_client -quiet -connect "127.0.0.1:$KW_PORT" \
		-CAfile "$KW_ENV/ca/ca.pem" -cert "$KW_ENV/clients/train-job.pem" \
		-key "$KW_ENV/clients/train-job.key" <"$KW_DIR/idle" >/dev/null 2>&1 &
	held+=($!)
done
sleep 1
kw_req train-job GET /v1/health >/dev/null
[ "$KW_CODE" = 000 ] || kw_fail "a fourth connection from one address was served (HTTP $KW_CODE)"
kill "${held[0]}" 2>/dev/null || true
wait "${held[0]}" 2>/dev/null || true
sleep 0.5
kw_req train-job GET /v1/health >/dev/null
kw_expect 200 "health once a held connection closed"
for p in "${held[@]:1}"; do
	kill "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
done
exec 7>&-

# --- a keeper that stops answering: 503 at the deadline (5 s; health
# 1 s), and once it goes on, its late answers are dropped and the same
# front serves again (an answer taken for another request's would be a
# protocol error and restart the front)
keeper=$(kw_keeper_pid)
front=$(kw_front_pid)
[ -n "$keeper" ] && [ -n "$front" ] || kw_fail "keeper or front not found"
kill -STOP "$keeper"
t0=$(date +%s%N)
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
ms=$((($(date +%s%N) - t0) / 1000000))
code=$KW_CODE
kw_req train-job GET /v1/health >/dev/null
hcode=$KW_CODE
kill -CONT "$keeper"
[ "$code" = 503 ] || kw_fail "datakey while the keeper is stopped: HTTP $code"
[ "$ms" -ge 4500 ] && [ "$ms" -lt 8000 ] || kw_fail "the 503 came after ${ms} ms, not at the 5 s deadline"
[ "$hcode" = 503 ] || kw_fail "health while the keeper is stopped: HTTP $hcode"
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 200 "datakey once the keeper goes on"
[ "$(kw_front_pid)" = "$front" ] || kw_fail "the front was restarted after the keeper's late answers"
grep -q 'event=front.ipc_timeout' "$KW_DIR/daemon.log" || kw_fail "no front.ipc_timeout logged"

"$KW_BIN" --verify-audit "$audit" >"$KW_DIR/verify.out" || kw_fail "audit verify: $(cat "$KW_DIR/verify.out")"
echo "PASS: daemon loops"
