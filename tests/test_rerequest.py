"""caucase-rerequest: a new key and a CSR copying subject and extensions of a template."""

from __future__ import annotations

import base64
import io
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AttributeOID, NameOID

from caucase import __version__
from caucase.cli import rerequest
from tests.support.servers import OUR_BIN

PRIVATE_OID = x509.ObjectIdentifier("1.3.6.1.4.1.37476.9000.70.99")


@pytest.fixture(scope="module")
def template_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _template(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> x509.CertificateSigningRequest:
    """A template with a multi-valued RDN, mixed string types, known, critical and private
    extensions, and a challengePassword attribute that must not be copied."""
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc."),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Ops"),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.COMMON_NAME, "svc.example", _type=_ASN1Type.BMPString)]
            ),
        ]
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("svc.example"), x509.DNSName("alt.example")]
            ),
            critical=True,
        )
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(PRIVATE_OID, b"\x04\x03abc"), critical=False)
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, b"secret")
        .sign(key, hashes.SHA256())
    )


def _pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def _extensions(csr: x509.CertificateSigningRequest) -> list[tuple[str, bool, bytes]]:
    return [
        (extension.oid.dotted_string, extension.critical, extension.value.public_bytes())
        for extension in csr.extensions
    ]


def _run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    return rerequest.main(list(argv), stderr=err), err.getvalue()


def _assert_copied(
    template: x509.CertificateSigningRequest, csr_path: Path, key_path: Path, key_len: int
) -> None:
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == key_len
    assert key_path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    assert csr.public_key() != template.public_key()
    assert csr.subject.public_bytes() == template.subject.public_bytes()
    assert _extensions(csr) == _extensions(template)
    assert AttributeOID.CHALLENGE_PASSWORD not in [attribute.oid for attribute in csr.attributes]
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)


def test_copies_subject_and_every_extension_with_criticality(
    tmp_path: Path, template_key: rsa.RSAPrivateKey
) -> None:
    template = _template(template_key)
    (tmp_path / "template.csr").write_bytes(_pem(template))
    csr_path, key_path = tmp_path / "new.csr", tmp_path / "new.key"

    status, err = _run(
        "--template",
        str(tmp_path / "template.csr"),
        "--csr",
        str(csr_path),
        "--key",
        str(key_path),
        "--key-len",
        "2048",
    )

    assert (status, err) == (
        0,
        f"caucase-rerequest: new key in {key_path}, new CSR in {csr_path}\n",
    )
    _assert_copied(template, csr_path, key_path, 2048)


def test_new_key_file_is_private_and_csr_follows_umask(
    tmp_path: Path, template_key: rsa.RSAPrivateKey
) -> None:
    (tmp_path / "template.csr").write_bytes(_pem(_template(template_key)))
    old_umask = os.umask(0o022)
    try:
        status, _ = _run(
            "--temp",
            str(tmp_path / "template.csr"),
            "--csr",
            str(tmp_path / "new.csr"),
            "--key",
            str(tmp_path / "new.key"),
        )
    finally:
        os.umask(old_umask)

    assert status == 0
    assert stat.S_IMODE((tmp_path / "new.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new.csr").stat().st_mode) == 0o644
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_existing_key_file_is_kept_without_force(
    tmp_path: Path, template_key: rsa.RSAPrivateKey
) -> None:
    (tmp_path / "template.csr").write_bytes(_pem(_template(template_key)))
    key_path = tmp_path / "new.key"
    key_path.write_bytes(b"the key of a certificate in use")

    status, err = _run(
        "--template",
        str(tmp_path / "template.csr"),
        "--csr",
        str(tmp_path / "new.csr"),
        "--key",
        str(key_path),
    )

    assert status == 1
    assert err == (
        f"caucase-rerequest: {key_path} exists: not replacing a private key without --force\n"
    )
    assert key_path.read_bytes() == b"the key of a certificate in use"
    assert not (tmp_path / "new.csr").exists()


def test_existing_key_file_is_replaced_with_force_and_keeps_its_mode(
    tmp_path: Path, template_key: rsa.RSAPrivateKey
) -> None:
    template = _template(template_key)
    (tmp_path / "template.csr").write_bytes(_pem(template))
    key_path = tmp_path / "new.key"
    key_path.write_bytes(b"old content that is longer than nothing" * 200)
    key_path.chmod(0o640)

    status, _ = _run(
        "--template",
        str(tmp_path / "template.csr"),
        "--csr",
        str(tmp_path / "new.csr"),
        "--key",
        str(key_path),
        "--force",
    )

    assert status == 0
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o640
    _assert_copied(template, tmp_path / "new.csr", key_path, 2048)


def test_ec_template_gives_a_new_key_of_its_type(tmp_path: Path) -> None:
    template = _template(ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "template.csr").write_bytes(_pem(template))

    status, _ = _run(
        "--template",
        str(tmp_path / "template.csr"),
        "--csr",
        str(tmp_path / "new.csr"),
        "--key",
        str(tmp_path / "new.key"),
    )

    assert status == 0
    key = serialization.load_pem_private_key((tmp_path / "new.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    csr = x509.load_pem_x509_csr((tmp_path / "new.csr").read_bytes())
    assert csr.public_key() == key.public_key()
    assert csr.subject.public_bytes() == template.subject.public_bytes()


def _tampered(pem: bytes) -> bytes:
    """The same CSR with the last signature byte flipped."""
    body = b"".join(pem.splitlines()[1:-1])
    der = bytearray(base64.b64decode(body))
    der[-1] ^= 1
    text = base64.b64encode(bytes(der))
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + b"\n".join(lines)
        + b"\n-----END CERTIFICATE REQUEST-----\n"
    )


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(None, id="missing"),
        pytest.param(b"not pem at all\n", id="garbage"),
        pytest.param("tampered", id="bad-signature"),
        pytest.param("with-key", id="csr-and-key"),
        pytest.param("two", id="two-csrs"),
    ],
)
def test_bad_template_gives_one_line_and_writes_nothing(
    tmp_path: Path, template_key: rsa.RSAPrivateKey, content: bytes | str | None
) -> None:
    good = _pem(_template(template_key))
    template_path = tmp_path / "template.csr"
    if content == "tampered":
        template_path.write_bytes(_tampered(good))
    elif content == "with-key":
        template_path.write_bytes(
            template_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            + good
        )
    elif content == "two":
        template_path.write_bytes(good + good)
    elif isinstance(content, bytes):
        template_path.write_bytes(content)

    status, err = _run(
        "--template",
        str(template_path),
        "--csr",
        str(tmp_path / "new.csr"),
        "--key",
        str(tmp_path / "new.key"),
    )

    assert status == 1
    assert err.startswith("caucase-rerequest: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "new.key").exists()
    assert not (tmp_path / "new.csr").exists()


def test_usage_errors_and_version(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as usage:
        rerequest.main(["--csr", "x", "--key", "y"])
    assert usage.value.code == 2
    result = subprocess.run(
        [str(OUR_BIN / "caucase-rerequest"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, __version__ + "\n")


@pytest.mark.interop
def test_same_result_as_reference(
    tmp_path: Path, template_key: rsa.RSAPrivateKey, reference_bin: Path
) -> None:
    template = _template(template_key)
    (tmp_path / "template.csr").write_bytes(_pem(template))
    subprocess.run(
        [
            str(reference_bin / "caucase-rerequest"),
            "--template",
            str(tmp_path / "template.csr"),
            "--csr",
            str(tmp_path / "ref.csr"),
            "--key",
            str(tmp_path / "ref.key"),
        ],
        check=True,
    )
    status, _ = _run(
        "--template",
        str(tmp_path / "template.csr"),
        "--csr",
        str(tmp_path / "our.csr"),
        "--key",
        str(tmp_path / "our.key"),
    )

    assert status == 0
    ours = x509.load_pem_x509_csr((tmp_path / "our.csr").read_bytes())
    theirs = x509.load_pem_x509_csr((tmp_path / "ref.csr").read_bytes())
    assert ours.subject.public_bytes() == theirs.subject.public_bytes()
    assert _extensions(ours) == _extensions(theirs)
    assert [item.oid for item in ours.attributes] == [item.oid for item in theirs.attributes]
    assert stat.S_IMODE((tmp_path / "our.key").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "ref.key").stat().st_mode
    )


@pytest.mark.parametrize(
    "key_type, key_class",
    [("ed25519", ed25519.Ed25519PrivateKey), ("ec-p384", ec.EllipticCurvePrivateKey)],
)
def test_key_type_chooses_the_new_key(
    tmp_path: Path, template_key: rsa.RSAPrivateKey, key_type: str, key_class: type
) -> None:
    template = _template(template_key)
    (tmp_path / "template.csr").write_bytes(_pem(template))
    files = ["--csr", str(tmp_path / "new.csr"), "--key", str(tmp_path / "new.key")]
    status, err = _run(
        "--template", str(tmp_path / "template.csr"), *files, "--key-type", key_type
    )
    assert status == 0
    assert err == f"caucase-rerequest: new key in {files[3]}, new CSR in {files[1]}\n"
    key = serialization.load_pem_private_key((tmp_path / "new.key").read_bytes(), None)
    assert isinstance(key, key_class)
    csr = x509.load_pem_x509_csr((tmp_path / "new.csr").read_bytes())
    assert csr.is_signature_valid and csr.public_key() == key.public_key()
    assert _extensions(csr) == _extensions(template)
