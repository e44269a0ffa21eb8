"""A throwaway certificate authority for the end-to-end tests, made at test time (nothing
stored in the repository): a CA, server certificates it signs for DNS names, PEM files Envoy
can read, and a server-side `ssl.SSLContext` that records the SNI name of every handshake.

    ca = TestCA("test CA").write(tmp)                  # tmp/test-ca.pem (ca.cert_path)
    cert = ca.issue("idp.test").write(tmp)             # tmp/idp.test.pem + .key
    ctx = server_context(cert)                         # ctx.sni_names: SNI per handshake
    JwksServer(ssl_context=ctx).start()                # https://127.0.0.1:<port>/jwks.json

Keys are P-256 (fast to make); certificates are valid from an hour ago for a day.
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jwt-claims-filter tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class ServerCert:
    """A leaf certificate and its key; `write()` puts them in `<dir>/<stem>.pem` / `.key`."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, stem: str):
        self.cert, self.key, self.stem = cert, key, stem
        self.cert_path: Path | None = None
        self.key_path: Path | None = None

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> "ServerCert":
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = directory / f"{self.stem}.pem"
        self.key_path = directory / f"{self.stem}.key"
        self.cert_path.write_bytes(self.cert_pem)
        self.key_path.write_bytes(_key_pem(self.key))
        self.key_path.chmod(0o600)
        return self


class TestCA:
    """A self-signed CA that issues server certificates. `write()` stores its certificate
    (only: the key stays in memory) as `<dir>/<stem>.pem` for Envoy's `trusted_ca`."""

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, common_name: str = "jwt-claims-filter test CA", stem: str = "test-ca"):
        self.stem = stem
        self.key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = _validity()
        subject = _name(common_name)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path: Path | None = None

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> "TestCA":
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = directory / f"{self.stem}.pem"
        self.cert_path.write_bytes(self.cert_pem)
        return self

    def issue(self, *dns_names: str, ips: tuple[str, ...] = (), common_name: str | None = None,
              stem: str | None = None) -> ServerCert:
        """A server certificate whose subjectAltName holds exactly `dns_names` (and `ips`);
        the CN is the first name unless given."""
        if not dns_names and not ips:
            raise ValueError("a server certificate needs at least one name")
        key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = _validity()
        cn = common_name or (dns_names[0] if dns_names else ips[0])
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return ServerCert(cert, key, stem or cn)


class RecordingContext(ssl.SSLContext):
    """A server SSLContext that records the SNI name each client sent (None: no SNI), in
    handshake order, in `sni_names`."""

    sni_names: list[str | None]


def server_context(cert: ServerCert) -> RecordingContext:
    """A TLS server context serving `cert` (written first if it is not on disk yet: the ssl
    module loads certificates from files), recording every handshake's SNI name."""
    if cert.cert_path is None or cert.key_path is None:
        raise ValueError("write() the certificate to a directory first")
    ctx = RecordingContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    ctx.sni_names = []
    lock = threading.Lock()

    def record(_sock, server_name, _ctx):
        with lock:
            ctx.sni_names.append(server_name)
        return None  # go on with this context's certificate

    ctx.sni_callback = record
    return ctx
