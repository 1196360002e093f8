#!/usr/bin/env bash
# The Python binding (client/python) against a real keywardd: data keys,
# denials, files encrypted by one identity and read with random access by
# another, tampering, keep-alive, the example script. The cases are in
# tests/python/test_keyward.py (unittest, /usr/bin/python3).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
KW_LIB=${KEYWARD_LIB:-}
[ -n "$KW_LIB" ] && [ -f "$KW_LIB" ] || kw_skip "libkeyward not built (KEYWARD_LIB)"
command -v openssl >/dev/null || kw_skip "openssl not found"
kw_setup

# A second job allowed to unwrap only: eval-job.
n=eval-job
openssl ecparam -name prime256v1 -genkey -noout -out "$KW_ENV/clients/$n.key" 2>/dev/null
chmod 600 "$KW_ENV/clients/$n.key"
openssl req -new -key "$KW_ENV/clients/$n.key" -subj "/O=keyward development/CN=$n" \
	-out "$KW_DIR/$n.csr" 2>/dev/null
printf '[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://keyward.dev/job/eval\n' \
	>"$KW_DIR/$n.ext"
openssl x509 -req -in "$KW_DIR/$n.csr" -CA "$KW_ENV/ca/ca.pem" -CAkey "$KW_ENV/ca/ca.key" \
	-set_serial "0x$(openssl rand -hex 16)" -days 2 -sha256 \
	-extfile "$KW_DIR/$n.ext" -extensions leaf -out "$KW_ENV/clients/$n.pem" 2>/dev/null ||
	kw_fail "cannot issue $n"
cat >"$KW_ENV/policy.json" <<'JSON'
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
JSON
kw_start
mkdir -m 700 "$KW_DIR/py"

# The binding from the source tree, the library from the build; no
# credentials in the environment (each test picks its identity).
# An ASan+UBSan libkeyward needs the sanitizer runtime loaded before the
# interpreter; Python's own allocations at exit are not ours to judge.
SAN_ENV=()
if [ "${KW_SANITIZED:-0}" = 1 ]; then
	asan=$(${CC:-cc} -print-file-name=libasan.so)
	ubsan=$(${CC:-cc} -print-file-name=libubsan.so)
	[ -f "$asan" ] || kw_skip "sanitized build, but no libasan.so to preload ($asan)"
	SAN_ENV=(LD_PRELOAD="$asan${ubsan:+:$ubsan}" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1)
fi
RC=0
env -u KEYWARD_CERT -u KEYWARD_KEY -u KEYWARD_TOKEN "${SAN_ENV[@]}" \
	PYTHONPATH="$KW_REPO/client/python" PYTHONDONTWRITEBYTECODE=1 \
	KEYWARD_LIB="$KW_LIB" KEYWARD_ADDR="127.0.0.1:$KW_PORT" KEYWARD_CA="$KW_ENV/ca/ca.pem" \
	KW_TEST_ENV="$KW_ENV" KW_TEST_DIR="$KW_DIR/py" KW_TEST_AUDIT="$(kw_audit)" \
	KW_TEST_EXAMPLE="$KW_REPO/client/python/examples/read_encrypted.py" \
	"$KW_PY" "$KW_REPO/tests/python/test_keyward.py" >"$KW_DIR/unittest.log" 2>&1 || RC=$?
cat "$KW_DIR/unittest.log"
[ "$RC" = 0 ] || kw_fail "tests/python/test_keyward.py: exit $RC"
grep -q '^OK' "$KW_DIR/unittest.log" || kw_fail "unittest did not report OK"
echo "PASS"
