"""Test certificates for the TLS listeners, made with `cryptography`.

``make_certs(directory)`` writes PEM files and returns their paths
(``Certs``):

* a test CA (EC P-256) and, signed by it, a server certificate for
  IP 127.0.0.1 and DNS localhost (``server_cert`` holds the chain: the server
  certificate, then the CA) with its key in PKCS#8;
* a client certificate for ``CN=alice,O=sluice-test`` signed by the CA (for
  the mTLS listener), and one for ``CN=mallory,O=sluice-test`` signed by the
  *other* CA (which the listener must refuse);
* a second, unrelated CA with its own server certificate and key, for the
  SIGHUP reload test (``server2_*``).

Keys are EC P-256 and certificates live a day: generating them takes a few
milliseconds, so every module makes its own.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certs:
    """Paths of the PEM files ``make_certs`` wrote (and the DER of the two
    server certificates, to compare with what a TLS handshake presents)."""
    directory: Path
    ca_cert: Path
    server_cert: Path      # server certificate + CA (a chain)
    server_key: Path       # PKCS#8
    server_der: bytes
    client_cert: Path      # CN=alice,O=sluice-test, signed by ca_cert
    client_key: Path
    client_subject: str    # RFC 4514, most specific RDN first
    stranger_cert: Path    # CN=mallory,O=sluice-test, signed by ca2_cert
    stranger_key: Path
    ca2_cert: Path
    server2_cert: Path     # signed by ca2_cert
    server2_key: Path
    server2_der: bytes


def _name(common_name: str, organization: str = "sluice-test") -> x509.Name:
    # least specific first in the DER sequence, so RFC 4514 reads CN=...,O=...
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = _name(common_name)
    cert = (_builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(subject: x509.Name, ca: x509.Certificate, ca_key, *, server: bool
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (_builder(subject, ca.subject, key.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                            crl_sign=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(
                   x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                   critical=False))
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.DNSName("localhost")]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pkcs8(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certs(directory: Path) -> Certs:
    """Write the test PKI into `directory` (created if needed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("sluice-test-ca")
    server, server_key = _leaf(_name("localhost"), ca, ca_key, server=True)
    alice_name = _name("alice")
    client, client_key = _leaf(alice_name, ca, ca_key, server=False)
    ca2, ca2_key = _ca("sluice-test-ca-2")
    server2, server2_key = _leaf(_name("localhost", "sluice-test-2"), ca2, ca2_key, server=True)
    stranger, stranger_key = _leaf(_name("mallory"), ca2, ca2_key, server=False)

    files = {
        "ca.pem": _pem(ca),
        "server.pem": _pem(server) + _pem(ca),
        "server.key": _pkcs8(server_key),
        "alice.pem": _pem(client),
        "alice.key": _pkcs8(client_key),
        "mallory.pem": _pem(stranger),
        "mallory.key": _pkcs8(stranger_key),
        "ca2.pem": _pem(ca2),
        "server2.pem": _pem(server2) + _pem(ca2),
        "server2.key": _pkcs8(server2_key),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    der = serialization.Encoding.DER
    return Certs(directory=d, ca_cert=d / "ca.pem", server_cert=d / "server.pem",
                 server_key=d / "server.key", server_der=server.public_bytes(der),
                 client_cert=d / "alice.pem", client_key=d / "alice.key",
                 client_subject=alice_name.rfc4514_string(),
                 stranger_cert=d / "mallory.pem", stranger_key=d / "mallory.key",
                 ca2_cert=d / "ca2.pem", server2_cert=d / "server2.pem",
                 server2_key=d / "server2.key", server2_der=server2.public_bytes(der))
