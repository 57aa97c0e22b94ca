"""BER read as DER: indefinite lengths become definite, strings sent in chunks become one piece
(under their universal tag, or under an implicit tag where the grammar says so), DER passes
through byte for byte, and anything that is not BER raises BerError."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from services.ca_sim.authority import load_authority
from shared.protocols import ber
from shared.protocols.ber import ANY, OCTETS, BerError, Each, Seq, context


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_der_passes_through_unchanged(tmp_path):
    ca = load_authority(tmp_path)
    for cert in (ca.root, ca.issuing):
        der = cert.public_bytes(serialization.Encoding.DER)
        assert ber.to_der(der) == der
    assert ber.to_der(h("30 06 02 01 05 04 01 ff")) == h("30 06 02 01 05 04 01 ff")


@pytest.mark.parametrize(("given", "expected"), [
    # Indefinite lengths, nested.
    ("30 80 02 01 05 30 80 05 00 00 00 00 00", "30 07 02 01 05 30 02 05 00"),
    # An OCTET STRING in chunks: definite, indefinite, chunks in chunks.
    ("24 08 04 02 ab cd 04 02 ef 01", "04 04 ab cd ef 01"),
    ("24 80 04 01 ab 04 00 04 02 cd ef 00 00", "04 03 ab cd ef"),
    ("24 0c 04 01 ab 24 80 04 01 cd 00 00 04 00", "04 02 ab cd"),
    ("24 00", "04 00"),
    # Character strings and times: chunks are OCTET STRINGs (or, from some encoders, the string type).
    ("33 80 04 02 34 32 04 01 31 00 00", "13 03 34 32 31"),
    ("2c 06 0c 01 61 04 01 62", "0c 02 61 62"),
    ("37 80 04 07 32 34 30 31 30 31 30 04 06 30 30 30 30 30 5a 00 00", "17 0d 32 34 30 31 30 31 30 30 30 30 30 30 5a"),
    # A BIT STRING in chunks: only the last chunk may leave bits unused.
    ("23 80 03 02 00 ab 03 02 04 c0 00 00", "03 03 04 ab c0"),
    # A longer length than needed.
    ("04 81 02 ab cd", "04 02 ab cd"),
    ("30 82 00 03 02 01 07", "30 03 02 01 07"),
    # A high tag number keeps its identifier.
    ("bf 81 00 80 02 01 01 00 00", "bf 81 00 03 02 01 01"),
])
def test_ber_becomes_der(given, expected):
    assert ber.to_der(h(given)) == h(expected)


def test_long_values_get_long_form_lengths():
    chunks = b"".join(b"\x04\x64" + bytes([i]) * 100 for i in range(3))
    der = ber.to_der(b"\x24\x80" + chunks + b"\x00\x00")
    assert der[:4] == h("04 82 01 2c") and der[4:] == b"".join(bytes([i]) * 100 for i in range(3))


def test_an_implicitly_tagged_string_is_merged_only_where_the_grammar_says():
    """A constructed [0] holding an OCTET STRING: an EXPLICIT wrapper unless the grammar says
    it is an IMPLICIT OCTET STRING in chunks."""
    wrapper = h("a0 80 04 02 ab cd 00 00")
    assert ber.to_der(wrapper) == h("a0 04 04 02 ab cd")
    assert ber.to_der(wrapper, OCTETS) == h("80 02 ab cd")
    # In a SEQUENCE the components are matched in order: [0] first as an implicit string, then
    # [0] again as a wrapper (a SignerInfo's subjectKeyIdentifier, then its signedAttrs).
    grammar = Seq({(0, 2): ANY}, {context(0): OCTETS}, {context(0): ANY})
    sequence = h("30 80 02 01 03 a0 80 04 01 aa 04 01 bb 00 00 a0 03 04 01 cc 00 00")
    assert ber.to_der(sequence, grammar) == h("30 0c 02 01 03 80 02 aa bb a0 03 04 01 cc")
    # A missing optional component: the first [0] still finds its place.
    assert ber.to_der(h("30 80 a0 80 04 01 aa 00 00 00 00"), grammar) == h("30 03 80 01 aa")
    # Every element of a SET OF, and an explicit wrapper around a grammar.
    inner = Each({None: Seq({context(1): OCTETS})})
    given = h("31 80 a0 80 30 80 a1 80 04 01 ee 00 00 00 00 00 00 00 00")
    assert ber.to_der(given, Each({context(0): inner})) == h("31 07 a0 05 30 03 81 01 ee")


@pytest.mark.parametrize(("given", "problem"), [
    ("", "ends in the middle of a value"),
    ("30", "ends before a length"),
    ("30 05 02 01", "longer than the data"),
    ("04 80 ab 00 00", "primitive value has an indefinite length"),
    ("30 80 02 01 05", "no end-of-contents"),
    ("30 02 00 00", "end-of-contents marker outside"),
    ("30 03 02 01 05 ff", "1 octets follow"),
    ("04 85 01 00 00 00 00", "length of 5 octets"),
    ("1f ff ff ff ff 7f 00", "tag number is too large"),
    ("24 03 02 01 05", "not a string"),
    ("23 80 03 02 04 ab 03 01 00 00 00", "other than the last has unused bits"),
    ("23 80 03 01 04 00 00", "bad count of unused bits"),
])
def test_what_is_not_ber_is_refused(given, problem):
    with pytest.raises(BerError, match=problem):
        ber.to_der(h(given))


def test_nesting_is_bounded():
    with pytest.raises(BerError, match="nested more than"):
        ber.to_der(b"\x30\x80" * 5000)
    deep = b"\x30\x80" * ber.MAX_DEPTH + b"\x00\x00" * ber.MAX_DEPTH
    assert ber.to_der(deep).startswith(b"\x30")
