"""PKI helpers: key generation, subject names, self-signed certificates and the parsed
view of a certificate that the API shows. Pure functions over ``cryptography`` objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from ipaddress import ip_address

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.enrollment import EnrollmentParameters
from shared.enums import KeyType
from shared.errors import ValidationError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
CURVES = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}


def generate_private_key(key_type: KeyType | str, key_size: int) -> PrivateKey:
    key_type = KeyType(key_type)
    if key_type is KeyType.RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    if key_type is KeyType.ECDSA:
        return ec.generate_private_key(CURVES[key_size])
    return ed25519.Ed25519PrivateKey.generate()


def signing_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    """The hash a key signs with: none for EdDSA, SHA-384/512 for the larger curves."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA512()
    return hashes.SHA256()


@dataclass(frozen=True, kw_only=True)
class DeviceIdentity:
    """What a device knows about itself and may put into its certificate requests."""

    serial: str
    fqdn: str = ""
    ip_address: str = ""


def subject_name(params: EnrollmentParameters, device: DeviceIdentity) -> x509.Name:
    s = params.subject
    attrs: list[x509.NameAttribute] = []
    for oid, value in (
        (NameOID.COUNTRY_NAME, s.country),
        (NameOID.STATE_OR_PROVINCE_NAME, s.state),
        (NameOID.LOCALITY_NAME, s.locality),
        (NameOID.ORGANIZATION_NAME, s.organization),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, s.organizational_unit),
        (NameOID.COMMON_NAME, s.common_name or device.fqdn or device.serial),
        (NameOID.EMAIL_ADDRESS, s.email),
    ):
        if value:
            attrs.append(x509.NameAttribute(oid, value))
    if params.include_serial_number:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, device.serial))
    return x509.Name(attrs)


def subject_alt_names(params: EnrollmentParameters, device: DeviceIdentity) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    if params.include_fqdn and device.fqdn:
        names.append(x509.DNSName(device.fqdn))
    if params.include_device_ip and device.ip_address:
        names.append(x509.IPAddress(ip_address(device.ip_address)))
    if params.subject.email:
        names.append(x509.RFC822Name(params.subject.email))
    return names


def self_signed_certificate(
    key: PrivateKey, params: EnrollmentParameters, device: DeviceIdentity, *, now: datetime, serial: int
) -> x509.Certificate:
    """The certificate a device makes for itself in a self-signed trustpoint."""
    name = subject_name(params, device)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=params.validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    sans = subject_alt_names(params, device)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, signing_hash(key))


# --- the parsed view ------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CertificateSummary:
    """What a certificate's row records: read without its extensions, which the worker, writing a
    row per certificate a device reports, does not need."""

    subject: str
    issuer: str
    serial_number: str
    not_before: datetime
    not_after: datetime
    key_algorithm: str
    key_size: int
    signature_algorithm: str
    fingerprint_sha256: str


@dataclass(frozen=True, kw_only=True)
class CertificateInfo(CertificateSummary):
    """The whole parsed view: the summary, the SHA-1 fingerprint and the extensions an operator reads."""

    fingerprint_sha1: str
    key_usage: list[str] = field(default_factory=list)
    extended_key_usage: list[str] = field(default_factory=list)
    subject_alt_names: list[str] = field(default_factory=list)
    crl_urls: list[str] = field(default_factory=list)
    ocsp_urls: list[str] = field(default_factory=list)
    is_ca: bool = False


def key_description(public_key) -> tuple[str, int]:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ECDSA", public_key.curve.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "EdDSA", 256
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "EdDSA", 456
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA", public_key.key_size
    return type(public_key).__name__, 0


_KEY_USAGE_FLAGS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign",
)


#: Names the operator reads instead of dotted OIDs (RFC 4514 only names a few attributes).
_READABLE_NAMES = {NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.SERIAL_NUMBER: "serialNumber"}


def summarize(cert: x509.Certificate) -> CertificateSummary:
    return CertificateSummary(**_summary_fields(cert))


def _summary_fields(cert: x509.Certificate) -> dict[str, object]:
    key_algorithm, key_size = key_description(cert.public_key())
    return dict(
        subject=cert.subject.rfc4514_string(_READABLE_NAMES),
        issuer=cert.issuer.rfc4514_string(_READABLE_NAMES),
        serial_number=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_algorithm=key_algorithm,
        key_size=key_size,
        signature_algorithm=getattr(cert.signature_algorithm_oid, "_name", None)
        or cert.signature_algorithm_oid.dotted_string,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def describe(cert: x509.Certificate) -> CertificateInfo:
    info = _summary_fields(cert)
    info["fingerprint_sha1"] = cert.fingerprint(hashes.SHA1()).hex()  # shown to operators, never relied on
    ext = cert.extensions
    extras: dict[str, object] = {}
    for e in ext:
        value = e.value
        if isinstance(value, x509.KeyUsage):
            flags = [f for f in _KEY_USAGE_FLAGS if getattr(value, f)]
            if value.key_agreement:
                flags += [f for f in ("encipher_only", "decipher_only") if getattr(value, f)]
            extras["key_usage"] = flags
        elif isinstance(value, x509.ExtendedKeyUsage):
            extras["extended_key_usage"] = [getattr(o, "_name", o.dotted_string) for o in value]
        elif isinstance(value, x509.SubjectAlternativeName):
            extras["subject_alt_names"] = [_general_name(g) for g in value]
        elif isinstance(value, x509.CRLDistributionPoints):
            extras["crl_urls"] = [
                n.value for dp in value for n in (dp.full_name or [])
                if isinstance(n, x509.UniformResourceIdentifier)
            ]
        elif isinstance(value, x509.AuthorityInformationAccess):
            extras["ocsp_urls"] = [
                d.access_location.value for d in value
                if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP
            ]
        elif isinstance(value, x509.BasicConstraints):
            extras["is_ca"] = value.ca
    return CertificateInfo(**info, **extras)  # type: ignore[arg-type]


def _general_name(name: x509.GeneralName) -> str:
    prefix = {
        x509.DNSName: "DNS", x509.IPAddress: "IP", x509.RFC822Name: "email",
        x509.UniformResourceIdentifier: "URI",
    }.get(type(name), type(name).__name__)
    return f"{prefix}:{name.value}"


def load_certificates(data: bytes | str) -> list[x509.Certificate]:
    """PEM (one or many) or a single DER certificate; a clear error for anything else."""
    if isinstance(data, str):
        data = data.encode()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise ValidationError(
            "not a certificate: expected PEM or DER X.509 data", code="invalid_certificate"
        ) from exc


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()
