#!/usr/bin/env python3
"""A local OIDC issuer for the client tests: an RSA key, a discovery document and a JWKS over
plain HTTP on 127.0.0.1, and identity tokens minted like GitHub Actions' (RS256, kid).

  oidc_issuer.py serve --key KEY.pem --port PORT      # serves until killed
  oidc_issuer.py mint --key KEY.pem --issuer URL --aud AUD [--claim k=v ...] [--ttl 300]

The key file is created on first use. Uses `cryptography` (Debian python3-cryptography).
"""
import argparse
import base64
import http.server
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KID = "local-1"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_key(path):
    if not os.path.exists(path):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with open(path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def jwks(key):
    numbers = key.public_key().public_numbers()
    as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")
    return {"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
                      "n": b64(as_bytes(numbers.n)), "e": b64(as_bytes(numbers.e))}]}


def mint(key, claims):
    header = {"alg": "RS256", "typ": "JWT", "kid": KID}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64(sig)


def serve(key, port):
    issuer = f"http://127.0.0.1:{port}"
    docs = {
        "/.well-known/openid-configuration": {"issuer": issuer, "jwks_uri": issuer + "/jwks"},
        "/jwks": jwks(key),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            doc = docs.get(self.path)
            body = json.dumps(doc).encode() if doc else b""
            self.send_response(200 if doc else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            sys.stderr.write("issuer: " + fmt % args + "\n")

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["serve", "mint"])
    ap.add_argument("--key", required=True)
    ap.add_argument("--port", type=int)
    ap.add_argument("--issuer")
    ap.add_argument("--aud", default="berth")
    ap.add_argument("--claim", action="append", default=[])
    ap.add_argument("--ttl", type=int, default=300)
    args = ap.parse_args()
    key = load_key(args.key)
    if args.command == "serve":
        serve(key, args.port)
        return
    now = int(time.time())
    claims = {"iss": args.issuer, "aud": args.aud, "iat": now, "nbf": now - 5, "exp": now + args.ttl}
    for kv in args.claim:
        k, v = kv.split("=", 1)
        claims[k] = v
    print(mint(key, claims))


if __name__ == "__main__":
    main()
