import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from overcast.security import NODE_DNS_NAME, ClusterTLS, dask_security, generate_cluster_tls


@pytest.fixture(scope="module")
def tls() -> ClusterTLS:
    return generate_cluster_tls("analytics")


@pytest.fixture(scope="module")
def other_tls() -> ClusterTLS:
    return generate_cluster_tls("analytics")  # same name, different cluster => different CA


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _ekus(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_all_fields_are_pem(tls: ClusterTLS) -> None:
    for name in ("ca_cert", "node_cert", "client_cert"):
        assert getattr(tls, name).startswith("-----BEGIN CERTIFICATE-----")
    for name in ("ca_key", "node_key", "client_key"):
        assert getattr(tls, name).startswith("-----BEGIN PRIVATE KEY-----")


def test_ca_is_a_ca(tls: ClusterTLS) -> None:
    ca = _cert(tls.ca_cert)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    ca.verify_directly_issued_by(ca)  # self-signed


def test_leaves_are_signed_by_the_ca(tls: ClusterTLS) -> None:
    ca = _cert(tls.ca_cert)
    for pem in (tls.node_cert, tls.client_cert):
        leaf = _cert(pem)
        leaf.verify_directly_issued_by(ca)
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_keys_match_certs(tls: ClusterTLS) -> None:
    for cert_pem, key_pem in (
        (tls.ca_cert, tls.ca_key),
        (tls.node_cert, tls.node_key),
        (tls.client_cert, tls.client_key),
    ):
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        pub = _cert(cert_pem).public_key()
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert key.public_key().public_bytes(*fmt) == pub.public_bytes(*fmt)


def test_chain_verifies_with_purpose(tls: ClusterTLS) -> None:
    store = Store([_cert(tls.ca_cert)])
    now = datetime.datetime.now(datetime.UTC)
    builder = PolicyBuilder().store(store).time(now)
    # Node: both a TLS server and a TLS client.
    builder.build_server_verifier(x509.DNSName(NODE_DNS_NAME)).verify(_cert(tls.node_cert), [])
    builder.build_client_verifier().verify(_cert(tls.node_cert), [])
    # Client: a TLS client only.
    builder.build_client_verifier().verify(_cert(tls.client_cert), [])
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName(NODE_DNS_NAME)).verify(
            _cert(tls.client_cert), []
        )


def test_ekus(tls: ClusterTLS) -> None:
    assert _ekus(_cert(tls.node_cert)) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert _ekus(_cert(tls.client_cert)) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_validity(tls: ClusterTLS) -> None:
    now = datetime.datetime.now(datetime.UTC)
    for pem in (tls.ca_cert, tls.node_cert, tls.client_cert):
        cert = _cert(pem)
        assert cert.not_valid_before_utc < now
        assert cert.not_valid_after_utc > now + datetime.timedelta(days=364)


def test_another_clusters_ca_does_not_verify(tls: ClusterTLS, other_tls: ClusterTLS) -> None:
    assert tls.ca_cert != other_tls.ca_cert
    store = Store([_cert(tls.ca_cert)])
    verifier = PolicyBuilder().store(store).build_client_verifier()
    with pytest.raises(VerificationError):
        verifier.verify(_cert(other_tls.client_cert), [])


def test_dask_security_requires_mutual_tls(tls: ClusterTLS) -> None:
    sec = dask_security(tls.ca_cert, tls.node_cert, tls.node_key)
    assert sec.require_encryption is True
    for role in ("scheduler", "worker"):
        listen = sec.get_listen_args(role)
        assert listen["require_encryption"] is True
        # The listening side demands a client certificate signed by the cluster CA.
        assert listen["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    for role in ("client", "scheduler", "worker"):
        assert sec.get_connection_args(role)["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_dask_security_from_pem_text_not_paths(tls: ClusterTLS) -> None:
    sec = tls.client_security()
    assert sec.tls_ca_file == tls.ca_cert
    assert sec.tls_client_cert == tls.client_cert
    assert "Temporary (In-memory)" in repr(sec)
    assert tls.client_key not in repr(sec)


def test_dask_security_rejects_non_pem(tls: ClusterTLS) -> None:
    with pytest.raises(ValueError, match="key"):
        dask_security(tls.ca_cert, tls.node_cert, "/etc/dask/key.pem")
