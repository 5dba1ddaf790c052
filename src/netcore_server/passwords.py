"""Salted password hashes (stdlib scrypt); passwords are never stored in clear."""
from __future__ import annotations

import hashlib
import hmac
import os

# Interactive-login strength (RFC 7914 guidance): about 16 MiB and tens of
# milliseconds per hash. Tests pass a smaller n to stay fast.
DEFAULT_N = 2 ** 14
R, P, DKLEN, SALT_BYTES = 8, 1, 32, 16


def hash_password(password: str, n: int = DEFAULT_N) -> str:
    salt = os.urandom(SALT_BYTES)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=R, p=P, dklen=DKLEN)
    return f"scrypt${n}${R}${P}${salt.hex()}${dk.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        dk = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt),
                            n=int(n), r=int(r), p=int(p), dklen=len(expected) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(dk.hex(), expected)
