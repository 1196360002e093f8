#!/usr/bin/env bash
# keywardd end to end over mTLS with curl: keys, data keys, policy,
# client-certificate checks, HTTP and JSON hygiene, audit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
kw_setup

# --- keywardd -t: a good configuration passes, a broken one is named
"$KW_BIN" -t -c "$KW_CFG" >"$KW_DIR/t.out" 2>&1 || kw_fail "keywardd -t: $(cat "$KW_DIR/t.out")"
sed 's/"workers": 2/"workers": 99/' "$KW_CFG" >"$KW_DIR/bad.json"
if "$KW_BIN" -t -c "$KW_DIR/bad.json" >"$KW_DIR/t.out" 2>&1; then
	kw_fail "keywardd -t accepted workers=99"
fi
grep -q "workers" "$KW_DIR/t.out" || kw_fail "keywardd -t does not name the field: $(cat "$KW_DIR/t.out")"
cp "$KW_ENV/policy.json" "$KW_DIR/policy.bak"
printf '{"version":1,"rules":[{"identity":"x","grants":[{"operations":["decrypt2"],"resources":["*"]}]}]}' >"$KW_ENV/policy.json"
if "$KW_BIN" -t -c "$KW_CFG" >"$KW_DIR/t.out" 2>&1; then
	kw_fail "keywardd -t accepted a broken policy"
fi
grep -q "decrypt2" "$KW_DIR/t.out" || kw_fail "keywardd -t: policy error unclear: $(cat "$KW_DIR/t.out")"
cp "$KW_DIR/policy.bak" "$KW_ENV/policy.json"

kw_start

ctx='{"context":{"dataset":"imagenet-2026","purpose":"train"}}'

# --- keys: the operator creates one, the job may not
kw_req operator POST /v1/keys '{"name":"datasets"}' >/dev/null
kw_expect 201 "create key"
[ "$(kw_json active_version)" = 1 ] || kw_fail "new key: active_version"
kw_req operator POST /v1/keys '{"name":"datasets"}' >/dev/null
kw_expect 409 "create existing key"
kw_req train-job POST /v1/keys '{"name":"other"}' >/dev/null
kw_expect 403 "job creating a key"

# --- datakey -> decrypt round trip
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 200 "datakey"
plain=$(kw_json plaintext)
wrapped=$(kw_json wrapped)
[ "$(kw_json version)" = 1 ] || kw_fail "datakey version"
[ "$(printf %s "$plain" | base64 -d | wc -c)" = 32 ] || kw_fail "DEK is not 32 bytes"
kw_req train-job POST /v1/keys/datasets/decrypt \
	"{\"wrapped\":\"$wrapped\",\"context\":{\"purpose\":\"train\",\"dataset\":\"imagenet-2026\"}}" >/dev/null
kw_expect 200 "decrypt (context in another order)"
[ "$(kw_json plaintext)" = "$plain" ] || kw_fail "decrypted DEK differs"

# wrapped only
kw_req train-job POST '/v1/keys/datasets/datakey?plaintext=false' "$ctx" >/dev/null
kw_expect 200 "datakey plaintext=false"
grep -q '"plaintext"' "$KW_DIR/resp" && kw_fail "plaintext=false returned a plaintext"

# --- wrong context: the job's grant covers imagenet-*, but the wrap was
# bound to imagenet-2026
kw_req train-job POST /v1/keys/datasets/decrypt \
	"{\"wrapped\":\"$wrapped\",\"context\":{\"dataset\":\"imagenet-2027\",\"purpose\":\"train\"}}" >/dev/null
kw_expect 400 "decrypt with another context"
grep -q decrypt_failed "$KW_DIR/resp" || kw_fail "wrong context: error code"
# a context the policy does not grant: denied before any HSM call
kw_req train-job POST /v1/keys/datasets/decrypt \
	"{\"wrapped\":\"$wrapped\",\"context\":{\"dataset\":\"laion\"}}" >/dev/null
kw_expect 403 "decrypt for dataset=laion"
kw_req train-job POST /v1/keys/datasets/datakey '{"context":{}}' >/dev/null
kw_expect 403 "datakey without the required context"

# --- another identity is denied, and learns nothing about existence
kw_req app POST /v1/keys/datasets/decrypt "{\"wrapped\":\"$wrapped\",\"context\":{\"dataset\":\"imagenet-2026\",\"purpose\":\"train\"}}" >/dev/null
kw_expect 403 "app decrypting"
kw_req app POST /v1/keys/nosuchkey/datakey "$ctx" >/dev/null
kw_expect 403 "app on a missing key (same answer as an existing one)"
kw_req operator POST /v1/keys/datasets/decrypt "{\"wrapped\":\"$wrapped\",\"context\":{\"dataset\":\"imagenet-2026\",\"purpose\":\"train\"}}" >/dev/null
kw_expect 403 "operator may administer but not decrypt"

# --- a flipped bit in the wrapped key
bad=$("$KW_PY" -c 'import base64,sys; b=bytearray(base64.b64decode(sys.argv[1])); b[-1]^=1; print(base64.b64encode(bytes(b)).decode())' "$wrapped")
kw_req train-job POST /v1/keys/datasets/decrypt "{\"wrapped\":\"$bad\",\"context\":{\"dataset\":\"imagenet-2026\",\"purpose\":\"train\"}}" >/dev/null
kw_expect 400 "decrypt of a tampered blob"

# --- rotation and rewrap
kw_req operator POST /v1/keys/datasets/rotate '' >/dev/null
kw_expect 200 "rotate"
[ "$(kw_json active_version)" = 2 ] || kw_fail "rotate: active_version"
kw_req train-job POST /v1/keys/datasets/decrypt "{\"wrapped\":\"$wrapped\",\"context\":{\"dataset\":\"imagenet-2026\",\"purpose\":\"train\"}}" >/dev/null
kw_expect 200 "decrypt a v1 blob after rotation"
kw_req operator PATCH /v1/keys/datasets '{"min_decrypt_version":2}' >/dev/null
kw_expect 200 "patch min_decrypt_version"
kw_req train-job POST /v1/keys/datasets/decrypt "{\"wrapped\":\"$wrapped\",\"context\":{\"dataset\":\"imagenet-2026\",\"purpose\":\"train\"}}" >/dev/null
kw_expect 403 "decrypt below min_decrypt_version"
kw_req operator GET /v1/keys/datasets >/dev/null
kw_expect 200 "show key"
kw_req operator GET /v1/keys >/dev/null
kw_expect 200 "list keys"
grep -q '"datasets"' "$KW_DIR/resp" || kw_fail "list: datasets missing"

# --- client certificates
kw_req none POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 401 "no client certificate"
kw_req rogue POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 401 "certificate from a look-alike CA"
# self-signed, expired, not yet valid, serverAuth only, CA:TRUE leaf
"$KW_PY" "$(dirname "$0")/mkcerts.py" "$KW_ENV" "$KW_DIR/bad" >/dev/null ||
	kw_fail "could not make test certificates"
for c in selfsigned expired notyet serveronly caleaf; do
	code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$KW_ENV/ca/ca.pem" \
		--cert "$KW_DIR/bad/$c.pem" --key "$KW_DIR/bad/$c.key" \
		-H 'Content-Type: application/json' --data-binary "$ctx" \
		"https://127.0.0.1:$KW_PORT/v1/keys/datasets/datakey" 2>/dev/null) || code=000
	case $code in
	401 | 000) ;;
	*) kw_fail "certificate '$c' got HTTP $code" ;;
	esac
done
# TLS 1.1 is refused at the handshake
if echo | openssl s_client -connect "127.0.0.1:$KW_PORT" -tls1_1 \
	-cert "$KW_ENV/clients/train-job.pem" -key "$KW_ENV/clients/train-job.key" \
	>"$KW_DIR/tls11.log" 2>&1 && grep -q "Protocol  : TLSv1.1" "$KW_DIR/tls11.log"; then
	kw_fail "TLS 1.1 handshake succeeded"
fi

# --- HTTP and JSON hygiene
big=$("$KW_PY" -c 'print("{\"context\":{\"dataset\":\"" + "a"*9000 + "\"}}")')
kw_req train-job POST /v1/keys/datasets/datakey "$big" >/dev/null
kw_expect 413 "oversized body"
deep=$("$KW_PY" -c 'print("{\"context\":" + "["*50 + "]"*50 + "}")')
kw_req train-job POST /v1/keys/datasets/datakey "$deep" >/dev/null
kw_expect 400 "deep JSON"
kw_req train-job POST /v1/keys/datasets/datakey '{"context":{"dataset":"imagenet-1"},"context":{"dataset":"imagenet-2"}}' >/dev/null
kw_expect 400 "duplicate keys"
kw_req train-job POST /v1/keys/datasets/datakey '{"context":{"dataset":"imagenet-1"},"extra":1}' >/dev/null
kw_expect 400 "unknown field"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$KW_ENV/ca/ca.pem" \
	--cert "$KW_ENV/clients/train-job.pem" --key "$KW_ENV/clients/train-job.key" \
	-H 'Content-Type: text/plain' --data-binary "$ctx" \
	"https://127.0.0.1:$KW_PORT/v1/keys/datasets/datakey")
[ "$code" = 415 ] || kw_fail "wrong content type: HTTP $code"
kw_req train-job GET '/v1/keys/%2e%2e/datakey' >/dev/null
case $KW_CODE in 400 | 404) ;; *) kw_fail "path trick: HTTP $KW_CODE" ;; esac
raw() {
	"$KW_PY" "$(dirname "$0")/rawtls.py" 127.0.0.1 "$KW_PORT" \
		"$KW_ENV/clients/train-job.pem" "$KW_ENV/clients/train-job.key" \
		"$KW_ENV/ca/ca.pem" "$@"
}
status=$(printf 'POST /v1/keys/datasets/datakey HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 57\r\nContent-Length: 5\r\n\r\n%s' "$ctx" | raw)
[ "${status%% *}" = 400 ] || kw_fail "two Content-Length headers: $status"
status=$(printf 'POST /v1/keys/datasets/datakey HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 57\r\nTransfer-Encoding: chunked\r\n\r\n%s' "$ctx" | raw)
[ "${status%% *}" = 400 ] || kw_fail "Content-Length with Transfer-Encoding: $status"
# slow drip: one header line a second; cut after the 2 s header deadline
start=$(date +%s)
status=$(raw --drip 1 --lines 30 || true)
elapsed=$(($(date +%s) - start))
[ "$elapsed" -lt 8 ] || kw_fail "slow header drip held the connection ${elapsed}s"

# --- policy reload: a broken policy on SIGHUP leaves the old one
pol=$("$KW_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["policy"])' "$KW_CFG")
cp "$pol" "$KW_DIR/policy.good"
echo '{"version": 1, "rules": [' >"$pol"
kill -HUP "$KW_PID"
sleep 1
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 200 "datakey after a refused policy reload"
grep -q 'policy refused' "$KW_DIR/daemon.log" || kw_fail "refused policy not logged"
# a valid new policy takes effect: the job loses its grant
"$KW_PY" - "$KW_DIR/policy.good" "$pol" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
p["rules"] = [r for r in p["rules"] if "train-llama" not in r["identity"]]
json.dump(p, open(sys.argv[2], "w"))
PY
kill -HUP "$KW_PID"
sleep 1
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 403 "datakey after the grant was removed"
cp "$KW_DIR/policy.good" "$pol"
kill -HUP "$KW_PID"
sleep 1

# --- concurrency: one channel per keeper worker (workers=2: two API
# channels and the metrics one), one front event loop for both, eight
# keep-alive connections at once, so that requests are in flight on both
# channels together; every request answered and audited exactly once
grep -q 'event=keeper.ready .*workers=3 channels=3' "$KW_DIR/daemon.log" ||
	kw_fail "keeper channels: $(grep keeper.ready "$KW_DIR/daemon.log")"
grep -q 'event=front.ready .*threads=1 channels=2' "$KW_DIR/daemon.log" ||
	kw_fail "front threads: $(grep front.ready "$KW_DIR/daemon.log")"
audit=$(kw_audit)
before=$(wc -l <"$audit")
ok=$(kw_datakeys_concurrently 8 25 "$ctx" "$KW_DIR/conc")
[ "$ok" = 200 ] || kw_fail "concurrent datakeys: $ok of 200 answered 200: $(sort "$KW_DIR"/conc.? | uniq -c)"
after=$(wc -l <"$audit")
[ $((after - before)) = 200 ] || kw_fail "concurrent datakeys: $((after - before)) audit records for 200 requests"

# --- metrics and health on the loopback listener
curl -sf "http://127.0.0.1:$KW_MPORT/metrics" >"$KW_DIR/metrics" || kw_fail "metrics"
grep -q '^keyward_requests_total' "$KW_DIR/metrics" || kw_fail "metrics: requests_total"
grep -q '^keyward_hsm_operation_seconds_bucket' "$KW_DIR/metrics" || kw_fail "metrics: HSM latency"

# --- audit: every request recorded, chain intact, tampering detected
audit=$(kw_audit)
"$KW_BIN" --verify-audit "$audit" >"$KW_DIR/verify.out" || kw_fail "audit verify: $(cat "$KW_DIR/verify.out")"
grep -q '"outcome":"denied"' "$audit" || kw_fail "no denied record"
grep -q '"outcome":"rejected"' "$audit" || kw_fail "no rejected (front) record"
grep -q "no rule for identity\|requires context" "$audit" || kw_fail "denial reasons missing"
grep -qF "$plain" "$audit" "$KW_DIR/daemon.log" && kw_fail "a DEK reached the audit log or the log"
cp "$audit" "$KW_DIR/audit.tampered"
sed -i '3s/"outcome":"[a-z]*"/"outcome":"allowed"/; 3s/"status":[0-9]*/"status":299/' "$KW_DIR/audit.tampered"
if "$KW_BIN" --verify-audit "$KW_DIR/audit.tampered" >"$KW_DIR/verify2.out"; then
	kw_fail "an edited audit line was not detected"
fi
grep -q "line 3" "$KW_DIR/verify2.out" || kw_fail "tamper reported at the wrong line: $(cat "$KW_DIR/verify2.out")"
sed '5d' "$audit" >"$KW_DIR/audit.deleted"
if "$KW_BIN" --verify-audit "$KW_DIR/audit.deleted" >/dev/null; then
	kw_fail "a deleted audit line was not detected"
fi

echo "PASS: daemon API"
