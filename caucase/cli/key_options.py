"""`--key-type` and `--key-len`, shared by every command that makes keys.

`--key-len` keeps the reference's meaning (RSA bits); keys.spec_from_options turns the two
options, and the key being replaced, into the key to generate.
"""

from __future__ import annotations

import argparse
from typing import Any

from caucase.crypto import keys
from caucase.exceptions import UnsupportedKey

Option = tuple[str, dict[str, Any]]


def key_type_option(default_text: str) -> Option:
    """`--key-type {rsa,ec-p256,ec-p384,ed25519}`, its default described by `default_text`."""
    return (
        "--key-type",
        {
            "choices": keys.KEY_TYPE_NAMES,
            "help": f"Type of new keys (default: {default_text}).",
        },
    )


def key_len_option(default_text: str) -> Option:
    """`--key-len BITLENGTH`: RSA only, refused with another --key-type."""
    return (
        "--key-len",
        {
            "type": int,
            "metavar": "BITLENGTH",
            "help": f"Size of new RSA keys, in bits; RSA only (default: {default_text}).",
        },
    )


RENEWAL_DEFAULT = "the type and size of the key being replaced"


def check_key_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> keys.KeySpec:
    """The spec the options give without a key to replace; a usage error (exit 2) at once
    for a combination that can never work, rather than at the first renewal."""
    try:
        return keys.spec_from_options(args.key_type, args.key_len)
    except UnsupportedKey as error:
        parser.error(str(error))
