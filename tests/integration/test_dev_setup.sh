#!/usr/bin/env bash
# Integration test for scripts/dev-setup.
#
# Environment:
#   KEYWARD_HSM   path to the keyward-hsm tool (required; exit 77 = skip if
#                 it is not executable)
#   KEYWARD_REPO  repository root (default: two levels above this script)
#
# Prints "FAIL: <what>" for each failed assertion and exits 1, or prints
# "PASS: dev-setup" and exits 0.
set -euo pipefail

KEYWARD_REPO=${KEYWARD_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PYTHON=/usr/bin/python3

if [[ -z ${KEYWARD_HSM:-} ]]; then
    echo "SKIP: dev-setup (KEYWARD_HSM is not set)" >&2
    exit 77
fi
if [[ ! -x $KEYWARD_HSM ]]; then
    echo "SKIP: dev-setup (KEYWARD_HSM=$KEYWARD_HSM is not executable)" >&2
    exit 77
fi
export KEYWARD_HSM

SCRIPT=$KEYWARD_REPO/scripts/dev-setup
if [[ ! -x $SCRIPT ]]; then
    echo "FAIL: $SCRIPT is missing or not executable"
    exit 1
fi
command -v openssl >/dev/null 2>&1 || { echo "SKIP: dev-setup (openssl not found)" >&2; exit 77; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keyward-dev-setup-test.XXXXXX")
cleanup() { rm -rf -- "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

DIR=$WORK/env # not created beforehand: dev-setup must create it
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# check DESCRIPTION COMMAND...: the command must succeed.
check() {
    local what=$1
    shift
    if ! "$@" >/dev/null 2>&1; then
        fail "$what"
    fi
}

# check_not DESCRIPTION COMMAND...: the command must fail.
check_not() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then
        fail "$what"
    fi
}

mode_is() { [[ $(stat -c %a "$2") == "$1" ]]; }

# Checksums (and modes) of every file in DIR except the token store.
snapshot() {
    (cd "$DIR" && find . -path ./tokens -prune -o -type f -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum)
    (cd "$DIR" && find . -path ./tokens -prune -o -print0 | LC_ALL=C sort -z \
        | xargs -0 stat -c '%a %n')
}

# ------------------------------------------------------------ first run
rc=0
"$SCRIPT" "$DIR" >"$WORK/out1" 2>"$WORK/err1" || rc=$?
if ((rc != 0)); then
    echo "FAIL: first run of dev-setup exited $rc"
    sed 's/^/  | /' "$WORK/err1"
    exit 1
fi

# ------------------------------------------------------------ files exist
files=(
    softhsm2.conf pin so-pin
    ca/ca.key ca/ca.pem
    tls/server.key tls/server.pem tls/ca.pem
    clients/train-job.key clients/train-job.pem
    clients/operator.key clients/operator.pem
    clients/app.key clients/app.pem
    rogue-ca/ca.key rogue-ca/ca.pem
    clients/rogue.key clients/rogue.pem
    keywardd.json policy.json
)
missing=0
for f in "${files[@]}"; do
    if [[ ! -f $DIR/$f ]]; then
        fail "$DIR/$f does not exist"
        missing=1
    fi
done
if [[ ! -d $DIR/tokens ]]; then
    fail "$DIR/tokens does not exist"
    missing=1
fi
if ((missing)); then
    echo "FAIL: dev-setup (files missing, not checking further)"
    exit 1
fi

# ------------------------------------------------------------ modes
for f in pin so-pin ca/ca.key tls/server.key clients/train-job.key \
    clients/operator.key clients/app.key rogue-ca/ca.key clients/rogue.key; do
    check "$f has mode 0600 (is $(stat -c %a "$DIR/$f"))" mode_is 600 "$DIR/$f"
done
check "tokens/ has mode 0700 (is $(stat -c %a "$DIR/tokens"))" mode_is 700 "$DIR/tokens"

# ------------------------------------------------------------ PINs
pin_ok() { # 32 lowercase hex characters followed by exactly one newline
    local line
    IFS= read -r line <"$1" || return 1
    [[ $line =~ ^[0-9a-f]{32}$ ]] && [[ $(wc -c <"$1") -eq 33 ]]
}
check "pin holds 32 hex characters and a newline" pin_ok "$DIR/pin"
check "so-pin holds 32 hex characters and a newline" pin_ok "$DIR/so-pin"
check_not "pin and so-pin are different" cmp -s "$DIR/pin" "$DIR/so-pin"

# The PIN values (read from the files with grep -f, so they never appear on
# a command line here either) must not show up in anything dev-setup printed.
check_not "the user PIN appears in the output of dev-setup" \
    grep -qF -f "$DIR/pin" "$WORK/out1" "$WORK/err1"
check_not "the SO PIN appears in the output of dev-setup" \
    grep -qF -f "$DIR/so-pin" "$WORK/out1" "$WORK/err1"

# ------------------------------------------------------------ PKI
CA=$DIR/ca/ca.pem
check "server.pem verifies against ca/ca.pem" openssl verify -CAfile "$CA" "$DIR/tls/server.pem"
check "server.pem verifies for purpose sslserver" \
    openssl verify -CAfile "$CA" -purpose sslserver "$DIR/tls/server.pem"
for c in train-job operator app; do
    check "clients/$c.pem verifies against ca/ca.pem" \
        openssl verify -CAfile "$CA" "$DIR/clients/$c.pem"
    check "clients/$c.pem verifies for purpose sslclient" \
        openssl verify -CAfile "$CA" -purpose sslclient "$DIR/clients/$c.pem"
done
check_not "clients/rogue.pem must NOT verify against ca/ca.pem" \
    openssl verify -CAfile "$CA" "$DIR/clients/rogue.pem"
check "clients/rogue.pem verifies against rogue-ca/ca.pem" \
    openssl verify -CAfile "$DIR/rogue-ca/ca.pem" "$DIR/clients/rogue.pem"
check "tls/ca.pem is a copy of ca/ca.pem" cmp -s "$CA" "$DIR/tls/ca.pem"

subject() { openssl x509 -in "$1" -noout -subject -nameopt RFC2253; }
pubkey() { openssl x509 -in "$1" -noout -pubkey; }
ca_subj=$(subject "$CA" 2>/dev/null || true)
rogue_subj=$(subject "$DIR/rogue-ca/ca.pem" 2>/dev/null || true)
if [[ -z $ca_subj || $ca_subj != "$rogue_subj" ]]; then
    fail "rogue CA subject ('$rogue_subj') equals dev CA subject ('$ca_subj')"
fi
if [[ $ca_subj != 'subject=CN=keyward dev CA,O=keyward development' ]]; then
    fail "dev CA subject is O=keyward development, CN=keyward dev CA (is '$ca_subj')"
fi
ca_pub=$(pubkey "$CA" 2>/dev/null || true)
rogue_pub=$(pubkey "$DIR/rogue-ca/ca.pem" 2>/dev/null || true)
if [[ -z $ca_pub || -z $rogue_pub || $ca_pub == "$rogue_pub" ]]; then
    fail "rogue CA public key differs from the dev CA public key"
fi
if [[ $(subject "$DIR/clients/rogue.pem" 2>/dev/null) != "$(subject "$DIR/clients/train-job.pem" 2>/dev/null)" ]]; then
    fail "rogue client subject equals the train-job subject"
fi

tj_text=$(openssl x509 -in "$DIR/clients/train-job.pem" -noout -text 2>/dev/null || true)
[[ $tj_text == *'URI:spiffe://keyward.dev/job/train-llama'* ]] \
    || fail "train-job certificate has SAN URI:spiffe://keyward.dev/job/train-llama"
[[ $tj_text == *'TLS Web Client Authentication'* ]] \
    || fail "train-job certificate has extendedKeyUsage clientAuth"
[[ $tj_text == *'TLS Web Server Authentication'* ]] \
    && fail "train-job certificate must not have extendedKeyUsage serverAuth"
grep -A1 'X509v3 Basic Constraints: critical' <<<"$tj_text" | grep -q 'CA:FALSE' \
    || fail "train-job certificate has critical basicConstraints CA:FALSE"
[[ $tj_text == *'ASN1 OID: prime256v1'* ]] \
    || fail "train-job key is EC P-256"
[[ $tj_text == *'ecdsa-with-SHA256'* ]] \
    || fail "train-job certificate is signed with ecdsa-with-SHA256"

ca_text=$(openssl x509 -in "$CA" -noout -text 2>/dev/null || true)
grep -A1 'X509v3 Basic Constraints: critical' <<<"$ca_text" | grep -q 'CA:TRUE, pathlen:0' \
    || fail "dev CA has critical basicConstraints CA:TRUE, pathlen:0"

srv_text=$(openssl x509 -in "$DIR/tls/server.pem" -noout -text 2>/dev/null || true)
[[ $srv_text == *'DNS:localhost, IP Address:127.0.0.1'* ]] \
    || fail "server certificate has SAN DNS:localhost, IP:127.0.0.1"

# ------------------------------------------------------------ JSON
if [[ -x $PYTHON ]]; then
    check "keywardd.json parses as JSON" "$PYTHON" -m json.tool "$DIR/keywardd.json"
    check "policy.json parses as JSON" "$PYTHON" -m json.tool "$DIR/policy.json"
    check "keywardd.json points at the files in DIR" "$PYTHON" - "$DIR" <<'EOF'
import json, sys
d = sys.argv[1]
c = json.load(open(d + "/keywardd.json"))
assert c["tls"] == {"cert": d + "/tls/server.pem", "key": d + "/tls/server.key",
                    "client_ca": d + "/tls/ca.pem"}, c["tls"]
p = c["pkcs11"]
assert p["pin_file"] == d + "/pin"
assert p["env"] == {"SOFTHSM2_CONF": d + "/softhsm2.conf"}
assert p["token"].startswith("pkcs11:token=")
assert c["policy"] == d + "/policy.json"
assert c["database"] == d + "/keyward.db"
assert c["audit_log"] == d + "/audit.log"
assert c["listen"] == "127.0.0.1:8443" and c["metrics_listen"] == "127.0.0.1:9443"
pol = json.load(open(d + "/policy.json"))
assert pol["version"] == 1
assert [r["identity"] for r in pol["rules"]] == [
    "spiffe://keyward.dev/job/train-llama",
    "alice.operators.keyward.dev",
    "spiffe://keyward.dev/app/inference-gw"]
EOF
else
    fail "$PYTHON is not available to parse keywardd.json and policy.json"
fi

if ! grep -qxF "directories.tokendir = $DIR/tokens" "$DIR/softhsm2.conf"; then
    fail "softhsm2.conf sets directories.tokendir = $DIR/tokens"
fi

# ------------------------------------------------------------ token
if [[ -z $(find "$DIR/tokens" -mindepth 1 -maxdepth 1 -type d -print -quit) ]]; then
    fail "a token directory exists under $DIR/tokens"
fi

# ------------------------------------------------------------ second run
snapshot >"$WORK/snap1"
rc=0
"$SCRIPT" "$DIR" >"$WORK/out2" 2>"$WORK/err2" || rc=$?
if ((rc != 0)); then
    fail "second run of dev-setup exited $rc"
    sed 's/^/  | /' "$WORK/err2"
fi
snapshot >"$WORK/snap2"
if ! cmp -s "$WORK/snap1" "$WORK/snap2"; then
    fail "second run changed files in $DIR:"
    diff "$WORK/snap1" "$WORK/snap2" | sed 's/^/  | /' || true
fi
check "second run prints the same summary" cmp -s "$WORK/out1" "$WORK/out2"
check_not "the user PIN appears in the output of the second run" \
    grep -qF -f "$DIR/pin" "$WORK/out2" "$WORK/err2"
check_not "the SO PIN appears in the output of the second run" \
    grep -qF -f "$DIR/so-pin" "$WORK/out2" "$WORK/err2"

# ------------------------------------------------------------ summary
for f in "${files[@]}"; do
    grep -qF -- "$DIR/$f" "$WORK/out1" || fail "summary mentions $DIR/$f"
done
grep -qF -- '--list-objects --login' "$WORK/out1" \
    || fail "summary shows the pkcs11-tool command to list the token"

if ((failures)); then
    echo "dev-setup: $failures assertion(s) failed"
    exit 1
fi
echo "PASS: dev-setup"
