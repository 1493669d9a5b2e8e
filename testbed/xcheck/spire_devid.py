#!/usr/bin/env python3
"""An independent implementation of SPIRE's `tpm_devid` node attestation, for cross-checking the Rust one.

Written from the protocol description (SPIRE's wire format, TPM 2.0 structures, TCG credential protection), not
from the Rust code: the server side uses Python's `cryptography` (X.509 chains, TPMS_ATTEST parsing, the
certification signature, MakeCredential with KDFa, RSA-OAEP and AES-CFB); the agent side drives the TPM with
tpm2-tools. Nothing stays loaded in the TPM between commands (swtpm has no resource manager): contexts are saved
in the work directory and every command is followed by `tpm2_flushcontext -t`.

  server-challenge --payload P.json --devid-ca CA.pem --ek-ca EKCA.pem --state S.json   (prints the challenge)
  server-verify --response R.json --state S.json --trust-domain TD                      (prints ID and selectors)
  agent-payload --tcti T --devid-cert C.pem --devid-priv PRIV --devid-pub PUB --workdir W [passwords]
  agent-respond --tcti T --challenge C.json --workdir W [passwords]
  passwords: --owner-password X --endorsement-password X --devid-password X

Exit 0 on success; otherwise one line `error: <reason>` on stderr and exit 1.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import struct
import subprocess
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class Refused(Exception):
    pass


def b64(data):
    return base64.b64encode(data).decode()


def unb64(text, what):
    if text is None:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except Exception:
        raise Refused(f"{what} is not standard base64")


# ---------------------------------------------------------------- TPM structures (TPM 2.0 Part 2)

class Cursor:
    def __init__(self, data, what):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n):
        if self.pos + n > len(self.data):
            raise Refused(f"{self.what} is truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def sized(self):
        return self.take(self.u16())


def parse_public(data, what):
    """TPMT_PUBLIC -> dict (RSA or ECC only)."""
    c = Cursor(data, what)
    kind, name_alg, attrs = c.u16(), c.u16(), c.u32()
    c.sized()  # authPolicy
    sym = c.u16()
    sym_bits = sym_mode = 0
    if sym != 0x0010:
        sym_bits, sym_mode = c.u16(), c.u16()
    scheme = c.u16()
    scheme_hash = c.u16() if scheme not in (0x0010, 0x0015) else 0x0010
    out = {"type": kind, "name_alg": name_alg, "attrs": attrs, "scheme": scheme, "scheme_hash": scheme_hash,
           "sym": (sym, sym_bits, sym_mode)}
    if kind == 0x0001:
        c.u16()  # keyBits
        exponent = c.u32() or 65537
        out["n"], out["e"] = int.from_bytes(c.sized(), "big"), exponent
    elif kind == 0x0023:
        out["curve"] = c.u16()
        if c.u16() != 0x0010:
            c.u16()
        out["x"], out["y"] = int.from_bytes(c.sized(), "big"), int.from_bytes(c.sized(), "big")
    else:
        raise Refused(f"{what}: unsupported key type {kind:#06x}")
    return out


HASHES = {0x0004: hashes.SHA1, 0x000B: hashes.SHA256, 0x000C: hashes.SHA384, 0x000D: hashes.SHA512}


def tpm_name(public_bytes, name_alg):
    digest = hashes.Hash(HASHES[name_alg]())
    digest.update(public_bytes)
    return struct.pack(">H", name_alg) + digest.finalize()


def parse_attest(data):
    c = Cursor(data, "TPMS_ATTEST")
    magic, kind = c.u32(), c.u16()
    c.sized()  # qualifiedSigner
    c.sized()  # extraData
    c.take(17 + 8)  # clockInfo, firmwareVersion
    name = c.sized() if kind == 0x8017 else None
    return magic, kind, name


# ---------------------------------------------------------------- X.509

def load_pem_certs(path):
    data = open(path, "rb").read()
    out, marker = [], b"-----BEGIN CERTIFICATE-----"
    for chunk in data.split(marker)[1:]:
        out.append(x509.load_pem_x509_certificate(marker + chunk.split(b"-----END CERTIFICATE-----")[0]
                                                  + b"-----END CERTIFICATE-----\n"))
    return out


def signed_by(cert, issuer):
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        else:
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        return True
    except Exception:
        return False


def valid_now(cert):
    now = datetime.datetime.utcnow()
    return cert.not_valid_before <= now <= cert.not_valid_after


def is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def chains(cert, intermediates, roots, path=None):
    """Every chain from cert to a root, each a list leaf-first."""
    path = (path or []) + [cert]
    if not valid_now(cert):
        return []
    found = []
    for root in roots:
        if cert.issuer == root.subject and signed_by(cert, root) and valid_now(root):
            found.append(path + [root])
    for inter in intermediates:
        if inter in path or cert.issuer != inter.subject or len(path) > 6:
            continue
        if is_ca(inter) and signed_by(cert, inter):
            found += chains(inter, intermediates, roots, path)
    return found


def common_name(name):
    cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return cns[-1].value if cns else ""


# ---------------------------------------------------------------- MakeCredential (TPM 2.0 Part 1, 24)

def kdfa(key, label, context_u, context_v, bits):
    out, counter = b"", 1
    while len(out) * 8 < bits:
        out += hmac.new(key, struct.pack(">I", counter) + label + b"\0" + context_u + context_v
                        + struct.pack(">I", bits), hashlib.sha256).digest()
        counter += 1
    return out[:bits // 8]


def make_credential(ek, ak_name, secret):
    seed = os.urandom(16)
    enc_seed = rsa.RSAPublicNumbers(ek["e"], ek["n"]).public_key().encrypt(
        seed, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"IDENTITY\0"))
    sym_key = kdfa(seed, b"STORAGE", ak_name, b"", ek["sym"][1])
    enc = Cipher(algorithms.AES(sym_key), modes.CFB(b"\0" * 16)).encryptor()
    identity = enc.update(struct.pack(">H", len(secret)) + secret) + enc.finalize()
    integrity = hmac.new(kdfa(seed, b"INTEGRITY", b"", b"", 256), identity + ak_name, hashlib.sha256).digest()
    return struct.pack(">H", len(integrity)) + integrity + identity, enc_seed


# ---------------------------------------------------------------- server

def server_challenge(a):
    req = json.load(open(a.payload))
    certs = [unb64(c, "DevIDCert") for c in (req.get("DevIDCert") or [])]
    if not certs:
        raise Refused("no DevID certificate to attest")
    leaf = x509.load_der_x509_certificate(certs[0])
    inters = [x509.load_der_x509_certificate(c) for c in certs[1:]]
    found = chains(leaf, inters, load_pem_certs(a.devid_ca))
    if not found:
        raise Refused("unable to verify DevID signature")
    fields = {k: unb64(req.get(k), k) for k in
              ("AKPub", "DevIDPub", "EKCert", "EKPub", "CertifiedDevID", "CertificationSignature")}
    for k in ("AKPub", "DevIDPub", "EKCert", "EKPub"):
        if not fields[k]:
            raise Refused(f"missing {k}")
    ek_cert = x509.load_der_x509_certificate(fields["EKCert"])
    ek = parse_public(fields["EKPub"], "EKPub")
    ak = parse_public(fields["AKPub"], "AKPub")
    devid = parse_public(fields["DevIDPub"], "DevIDPub")
    cert_key = ek_cert.public_key()
    if not isinstance(cert_key, rsa.RSAPublicKey) or ek["type"] != 0x0001:
        raise Refused("EK is not RSA")
    nums = cert_key.public_numbers()
    if (nums.n, nums.e) != (ek["n"], ek["e"]):
        raise Refused("EK certificate key differs from EKPub")
    if not any(ek_cert.issuer == ca.subject and signed_by(ek_cert, ca) for ca in load_pem_certs(a.ek_ca)):
        raise Refused("EK certificate not issued by an endorsement CA")
    if ak["type"] != 0x0001 or not ak["attrs"] & 0x40000 or ak["scheme"] != 0x0014:
        raise Refused("AK is not an RSASSA signing key")
    sig = Cursor(fields["CertificationSignature"], "TPMT_SIGNATURE")
    if sig.u16() != 0x0014:
        raise Refused("certification signature is not RSASSA")
    sig_hash = sig.u16()
    try:
        rsa.RSAPublicNumbers(ak["e"], ak["n"]).public_key().verify(
            sig.sized(), fields["CertifiedDevID"], padding.PKCS1v15(), HASHES[sig_hash]())
    except Exception:
        raise Refused("certification signature verification failed")
    magic, kind, name = parse_attest(fields["CertifiedDevID"])
    if magic != 0xFF544347 or kind != 0x8017:
        raise Refused("not a TPM-generated certify attestation")
    if name != tpm_name(fields["DevIDPub"], devid["name_alg"]):
        raise Refused("certify failed: certified name is not DevIDPub's")
    nonce, secret = os.urandom(32), os.urandom(32)
    credential, enc_seed = make_credential(ek, tpm_name(fields["AKPub"], ak["name_alg"]), secret)
    json.dump({"nonce": b64(nonce), "secret": b64(secret), "leaf": b64(certs[0]),
               "cas": [b64(c.public_bytes(encoding=__import__("cryptography.hazmat.primitives.serialization",
                                                               fromlist=["Encoding"]).Encoding.DER))
                       for chain in found for c in chain[1:]]}, open(a.state, "w"))
    print(json.dumps({"DevID": b64(nonce), "CredActivation": {"Credential": b64(credential), "Secret": b64(enc_seed)}},
                     separators=(",", ":")))


def server_verify(a):
    state = json.load(open(a.state))
    resp = json.load(open(a.response))
    leaf_der = unb64(state["leaf"], "leaf")
    leaf = x509.load_der_x509_certificate(leaf_der)
    nonce, sig = unb64(state["nonce"], "nonce"), unb64(resp.get("DevID"), "DevID")
    key = leaf.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, nonce, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(sig, nonce, ec.ECDSA(hashes.SHA256()))
    except Exception:
        raise Refused("devID challenge verification failed")
    if not hmac.compare_digest(unb64(resp.get("CredActivation"), "CredActivation"), unb64(state["secret"], "s")):
        raise Refused("credential activation failed: nonces are different")
    selectors = []
    if common_name(leaf.subject):
        selectors.append("subject:cn:" + common_name(leaf.subject))
    if common_name(leaf.issuer):
        selectors.append("issuer:cn:" + common_name(leaf.issuer))
    for ca in state["cas"]:
        s = "ca:fingerprint:" + hashlib.sha1(unb64(ca, "ca")).hexdigest()
        if s not in selectors:
            selectors.append(s)
    fp = hashlib.sha1(leaf_der).hexdigest()
    print(json.dumps({"spiffe_id": f"spiffe://{a.trust_domain}/spire/agent/tpm_devid/{fp}", "selectors": selectors}))


# ---------------------------------------------------------------- agent (tpm2-tools)

SRK_ATTRS = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt"


def tpm2(a, *args, retry=False):
    env = dict(os.environ, TPM2TOOLS_TCTI=a.tcti, TSS2_LOG="all+NONE")
    for attempt in range(10):
        run = subprocess.run(list(args), cwd=a.workdir, env=env, capture_output=True)
        subprocess.run(["tpm2_flushcontext", "-t"], cwd=a.workdir, env=env, capture_output=True)
        if run.returncode == 0:
            return run.stdout
        if not (retry and b"0x922" in run.stderr.lower() + run.stdout.lower()) or attempt == 9:
            raise Refused(f"{args[0]}: {run.stderr.decode(errors='replace').strip()}")
        time.sleep(0.2)


def auth(value):
    return value or ""


def create_srk(a, ecc, out):
    alg = "ecc256:null:aes128cfb" if ecc else "rsa2048:null:aes128cfb"
    tpm2(a, "tpm2_createprimary", "-Q", "-C", "o", "-P", auth(a.owner_password), "-g", "sha256", "-G", alg,
         "-a", SRK_ATTRS, "-c", out)


def agent_payload(a):
    w = lambda name, data: open(os.path.join(a.workdir, name), "wb").write(data)
    pub, priv = open(a.devid_pub, "rb").read(), open(a.devid_priv, "rb").read()
    w("devid.pub", struct.pack(">H", len(pub)) + pub)
    w("devid.priv", struct.pack(">H", len(priv)) + priv)
    ecc = pub[:2] == b"\x00\x23"
    create_srk(a, ecc, "srk.ctx")
    tpm2(a, "tpm2_load", "-Q", "-C", "srk.ctx", "-u", "devid.pub", "-r", "devid.priv", "-c", "devid.ctx")
    create_srk(a, False, "srk-rsa.ctx")
    ak_pw = os.urandom(16).hex()
    w("ak.pw", ak_pw.encode())
    tpm2(a, "tpm2_create", "-Q", "-C", "srk-rsa.ctx", "-g", "sha256", "-G", "rsa2048:rsassa-sha256:null",
         "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign", "-p", "hex:" + ak_pw,
         "-u", "ak.pub", "-r", "ak.priv")
    tpm2(a, "tpm2_load", "-Q", "-C", "srk-rsa.ctx", "-u", "ak.pub", "-r", "ak.priv", "-c", "ak.ctx")
    tpm2(a, "tpm2_createek", "-Q", "-G", "rsa", "-P", auth(a.endorsement_password), "-w", auth(a.owner_password),
         "-c", "ek.ctx", "-u", "ek.pub")
    tpm2(a, "tpm2_nvread", "-Q", "-C", "0x01c00002", "0x01c00002", "-o", "ekcert.bin")
    tpm2(a, "tpm2_certify", "-Q", "-c", "devid.ctx", "-P", auth(a.devid_password), "-C", "ak.ctx",
         "-p", "hex:" + ak_pw, "-g", "sha256", "--scheme", "rsassa", "-o", "attest.bin", "-s", "sig.bin", retry=True)
    r = lambda name: open(os.path.join(a.workdir, name), "rb").read()
    ek_cert = r("ekcert.bin")
    # Keep the first DER element only (a SEQUENCE with a definite length).
    length, head = ek_cert[1], 2
    if length & 0x80:
        head = 2 + (length & 0x7F)
        length = int.from_bytes(ek_cert[2:head], "big")
    certs = load_pem_certs(a.devid_cert)
    from cryptography.hazmat.primitives.serialization import Encoding
    print(json.dumps({
        "DevIDCert": [b64(c.public_bytes(Encoding.DER)) for c in certs],
        "DevIDPub": b64(pub),
        "EKCert": b64(ek_cert[:head + length]),
        "EKPub": b64(r("ek.pub")[2:]),
        "AKPub": b64(r("ak.pub")[2:]),
        "CertifiedDevID": b64(r("attest.bin")),
        "CertificationSignature": b64(r("sig.bin")),
    }, separators=(",", ":")))


def agent_respond(a):
    ch = json.load(open(a.challenge))
    cred = ch.get("CredActivation")
    if not cred:
        raise Refused("received empty credential activation challenge from server")
    w = lambda name, data: open(os.path.join(a.workdir, name), "wb").write(data)
    r = lambda name: open(os.path.join(a.workdir, name), "rb").read()
    w("nonce.bin", unb64(ch.get("DevID"), "DevID"))
    ecc = r("devid.pub")[2:4] == b"\x00\x23"
    tpm2(a, "tpm2_sign", "-Q", "-c", "devid.ctx", "-p", auth(a.devid_password), "-g", "sha256",
         "-s", "ecdsa" if ecc else "rsassa", "-f", "plain", "-o", "nonce.sig", "nonce.bin", retry=True)
    sig = r("nonce.sig")
    if ecc and len(sig) == 64 and sig[0] != 0x30:
        sig = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    credential, secret = unb64(cred.get("Credential"), "Credential"), unb64(cred.get("Secret"), "Secret")
    # tpm2-tools' credential file: magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    w("cred.in", struct.pack(">IIH", 0xBADCC0DE, 1, len(credential)) + credential + struct.pack(">H", len(secret))
      + secret)
    tpm2(a, "tpm2_startauthsession", "-Q", "--policy-session", "-S", "session.ctx")
    try:
        tpm2(a, "tpm2_policysecret", "-Q", "-S", "session.ctx", "-c", "e", auth(a.endorsement_password))
        tpm2(a, "tpm2_activatecredential", "-Q", "-c", "ak.ctx", "-C", "ek.ctx", "-i", "cred.in", "-o", "secret.out",
             "-p", "hex:" + r("ak.pw").decode(), "-P", "session:session.ctx")
    finally:
        env = dict(os.environ, TPM2TOOLS_TCTI=a.tcti, TSS2_LOG="all+NONE")
        subprocess.run(["tpm2_flushcontext", "session.ctx"], cwd=a.workdir, env=env, capture_output=True)
    print(json.dumps({"DevID": b64(sig), "CredActivation": b64(r("secret.out"))}, separators=(",", ":")))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server-challenge")
    for flag in ("--payload", "--devid-ca", "--ek-ca", "--state"):
        s.add_argument(flag, required=True)
    s = sub.add_parser("server-verify")
    for flag in ("--response", "--state", "--trust-domain"):
        s.add_argument(flag, required=True)
    for name, extra in (("agent-payload", ("--devid-cert", "--devid-priv", "--devid-pub")),
                        ("agent-respond", ("--challenge",))):
        s = sub.add_parser(name)
        for flag in ("--tcti", "--workdir") + extra:
            s.add_argument(flag, required=True)
        for flag in ("--owner-password", "--endorsement-password", "--devid-password"):
            s.add_argument(flag, default="")
    a = p.parse_args()
    try:
        {"server-challenge": server_challenge, "server-verify": server_verify,
         "agent-payload": agent_payload, "agent-respond": agent_respond}[a.cmd](a)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
