"""Per-cluster TLS: one CA per cluster, a node certificate (scheduler and workers) and a client
certificate (the user's ``distributed.Client``).

Every connection to a cluster's scheduler or workers is mutual TLS: both ends must present a
certificate signed by *that cluster's* CA, so a certificate of another cluster (or none) is refused.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:  # importing distributed costs ~0.5 s; the server only needs generate_cluster_tls
    from distributed import Security

IPAddress = IPv4Address | IPv6Address
VALIDITY = datetime.timedelta(days=365)
# Certificates start slightly in the past so a VM whose clock lags the control plane accepts them.
CLOCK_SKEW = datetime.timedelta(minutes=10)
# distributed disables hostname checks (clusters are reached by IP), but a SAN keeps strict
# verifiers happy and names the certificate's purpose.
NODE_DNS_NAME = "overcast-node"


@dataclass(frozen=True)
class ClusterTLS:
    """PEM strings of one cluster's TLS material. The keys are secrets: store them encrypted."""

    ca_cert: str
    ca_key: str
    node_cert: str
    node_key: str
    client_cert: str
    client_key: str

    def node_security(self) -> Security:
        return dask_security(self.ca_cert, self.node_cert, self.node_key)

    def client_security(self) -> Security:
        return dask_security(self.ca_cert, self.client_cert, self.client_key)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: a few ms to generate (RSA 2048 takes ~50-100 ms) and supported by every TLS stack.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str, cluster_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "overcast"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cluster_name[:64] or "-"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _leaf(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    ekus: list[x509.ObjectIdentifier],
    now: datetime.datetime,
    ips: Sequence[IPAddress] = (),
) -> x509.Certificate:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(NODE_DNS_NAME), *(x509.IPAddress(ip) for ip in ips)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def generate_cluster_tls(cluster_name: str) -> ClusterTLS:
    """A fresh CA and the node and client certificates it signs, for one cluster."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = _name(f"overcast {cluster_name} CA", cluster_name)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        # path_length=0: the CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        role: str, ekus: list[x509.ObjectIdentifier]
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A new key and its certificate, signed by this cluster's CA."""
        key = _key()
        subject = _name(f"overcast {cluster_name} {role}", cluster_name)
        return key, _leaf(
            subject=subject, key=key, ca_cert=ca_cert, ca_key=ca_key, ekus=ekus, now=now
        )

    # Scheduler and workers both listen (serverAuth) and dial each other (clientAuth).
    node_key, node_cert = leaf(
        "node", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    # The user's Client only dials, so its certificate cannot be used to impersonate a node.
    client_key, client_cert = leaf("client", [ExtendedKeyUsageOID.CLIENT_AUTH])
    return ClusterTLS(
        ca_cert=_cert_pem(ca_cert),
        ca_key=_key_pem(ca_key),
        node_cert=_cert_pem(node_cert),
        node_key=_key_pem(node_key),
        client_cert=_cert_pem(client_cert),
        client_key=_key_pem(client_key),
    )


def issue_dashboard_cert(
    ca_cert_pem: str, ca_key_pem: str, cluster_name: str, ips: Sequence[IPAddress]
) -> tuple[str, str]:
    """(certificate, key) PEM for a scheduler's HTTPS dashboard, valid for its IP addresses.

    The node certificate names no address (it is made before the VM exists); a browser or
    client that trusts the cluster's CA checks the dashboard's address against these SANs.
    """
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the cluster's CA key is not an EC key")
    key = _key()
    cert = _leaf(subject=_name(f"overcast {cluster_name} dashboard", cluster_name), key=key,
                 ca_cert=ca_cert, ca_key=ca_key, ekus=[ExtendedKeyUsageOID.SERVER_AUTH],
                 now=datetime.datetime.now(datetime.UTC), ips=ips)
    return _cert_pem(cert), _key_pem(key)


def dask_security(ca_cert: str, cert: str, key: str) -> Security:
    """A ``distributed.Security`` that requires TLS, from PEM *contents* (not file paths).

    distributed takes PEM text wherever it takes a path (it tells them apart by the newline).
    Its TLS contexts always set ``verify_mode = CERT_REQUIRED`` on both the listening and the
    dialling side, so a peer without a certificate signed by ``ca_cert`` is refused
    (``tests/unit/test_security.py`` checks this). Caveat: Python's ``ssl`` can only load a
    certificate chain from files, so distributed writes cert and key to a private temporary
    directory (mode 0700) for the duration of one ``load_cert_chain`` call and deletes it.
    """
    from distributed import Security

    for label, pem in (("ca_cert", ca_cert), ("cert", cert), ("key", key)):
        if "-----BEGIN" not in pem:
            raise ValueError(f"{label} is not PEM text")
    return Security(
        require_encryption=True,
        tls_ca_file=ca_cert,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )
