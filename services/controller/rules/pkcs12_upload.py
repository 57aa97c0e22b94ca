"""Rules a PKCS#12 upload must satisfy before anything is stored. Pure: the file's name and
bytes in, the trustpoint name out, or an error with a stable code.

The file itself is only checked for its structure here: without the passphrase nothing more
can be read, and the device decides about its encryption (weak or not) when it opens it.
"""

from __future__ import annotations

import base64
import binascii

from shared.enrollment import TRUSTPOINT_NAME
from shared.errors import ValidationError
from shared.pkcs12 import MAX_PKCS12_BYTES, Protection, check_size, inspect

#: Largest request body an upload may have: the file base64-encoded in JSON, or in a form,
#: with room for the other fields. Anything larger is refused before it is read in full.
MAX_UPLOAD_BODY = MAX_PKCS12_BYTES * 2 + 16 * 1024


def trustpoint_name(filename: str, name: str | None = None) -> str:
    """The name the enrollment object and its trustpoints get: the file's name without its
    extension ("vpn-gateway.p12" -> "vpn-gateway"), unless ``name`` is given."""
    if name is not None:
        if not TRUSTPOINT_NAME.fullmatch(name):
            raise ValidationError(
                f"name {name!r} is not a valid trustpoint name: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
                code="invalid_name",
            )
        return name
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    if not TRUSTPOINT_NAME.fullmatch(stem):
        raise ValidationError(
            f"the file name {base!r} cannot name a trustpoint ({stem!r} is not 1-64 letters, digits, '.', "
            "'_' or '-' starting with a letter or digit): rename the file, e.g. vpn-gateway.p12, or give a "
            "name",
            code="invalid_name",
        )
    return stem


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(
            "pkcs12_base64 is not base64: send the file's bytes base64-encoded", code="invalid_pkcs12"
        ) from None


def check_file(content: bytes) -> tuple[Protection, ...]:
    """At most 24 KiB, and a PKCS#12 structure."""
    check_size(len(content))
    return inspect(content)
