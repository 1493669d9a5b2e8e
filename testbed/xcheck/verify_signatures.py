#!/usr/bin/env python3
"""Verifies signatures independently of the project's code (pyca/cryptography, OpenSSL underneath).

Reads a JSON list on stdin, each item {"spki": b64 DER SubjectPublicKeyInfo, "scheme": "ecdsa" | "pkcs1" | "pss",
"hash": "sha256" | "sha384" | "sha512", "digest": b64, "signature": b64}; PSS is checked with MGF1 of the same
hash and a salt of the digest's length. Prints one line per item: "ok" or "bad: <reason>".
"""
import base64
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key

HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def check(item):
    key = load_der_public_key(base64.b64decode(item["spki"]))
    algorithm = HASHES[item["hash"]]()
    digest = base64.b64decode(item["digest"])
    signature = base64.b64decode(item["signature"])
    prehashed = utils.Prehashed(algorithm)
    scheme = item["scheme"]
    if scheme == "ecdsa":
        key.verify(signature, digest, ec.ECDSA(prehashed))
    elif scheme == "pkcs1":
        key.verify(signature, digest, padding.PKCS1v15(), prehashed)
    elif scheme == "pss":
        pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size)
        key.verify(signature, digest, pss, prehashed)
    else:
        raise ValueError(f"unknown scheme {scheme}")


for item in json.load(sys.stdin):
    try:
        check(item)
        print("ok")
    except InvalidSignature:
        print("bad: the signature does not verify")
    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
        print(f"bad: {e}")
