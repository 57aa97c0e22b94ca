"""An imported identity certificate's CA certificate must carry the CA flag in its basic
constraints, unless the enrollment object skips that check (skip_ca_flag_check)."""

from __future__ import annotations

import pytest

from shared.certificate_import import check_identity_import
from shared.errors import ValidationError
from tests.support.clock import START
from tests.support.revocation_ca import LEAF_KEY, TestCa


def test_a_ca_certificate_without_the_flag_is_refused_unless_the_check_is_skipped():
    flagless = TestCa("Flagless CA", ca_flag=False)
    cert = flagless.issue("fw1.example.com")
    check = dict(request_public_key=LEAF_KEY.public_key(), installed_ca=[], supplied_ca=[flagless.cert],
                 weak_crypto=False, now=START)
    with pytest.raises(ValidationError) as refused:
        check_identity_import(cert, **check)
    assert refused.value.code == "not_a_ca_certificate"
    assert "no CA flag in its basic constraints" in refused.value.message
    assert "skip_ca_flag_check" in refused.value.message
    accepted = check_identity_import(cert, **check, skip_ca_flag_check=True)
    assert accepted.ca_chain == (flagless.cert,)


def test_a_proper_ca_certificate_needs_no_setting():
    ca = TestCa("Proper CA")
    accepted = check_identity_import(ca.issue(), request_public_key=LEAF_KEY.public_key(), installed_ca=[],
                                     supplied_ca=[ca.cert], weak_crypto=False, now=START)
    assert accepted.ca_chain == (ca.cert,)
