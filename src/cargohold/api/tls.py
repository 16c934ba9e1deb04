"""TLS as Distribution's ``http.tls`` section configures it.

- ``certificate`` and ``key``: the server's certificate chain and key (PEM).
- ``minimumtls``: the oldest protocol version accepted (default ``tls1.2``).
- ``ciphersuites``: the TLS 1.2 cipher suites accepted, by their Go names
  (``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``); without it, Distribution's
  default list. TLS 1.3 suites may be named but, as in Go, are not
  configurable; with ``minimumtls: tls1.3`` the list does not apply at all.
- ``clientcas`` and ``clientauth``: client certificates, verified against the
  listed CAs: ``require-and-verify-client-cert`` (the default once
  ``clientcas`` is set) refuses a client without a good certificate,
  ``verify-client-cert-if-given`` lets one without a certificate in but
  refuses a bad one.

Go can also ask for a client certificate without verifying it
(``request-client-cert``, ``require-any-client-cert``); OpenSSL through
Python's ``ssl`` cannot, so those are refused at start, as is ``clientauth``
without ``clientcas`` (nothing to verify against) and ``letsencrypt``.
"""

from __future__ import annotations

import logging
import ssl

from cargohold.config import TLS
from cargohold.errors import ConfigError

__all__ = ["server_context"]

log = logging.getLogger("cargohold.server")

_VERSIONS = {
    "tls1.0": ssl.TLSVersion.TLSv1,
    "tls1.1": ssl.TLSVersion.TLSv1_1,
    "tls1.2": ssl.TLSVersion.TLSv1_2,
    "tls1.3": ssl.TLSVersion.TLSv1_3,
}

#: Go's names of the TLS 1.2 cipher suites Distribution knows, and OpenSSL's.
CIPHER_SUITES = {
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
#: TLS 1.3's suites: accepted in the list, but fixed by the protocol's implementations.
TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
#: Distribution's defaults (its ``defaultCipherSuites``), for TLS 1.2.
DEFAULT_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
)

_CLIENT_AUTH = {
    "require-and-verify-client-cert": ssl.CERT_REQUIRED,
    "verify-client-cert-if-given": ssl.CERT_OPTIONAL,
}


def server_context(tls: TLS) -> ssl.SSLContext | None:
    """The server's TLS context, or None to serve plain HTTP; ``ConfigError`` when unusable."""
    if tls.letsencrypt.model_fields_set:
        raise ConfigError(
            "http.tls.letsencrypt",
            "not supported by cargohold (it would fetch certificates from the internet); "
            "give http.tls.certificate and http.tls.key",
        )
    if not tls.certificate:
        for key in ("clientcas", "clientauth", "ciphersuites", "minimumtls", "key"):
            if key in tls.model_fields_set:
                raise ConfigError(f"http.tls.{key}", "needs http.tls.certificate (TLS is off)")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    minimum = _VERSIONS[tls.minimumtls]
    context.minimum_version = minimum
    try:
        context.load_cert_chain(tls.certificate, tls.key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("http.tls", f"cannot load certificate and key: {exc}") from exc
    _set_ciphers(context, tls, minimum)
    _set_client_auth(context, tls)
    return context


def _set_ciphers(context: ssl.SSLContext, tls: TLS, minimum: ssl.TLSVersion) -> None:
    if minimum >= ssl.TLSVersion.TLSv1_3:
        if tls.ciphersuites:
            log.warning("http.tls.ciphersuites does not apply from TLS 1.3 on: not used")
        return
    names = list(tls.ciphersuites) or list(DEFAULT_SUITES)
    unknown = [n for n in names if n not in CIPHER_SUITES and n not in TLS13_SUITES]
    if unknown:
        raise ConfigError("http.tls.ciphersuites", f"unknown cipher suite {unknown[0]!r}")
    chosen = [CIPHER_SUITES[n] for n in names if n in CIPHER_SUITES]
    if not chosen:
        return  # only TLS 1.3 suites named: TLS 1.2 keeps OpenSSL's defaults, as Go does
    try:
        context.set_ciphers(":".join(chosen))
    except ssl.SSLError:
        raise ConfigError(
            "http.tls.ciphersuites", "none of these cipher suites is available here"
        ) from None


def _set_client_auth(context: ssl.SSLContext, tls: TLS) -> None:
    mode = tls.clientauth
    if mode not in _CLIENT_AUTH:
        raise ConfigError(
            "http.tls.clientauth",
            f"{mode} is not supported by cargohold (a client certificate is always verified "
            "when asked for); use verify-client-cert-if-given or require-and-verify-client-cert",
        )
    if not tls.clientcas:
        if "clientauth" in tls.model_fields_set:
            raise ConfigError("http.tls.clientauth", "needs http.tls.clientcas to verify with")
        return
    for ca in tls.clientcas:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("http.tls.clientcas", f"cannot load {ca}: {exc}") from exc
    context.verify_mode = _CLIENT_AUTH[mode]
