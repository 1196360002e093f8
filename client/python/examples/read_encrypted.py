#!/usr/bin/env python3
"""Random access to an encrypted keyward file, the way a data loader does it.

    KEYWARD_ADDR=host:port KEYWARD_CA=ca.pem KEYWARD_CERT=job.pem \\
    KEYWARD_KEY=job.key python3 read_encrypted.py FILE [READS [SEED]]

Reads READS (default 64) ranges at random offsets, each decrypting only
the chunks it touches, and prints a SHA-256 over them.  With numpy, each
range is read into a buffer and viewed with numpy.frombuffer (no copy),
as one would view records of a memory-mapped array; without numpy, plain
reads.  The checksum is the same either way.
"""
import hashlib
import random
import sys

import keyward

try:
    import numpy
except ImportError:
    numpy = None


def plan(size, reads, seed):
    """The (offset, length) of each read: up to 256 KiB at random offsets."""
    rng = random.Random(seed)
    out = []
    for _ in range(reads if size else 0):
        off = rng.randrange(size)
        out.append((off, min(rng.randrange(1, 256 * 1024), size - off)))
    return out


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print("usage: read_encrypted.py FILE [READS [SEED]]", file=sys.stderr)
        return 2
    reads = int(argv[2]) if len(argv) > 2 else 64
    seed = int(argv[3]) if len(argv) > 3 else 0
    h = hashlib.sha256()
    total = 0
    try:
        with keyward.open(argv[1]) as f:
            for off, n in plan(f.size(), reads, seed):
                f.seek(off)
                if numpy is not None:
                    buf = bytearray(n)
                    got = f.readinto(buf)
                    arr = numpy.frombuffer(buf, dtype=numpy.uint8, count=got)
                    h.update(arr)  # any dtype would do: numpy views the bytes
                    total += int(arr.size)
                else:
                    data = f.read(n)
                    h.update(data)
                    total += len(data)
            size = f.size()
    except keyward.Error as e:
        print("read_encrypted: %s (%s)" % (e, e.name), file=sys.stderr)
        return 1
    print("%s: %d bytes, %d random reads, %d bytes read (%s)"
          % (argv[1], size, reads, total, "numpy" if numpy is not None else "plain"))
    print("sha256 " + h.hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
