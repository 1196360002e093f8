#!/usr/bin/env bash
# libkeyward and the keyward CLI end to end against a real keywardd: key
# administration, data keys, a file encrypted by one identity and read
# back by another, denied for a third, a wrong context, tampering, ranges,
# exit codes and messages, audit verification.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
KW_CLI=${KEYWARD_CLI:-}
[ -n "$KW_CLI" ] && [ -x "$KW_CLI" ] || kw_skip "keyward CLI not built (KEYWARD_CLI)"
command -v openssl >/dev/null || kw_skip "openssl not found"
kw_setup

# A second job allowed to decrypt only: eval-job.
leaf() { # leaf NAME SAN
	local n=$1
	openssl ecparam -name prime256v1 -genkey -noout -out "$KW_ENV/clients/$n.key" 2>/dev/null
	chmod 600 "$KW_ENV/clients/$n.key"
	openssl req -new -key "$KW_ENV/clients/$n.key" -subj "/O=keyward development/CN=$n" \
		-out "$KW_DIR/$n.csr" 2>/dev/null
	printf '[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=%s\n' \
		"$2" >"$KW_DIR/$n.ext"
	openssl x509 -req -in "$KW_DIR/$n.csr" -CA "$KW_ENV/ca/ca.pem" -CAkey "$KW_ENV/ca/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 2 -sha256 \
		-extfile "$KW_DIR/$n.ext" -extensions leaf -out "$KW_ENV/clients/$n.pem" 2>/dev/null ||
		kw_fail "cannot issue $n"
}
leaf eval-job URI:spiffe://keyward.dev/job/eval
cat >"$KW_ENV/policy.json" <<'EOF'
{"version": 1, "rules": [
  {"identity": "spiffe://keyward.dev/job/train-llama",
   "grants": [{"operations": ["datakey", "decrypt"], "resources": ["datasets"],
               "context": {"dataset": "imagenet-*"}}]},
  {"identity": "spiffe://keyward.dev/job/eval",
   "grants": [{"operations": ["decrypt"], "resources": ["datasets"],
               "context": {"dataset": "imagenet-*"}}]},
  {"identity": "alice.operators.keyward.dev",
   "grants": [{"operations": ["admin.*"], "resources": ["*"]}]}
]}
EOF
kw_start

# as WHO CMD...: runs the CLI as a client identity; output in $KW_DIR/out,
# stderr in $KW_DIR/err, status in RC.
as() {
	local who=$1
	shift
	RC=0
	KEYWARD_ADDR=127.0.0.1:$KW_PORT KEYWARD_CA=$KW_ENV/ca/ca.pem \
		KEYWARD_CERT=$KW_ENV/clients/$who.pem KEYWARD_KEY=$KW_ENV/clients/$who.key \
		"$KW_CLI" "$@" >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
}
expect_rc() { # expect_rc CODE WHAT
	[ "$RC" = "$1" ] || kw_fail "$2: exit $RC, expected $1; stderr: $(cat "$KW_DIR/err")"
}
err_has() { # err_has TEXT WHAT
	grep -q -- "$1" "$KW_DIR/err" || kw_fail "$2: stderr lacks '$1': $(cat "$KW_DIR/err")"
}
py() { "$KW_PY" "$@"; }
# same_slice FILE OFF LEN OTHER: bytes [OFF, OFF+LEN) of FILE are OTHER.
same_slice() {
	py -c 'import sys; f=open(sys.argv[1],"rb"); f.seek(int(sys.argv[2])); a=f.read(int(sys.argv[3])); sys.exit(a != open(sys.argv[4],"rb").read())' "$@"
}

# --- help needs no server, for every command
for c in "" key datakey encrypt decrypt audit health; do
	RC=0
	env -u KEYWARD_ADDR "$KW_CLI" $c --help >"$KW_DIR/out" 2>&1 || RC=$?
	[ "$RC" = 0 ] || kw_fail "keyward $c --help: exit $RC"
	grep -q Usage "$KW_DIR/out" || kw_fail "keyward $c --help prints no usage"
done
RC=0
"$KW_CLI" frobnicate >/dev/null 2>"$KW_DIR/err" || RC=$?
expect_rc 2 "unknown command"

# --- configuration errors say what to set (exit 3)
RC=0
env -u KEYWARD_ADDR "$KW_CLI" key list >/dev/null 2>"$KW_DIR/err" || RC=$?
expect_rc 3 "no KEYWARD_ADDR"
err_has KEYWARD_ADDR "no KEYWARD_ADDR"
RC=0
KEYWARD_ADDR=127.0.0.1:$KW_PORT "$KW_CLI" key list >/dev/null 2>"$KW_DIR/err" || RC=$?
expect_rc 3 "no credentials"
err_has KEYWARD_CERT "no credentials"

# --- keys (operator)
as operator key create datasets
expect_rc 0 "key create"
grep -q "active version *1" "$KW_DIR/out" || kw_fail "key create output: $(cat "$KW_DIR/out")"
as operator key create datasets
expect_rc 1 "key create twice"
err_has conflict "key create twice"
as train-job key create other
expect_rc 1 "job creating a key"
err_has 403 "job creating a key"
as operator --json key rotate datasets
expect_rc 0 "key rotate"
[ "$(py -c 'import json,sys; print(json.load(open(sys.argv[1]))["active_version"])' "$KW_DIR/out")" = 2 ] ||
	kw_fail "rotate --json: $(cat "$KW_DIR/out")"
as operator key set datasets --min-decrypt-version 1
expect_rc 0 "key set"
as operator key set datasets --version 1
expect_rc 2 "key set --version without --state"
as operator --json key list
expect_rc 0 "key list"
py -c 'import json,sys; k=json.load(open(sys.argv[1]))["keys"]; assert [x["name"] for x in k]==["datasets"], k' \
	"$KW_DIR/out" || kw_fail "key list --json"
as operator key show datasets
expect_rc 0 "key show"
grep -q "decrypt-only" "$KW_DIR/out" || kw_fail "key show: $(cat "$KW_DIR/out")"
as operator key show no-such-key
expect_rc 1 "key show missing"
err_has not_found "key show missing"

# --- data keys
as train-job --json datakey datasets -C dataset=imagenet-1k
expect_rc 0 "datakey"
py - "$KW_DIR/out" <<'PY' || kw_fail "datakey --json: $(cat "$KW_DIR/out")"
import base64, json, sys
d = json.load(open(sys.argv[1]))
assert d["key"] == "datasets" and d["version"] == 2, d
assert len(base64.b64decode(d["plaintext"], validate=True)) == 32
assert base64.b64decode(d["wrapped"], validate=True)[:4] == b"KWDK"
PY
as train-job datakey datasets -C dataset=laion
expect_rc 1 "datakey for another dataset"
err_has forbidden "datakey for another dataset"
as train-job --json datakey datasets -C dataset=imagenet-1k --wrapped-only
expect_rc 0 "datakey --wrapped-only"
grep -q plaintext "$KW_DIR/out" && kw_fail "--wrapped-only printed a plaintext"

# --- files: train-job encrypts, eval-job decrypts, app is refused
head -c 3500000 /dev/urandom >"$KW_DIR/shard.bin"
as train-job encrypt "$KW_DIR/shard.bin" -k datasets -C dataset=imagenet-1k -C split=train \
	--chunk-size 65536 -o "$KW_DIR/shard.kw"
expect_rc 0 "encrypt"
[ "$(stat -c %a "$KW_DIR/shard.kw")" = 600 ] || kw_fail "encrypted file mode $(stat -c %a "$KW_DIR/shard.kw")"
cmp -s "$KW_DIR/shard.bin" "$KW_DIR/shard.kw" && kw_fail "encrypt copied the plaintext"
as eval-job decrypt "$KW_DIR/shard.kw" -o "$KW_DIR/shard.out"
expect_rc 0 "decrypt by another allowed identity"
cmp "$KW_DIR/shard.bin" "$KW_DIR/shard.out" || kw_fail "decrypt: plaintext differs"
as eval-job decrypt "$KW_DIR/shard.kw" --range 1000-200000 -o -
expect_rc 0 "decrypt --range"
same_slice "$KW_DIR/shard.bin" 1000 199001 "$KW_DIR/out" || kw_fail "--range: bytes differ"
as eval-job decrypt "$KW_DIR/shard.kw" --range 3499990- -o -
expect_rc 0 "decrypt --range A-"
[ "$(stat -c %s "$KW_DIR/out")" = 10 ] || kw_fail "--range A-: $(stat -c %s "$KW_DIR/out") bytes"
as eval-job decrypt "$KW_DIR/shard.kw" --range 9999999-
expect_rc 1 "range past the end"
as eval-job encrypt "$KW_DIR/shard.bin" -k datasets -C dataset=imagenet-1k -o "$KW_DIR/x.kw"
expect_rc 1 "eval-job may not make data keys"
[ ! -e "$KW_DIR/x.kw" ] || kw_fail "a refused encrypt left an output file"
as app decrypt "$KW_DIR/shard.kw" -o "$KW_DIR/app.out"
expect_rc 1 "a third identity decrypting"
err_has forbidden "a third identity decrypting"
[ ! -e "$KW_DIR/app.out" ] || kw_fail "a refused decrypt left an output file"
ls "$KW_DIR" | grep -q '^\.app\.out' && kw_fail "a refused decrypt left a temporary file"

# A wrong context: the file's header edited to claim another dataset
# (same length): the server cannot unwrap the DEK for it.
py - "$KW_DIR/shard.kw" "$KW_DIR/ctx.kw" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
i = b.index(b"imagenet-1k")
open(sys.argv[2], "wb").write(b[:i] + b"imagenet-2k" + b[i + 11:])
PY
as eval-job decrypt "$KW_DIR/ctx.kw" -o "$KW_DIR/ctx.out"
expect_rc 4 "a file whose context was edited"
[ ! -e "$KW_DIR/ctx.out" ] || kw_fail "a failed decrypt left an output file"

# A flipped byte in the last chunk: detected, nothing left behind.
py - "$KW_DIR/shard.kw" "$KW_DIR/flip.kw" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[-20] ^= 1
open(sys.argv[2], "wb").write(b)
PY
as eval-job decrypt "$KW_DIR/flip.kw" -o "$KW_DIR/flip.out"
expect_rc 4 "a tampered chunk"
err_has integrity "a tampered chunk"
[ ! -e "$KW_DIR/flip.out" ] || kw_fail "a tampered file left an output file"
# Its first chunks still decrypt through a range that does not touch it.
as eval-job decrypt "$KW_DIR/flip.kw" --range 0-65535 -o -
expect_rc 0 "a range before the tampered chunk"
same_slice "$KW_DIR/shard.bin" 0 65536 "$KW_DIR/out" || kw_fail "range before the tampered chunk"

# Truncated by one byte: detected when opened.
head -c -1 "$KW_DIR/shard.kw" >"$KW_DIR/trunc.kw"
as eval-job decrypt "$KW_DIR/trunc.kw" --range 0-10 -o -
expect_rc 4 "a truncated file"
# Not an encrypted file at all.
as eval-job decrypt "$KW_DIR/shard.bin" -o "$KW_DIR/nope.out"
expect_rc 1 "a plain file"
err_has "not an encrypted keyward file" "a plain file"

# --- empty file round trip, default output names
: >"$KW_DIR/empty"
as train-job encrypt "$KW_DIR/empty" -k datasets -C dataset=imagenet-x
expect_rc 0 "encrypt an empty file"
rm "$KW_DIR/empty"
as train-job decrypt "$KW_DIR/empty.kw"
expect_rc 0 "decrypt an empty file"
[ -f "$KW_DIR/empty" ] && [ ! -s "$KW_DIR/empty" ] || kw_fail "empty file round trip"

# --- health and audit
as train-job --json health
expect_rc 0 "health"
py -c 'import json,sys; assert json.load(open(sys.argv[1]))["status"]=="ok"' "$KW_DIR/out" ||
	kw_fail "health: $(cat "$KW_DIR/out")"
AUDIT=$(kw_audit)
RC=0
"$KW_CLI" audit verify "$AUDIT" >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
expect_rc 0 "audit verify"
grep -q "chain intact" "$KW_DIR/out" || kw_fail "audit verify: $(cat "$KW_DIR/out")"
grep -q '"op":"decrypt".*"outcome":"denied"' "$AUDIT" || kw_fail "the denied decrypt is not audited"
sed '3s/"op":"/"op":"x/' "$AUDIT" >"$KW_DIR/audit.bad"
RC=0
"$KW_CLI" audit verify "$KW_DIR/audit.bad" >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
expect_rc 4 "audit verify of an edited log"
err_has "line 3" "audit verify of an edited log"

# --- the server unreachable: exit 3, after bounded retries
closed=$(kw_port)
start=$(date +%s%N)
RC=0
KEYWARD_ADDR=127.0.0.1:$closed KEYWARD_CA=$KW_ENV/ca/ca.pem \
	KEYWARD_CERT=$KW_ENV/clients/train-job.pem KEYWARD_KEY=$KW_ENV/clients/train-job.key \
	"$KW_CLI" key list >/dev/null 2>"$KW_DIR/err" || RC=$?
elapsed=$((($(date +%s%N) - start) / 1000000))
expect_rc 3 "server unreachable"
err_has "cannot reach" "server unreachable"
((elapsed < 8000)) || kw_fail "unreachable server: gave up only after $elapsed ms"

# --- no secret in the daemon's log or the audit log
grep -q "$(head -c 16 "$KW_DIR/shard.bin" | od -An -tx1 | tr -d ' \n')" "$KW_DIR/daemon.log" "$AUDIT" &&
	kw_fail "file bytes in a log"
echo "PASS"
