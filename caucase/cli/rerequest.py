"""caucase-rerequest: a fresh key and a CSR copying the subject and extensions of a template.

Lets a service whose template CSR was prepared elsewhere (by an operator, or by a deployment
tool) request a certificate without ever moving a private key around (cli.md 6).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from cryptography import x509

from caucase import __version__
from caucase.cli.key_options import (
    RENEWAL_DEFAULT,
    check_key_options,
    key_len_option,
    key_type_option,
)
from caucase.crypto import keys, pemfile, x509util
from caucase.exceptions import CaucaseError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caucase-rerequest",
        description="Generate a new private key and a CSR signed by it, copying the subject "
        "and every extension of an existing, correctly signed CSR.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--template",
        required=True,
        help="Existing PEM CSR, correctly signed, whose subject and extensions are copied.",
    )
    parser.add_argument(
        "--csr", required=True, help="Where to write the new PEM CSR (replaced if it exists)."
    )
    parser.add_argument(
        "--key",
        required=True,
        help="Where to write the new PEM private key, created 0600. An existing file is "
        "only replaced with --force.",
    )
    for name, settings in (
        key_type_option(f"{RENEWAL_DEFAULT} (the template's)"),
        key_len_option("the size of the template's RSA key, else 2048"),
    ):
        parser.add_argument(name, **settings)
    parser.add_argument(
        "--force",
        action="store_true",
        help="Replace an existing --key file (its old key is lost).",
    )
    return parser


def copy_request(
    template: x509.CertificateSigningRequest, key: keys.PrivateKey
) -> x509.CertificateSigningRequest:
    """A CSR for `key` with the template's subject and extensions (criticality kept).

    Other CSR attributes (challengePassword...) are deliberately not copied."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(template.subject)
    for extension in template.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(key, keys.signature_hash(key))


def rerequest(
    template_path: str,
    csr_path: str,
    key_path: str,
    key_type: str | None = None,
    key_len: int | None = None,
    force: bool = False,
) -> None:
    """Write the new key (atomically, 0600 when new) before the CSR that names it; the key
    is like the template's unless the options say otherwise. An existing key file is kept
    unless `force`: it may be the key of a certificate in use."""
    if not force and os.path.lexists(key_path):
        raise CaucaseError(f"{key_path} exists: not replacing a private key without --force")
    template = x509.load_pem_x509_csr(pemfile.read_one_csr(template_path))
    key = keys.generate(keys.spec_from_options(key_type, key_len, template.public_key()))
    csr = copy_request(template, key)
    pemfile.write_file(key_path, keys.dump_private_key(key), private=True)
    pemfile.write_file(csr_path, x509util.dump_certificate_request(csr))


def main(argv: Sequence[str] | None = None, stderr: TextIO | None = None) -> int:
    """Exit 0 on success, 1 when the template or a file is unusable; one line on stderr."""
    err = stderr or sys.stderr
    parser = _parser()
    args = parser.parse_args(argv)
    check_key_options(parser, args)
    try:
        rerequest(args.template, args.csr, args.key, args.key_type, args.key_len, args.force)
    except (OSError, ValueError, CaucaseError) as error:
        print(f"caucase-rerequest: {error}", file=err)
        return 1
    print(f"caucase-rerequest: new key in {args.key}, new CSR in {args.csr}", file=err)
    return 0
