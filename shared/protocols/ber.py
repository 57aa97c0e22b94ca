"""BER read as DER: what CMS peers send, turned into the DER that asn1crypto and signature
checks need. Pure.

BER leaves a sender two choices DER fixes: indefinite lengths (closed by an end-of-contents
marker), and strings cut into a constructed series of chunks (each primitive or constructed
again, of definite or indefinite length). Streaming CMS encoders use both, e.g. for an
EnvelopedData's encryptedContent or a SignedData's eContent. :func:`to_der` re-encodes a value
with definite lengths and every string in one primitive piece; whatever was DER already comes
out byte for byte as it went in (certificates keep their signatures). It does not sort SET OFs:
a signature check that needs that does it itself.

A universal tag says what a value is, so a constructed OCTET STRING or PrintableString is
merged wherever it appears. An IMPLICIT context-specific tag hides the type: a constructed [0]
holding OCTET STRINGs may be an EXPLICIT wrapper around one string, or an implicitly tagged
string in chunks (encryptedContent [0] IMPLICIT OCTET STRING). A small grammar of the
structure says which: :class:`Seq` (the components of a SEQUENCE, matched in order by tag),
:class:`Each` (every element of a SET OF), ``OCTETS`` (an implicitly tagged OCTET STRING);
everything else is ``ANY``, read by its universal tags alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: (class, number) of a tag: class 0 universal, 1 application, 2 context-specific, 3 private.
Tag = tuple[int, int]

BIT_STRING: Tag = (0, 3)
INTEGER: Tag = (0, 2)
OCTET_STRING: Tag = (0, 4)
OID: Tag = (0, 6)
SEQUENCE: Tag = (0, 16)
SET: Tag = (0, 17)


def context(number: int) -> Tag:
    return 2, number


#: Universal types BER may send constructed: the strings, and the times (which are strings too).
_STRINGS = frozenset((0, n) for n in (3, 4, 12, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 30))
#: Nesting deeper than this is an attack or garbage; CMS with certificates needs about 15.
MAX_DEPTH = 48
#: Length octets of a long-form length: 4 cover 4 GiB, far beyond any message.
_MAX_LENGTH_OCTETS = 4
_MAX_TAG_OCTETS = 4


class BerError(ValueError):
    """Input that is not a BER encoding."""


class _Node:
    """How to read a constructed value's elements."""

    def nodes_for(self, tags: list[Tag]) -> list[_Node]:
        """The node for each element, given the elements' tags in order."""
        return [ANY] * len(tags)


class _Named(_Node):
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Read by universal tags alone.
ANY: _Node = _Named("ANY")
#: An OCTET STRING, under whatever (implicit) tag it has: merged when constructed.
OCTETS: _Node = _Named("OCTETS")


class Seq(_Node):
    """A SEQUENCE's components in order, each a choice of tag -> node (``None``: any tag).
    An element goes to the first component from the current position whose choice names
    its tag, so optional components may be absent; an element that fits none is ``ANY``."""

    def __init__(self, *components: Mapping[Tag | None, _Node]) -> None:
        self.components = components

    def nodes_for(self, tags: list[Tag]) -> list[_Node]:
        nodes, position = [], 0
        for tag in tags:
            node = ANY
            for index in range(position, len(self.components)):
                choice = self.components[index]
                found = choice.get(tag, choice.get(None))
                if found is not None:
                    node, position = found, index + 1
                    break
            nodes.append(node)
        return nodes


class Each(_Node):
    """A SET OF / SEQUENCE OF (or an EXPLICIT wrapper): every element by its tag (``None``: any)."""

    def __init__(self, choice: Mapping[Tag | None, _Node]) -> None:
        self.choice = choice

    def nodes_for(self, tags: list[Tag]) -> list[_Node]:
        return [self.choice.get(tag, self.choice.get(None, ANY)) for tag in tags]


@dataclass(frozen=True, slots=True)
class _Tlv:
    tag: Tag
    #: The identifier octets with the constructed bit cleared.
    ident: bytes
    #: The contents of a primitive value.
    value: bytes
    #: The elements of a constructed value; None for a primitive one.
    elements: tuple[_Tlv, ...] | None
    #: Where the value lies in the input when all of it is DER by its universal tags (definite,
    #: shortest lengths, strings in one piece): then it is copied as it is, unless the grammar
    #: puts an implicitly tagged string inside it.
    der_span: tuple[int, int] | None


def to_der(data: bytes, grammar: _Node = ANY) -> bytes:
    """``data`` (one BER value, nothing after it) with definite lengths and its strings
    primitive, the implicitly tagged ones ``grammar`` names included. BerError if it is not BER."""
    tlv, end = _parse(data, 0, len(data), 0)
    if end != len(data):
        raise BerError(f"{len(data) - end} octets follow the encoded value")
    return _encode(data, tlv, grammar)


# --- reading ------------------------------------------------------------------------------

def _parse(data: bytes, pos: int, end: int, depth: int) -> tuple[_Tlv, int]:
    if depth > MAX_DEPTH:
        raise BerError(f"the value is nested more than {MAX_DEPTH} levels deep")
    if pos >= end:
        raise BerError("the encoding ends in the middle of a value")
    begin = pos
    first = data[pos]
    pos += 1
    if first == 0:
        raise BerError("an end-of-contents marker outside a value of indefinite length")
    constructed = bool(first & 0x20)
    number, ident = first & 0x1F, bytes([first & 0xDF])
    if number == 0x1F:  # high tag number: base 128, most significant first
        number = 0
        for _ in range(_MAX_TAG_OCTETS):
            if pos >= end:
                raise BerError("the encoding ends in the middle of a tag")
            octet = data[pos]
            pos += 1
            ident += bytes([octet])
            number = number << 7 | octet & 0x7F
            if not octet & 0x80:
                break
        else:
            raise BerError("a tag number is too large")
    tag = (first >> 6, number)
    if pos >= end:
        raise BerError("the encoding ends before a length")
    length = data[pos]
    pos += 1
    if length == 0x80:
        if not constructed:
            raise BerError("a primitive value has an indefinite length")
        elements = []
        while True:
            if pos + 2 > end:
                raise BerError("a value of indefinite length has no end-of-contents marker")
            if data[pos] == 0 and data[pos + 1] == 0:
                return _Tlv(tag, ident, b"", tuple(elements), None), pos + 2
            element, pos = _parse(data, pos, end, depth + 1)
            elements.append(element)
    shortest = True
    if length & 0x80:
        size = length & 0x7F
        if size > _MAX_LENGTH_OCTETS:
            raise BerError(f"a length of {size} octets is too long")
        if pos + size > end:
            raise BerError("the encoding ends in the middle of a length")
        length = int.from_bytes(data[pos:pos + size], "big")
        pos += size
        shortest = length >= 0x80 and size == (length.bit_length() + 7) // 8
    stop = pos + length
    if stop > end:
        raise BerError("a value is longer than the data holding it")
    if not constructed:
        return _Tlv(tag, ident, data[pos:stop], None, (begin, stop) if shortest else None), stop
    elements = []
    while pos < stop:
        element, pos = _parse(data, pos, stop, depth + 1)
        elements.append(element)
    der = shortest and tag not in _STRINGS and all(e.der_span is not None for e in elements)
    return _Tlv(tag, ident, b"", tuple(elements), (begin, stop) if der else None), stop


# --- writing ------------------------------------------------------------------------------

def _header(ident: bytes, constructed: bool, length: int) -> bytes:
    first = bytes([ident[0] | 0x20 if constructed else ident[0]]) + ident[1:]
    if length < 0x80:
        return first + bytes([length])
    size = (length.bit_length() + 7) // 8
    return first + bytes([0x80 | size]) + length.to_bytes(size, "big")


def _encode(data: bytes, tlv: _Tlv, node: _Node) -> bytes:
    if tlv.der_span is not None and (node is ANY or tlv.elements is None):
        return data[tlv.der_span[0]:tlv.der_span[1]]
    if tlv.elements is None:
        return _header(tlv.ident, False, len(tlv.value)) + tlv.value
    if tlv.tag == BIT_STRING:
        value = _merge_bits(tlv)
        return _header(tlv.ident, False, len(value)) + value
    if tlv.tag in _STRINGS or node is OCTETS:
        value = _merge(tlv, {OCTET_STRING, tlv.tag} if tlv.tag in _STRINGS else {OCTET_STRING})
        return _header(tlv.ident, False, len(value)) + value
    nodes = node.nodes_for([element.tag for element in tlv.elements])
    body = b"".join(_encode(data, element, child) for element, child in zip(tlv.elements, nodes, strict=True))
    return _header(tlv.ident, True, len(body)) + body


def _merge(tlv: _Tlv, chunk_tags: set[Tag]) -> bytes:
    """The octets of a string sent in chunks (X.690 8.7.3: the chunks are OCTET STRINGs)."""
    assert tlv.elements is not None
    parts = []
    for chunk in tlv.elements:
        if chunk.tag not in chunk_tags:
            raise BerError(f"a string sent in chunks holds a value of tag {chunk.tag}, not a string")
        parts.append(chunk.value if chunk.elements is None else _merge(chunk, chunk_tags))
    return b"".join(parts)


def _merge_bits(tlv: _Tlv) -> bytes:
    """A BIT STRING sent in chunks: each chunk opens with its count of unused bits, which only
    the last may have."""
    pieces: list[bytes] = []

    def collect(chunk: _Tlv) -> None:
        if chunk.tag != BIT_STRING:
            raise BerError(f"a bit string sent in chunks holds a value of tag {chunk.tag}")
        if chunk.elements is None:
            if not chunk.value or chunk.value[0] > 7 or (len(chunk.value) == 1 and chunk.value[0]):
                raise BerError("a bit string chunk has a bad count of unused bits")
            pieces.append(chunk.value)
        else:
            for inner in chunk.elements:
                collect(inner)

    for element in tlv.elements or ():
        collect(element)
    if any(piece[0] for piece in pieces[:-1]):
        raise BerError("a bit string chunk other than the last has unused bits")
    return bytes([pieces[-1][0] if pieces else 0]) + b"".join(piece[1:] for piece in pieces)
