#!/usr/bin/python3
"""Client certificates that keywardd must refuse, made at run time.

usage: mkcerts.py ENVDIR OUTDIR

Writes NAME.pem / NAME.key into OUTDIR for: selfsigned (its own issuer),
expired, notyet (not valid yet), serveronly (EKU serverAuth, no
clientAuth), caleaf (basicConstraints CA:TRUE), twouris (two URI SANs),
all but selfsigned issued by the development CA in ENVDIR/ca.
"""
import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def load_ca(envdir):
    with open(os.path.join(envdir, "ca", "ca.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(envdir, "ca", "ca.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return cert, key


def make(outdir, name, issuer, issuer_key, *, days=(-1, 30), eku=None,
         ca=False, uris=("spiffe://keyward.dev/job/train-llama",)):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer.subject if issuer is not None else subject)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                        critical=True)
         .add_extension(x509.ExtendedKeyUsage(
             eku or [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.SubjectAlternativeName(
             [x509.UniformResourceIdentifier(u) for u in uris]),
             critical=False))
    cert = b.sign(issuer_key if issuer_key is not None else key,
                  hashes.SHA256())
    with open(os.path.join(outdir, name + ".pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(os.path.join(outdir, name + ".key"),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def main():
    envdir, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, mode=0o700, exist_ok=True)
    ca, ca_key = load_ca(envdir)
    make(outdir, "selfsigned", None, None)
    make(outdir, "expired", ca, ca_key, days=(-30, -1))
    make(outdir, "notyet", ca, ca_key, days=(2, 30))
    make(outdir, "serveronly", ca, ca_key,
         eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    make(outdir, "caleaf", ca, ca_key, ca=True)
    make(outdir, "twouris", ca, ca_key,
         uris=("spiffe://keyward.dev/job/train-llama",
               "spiffe://keyward.dev/job/other"))
    print(outdir)


if __name__ == "__main__":
    main()
