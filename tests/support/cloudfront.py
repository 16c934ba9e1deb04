"""CloudFront for tests: a key pair, a check of a signed URL, AWS's ranges on loopback."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY_PAIR = "K2JCJMDEHXQW5F"


@dataclass
class Keys:
    private: rsa.RSAPrivateKey
    pem: Path


def make_keys(folder: Path) -> Keys:
    """An RSA key pair, its private key in PKCS #1 PEM (as AWS hands it out) in ``folder``."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = folder / "private.pem"
    pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return Keys(private, pem)


def verified_policy(keys: Keys, location: str) -> dict[str, Any]:
    """The canned policy a signed URL carries the signature of, checked with the public key."""
    query = parse_qs(urlsplit(location).query, strict_parsing=True)
    assert list(query) == ["Expires", "Signature", "Key-Pair-Id"]
    assert query["Key-Pair-Id"] == [KEY_PAIR]
    (expires,), (signature,) = query["Expires"], query["Signature"]
    assert not set(signature) & set("+=/"), "CloudFront's base64 has no + = /"
    resource = location.partition("?")[0]
    condition = '"Condition":{"DateLessThan":{"AWS:EpochTime":' + expires + "}}"
    policy = ('{"Statement":[{"Resource":"' + resource + '",' + condition + "}]}").encode()
    raw = base64.b64decode(signature.translate(str.maketrans("-_~", "+=/")))
    # Raises InvalidSignature unless the private key signed exactly these bytes.
    keys.private.public_key().verify(raw, policy, padding.PKCS1v15(), hashes.SHA1())
    parsed: dict[str, Any] = json.loads(policy)
    return parsed


@dataclass
class RangesServer:
    """``ip-ranges.json`` served on loopback; ``hits`` counts the fetches."""

    url: str
    document: dict[str, Any]
    hits: list[float] = field(default_factory=list)


#: 127.0.0.0/8 (every test client) in us-east-1; 10.0.0.0/8 and 2001:db8::/32 in eu-west-1.
RANGES: dict[str, Any] = {
    "syncToken": "1",
    "prefixes": [
        {"ip_prefix": "127.0.0.0/8", "region": "us-east-1", "service": "AMAZON"},
        {"ip_prefix": "10.0.0.0/8", "region": "eu-west-1", "service": "EC2"},
        {"ip_prefix": "not a prefix", "region": "eu-west-1", "service": "EC2"},
    ],
    "ipv6_prefixes": [{"ipv6_prefix": "2001:db8::/32", "region": "eu-west-1", "service": "AMAZON"}],
}


@contextmanager
def serving_ranges(document: dict[str, Any] = RANGES) -> Iterator[RangesServer]:
    """``document`` (changeable while served) at a URL of a server on a free loopback port."""
    served = RangesServer("", dict(document))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.hits.append(time.monotonic())
            body = json.dumps(served.document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}/ip-ranges.json"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
