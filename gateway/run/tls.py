"""TLS for the custom domain: the server context and what a certificate says about itself."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context with the configured chain and key; TLS 1.2 is the floor."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # SECURITY: TLS 1.0/1.1 are broken (RFC 8996); clients that only speak them are refused.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@dataclass(frozen=True)
class CertificateInfo:
    """The facts about a certificate that the prerequisites check needs."""

    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    key_matches: bool

    def names_host(self, host: str) -> bool:
        """Whether the certificate is valid for ``host`` (exact name or one-label wildcard)."""
        host = host.lower()
        for name in self.names:
            if name == host or (name.startswith("*.") and host.partition(".")[2] == name[2:] and "." in name[2:]):
                return True
        return False


def inspect_certificate(cert: Path, key: Path) -> CertificateInfo:
    """Parse the first certificate of ``cert`` and check it against ``key``; raises ValueError or OSError."""
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    matches = certificate.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) == private_key.public_key().public_bytes(serialization.Encoding.DER, public)
    return _describe(certificate, key_matches=matches)


def peer_certificate(der: bytes) -> CertificateInfo:
    """What a server's certificate (DER, as the TLS handshake gave it) says; raises ValueError."""
    # The handshake itself proved that the server holds the certificate's key.
    return _describe(x509.load_der_x509_certificate(der), key_matches=True)


def _describe(certificate: x509.Certificate, *, key_matches: bool) -> CertificateInfo:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
        names += [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    return CertificateInfo(
        names=tuple(names),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        key_matches=key_matches,
    )
