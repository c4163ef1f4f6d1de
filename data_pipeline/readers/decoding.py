"""Input bytes to text: UTF-16 by its BOM, UTF-8, then for HTML its declared or detected charset."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

BINARY_SNIFF_BYTES = 8192  # a NUL byte among the first ones marks a binary file
HTML_HEAD_BYTES = 16384  # where to look for <meta charset>
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# <meta charset="x"> and <meta http-equiv="Content-Type" content="text/html; charset=x">
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-z0-9_:.-]+)""", re.IGNORECASE)


def decode_bytes(data: bytes, html: bool = False, declared: str | None = None) -> tuple[str, int | None]:
    """Decode input bytes; returns the text and, when undecodable bytes had to be replaced by U+FFFD, the
    offset of the first one (else None).

    UTF-8 comes first (a BOM is dropped): text in another charset almost never passes for valid UTF-8, while
    declared charsets are often wrong. HTML then tries the charset its headers (`declared`) or its `<meta>`
    tag name, then the one cchardet guesses, like browsers and datatrove's WarcReader. Anything else has its
    undecodable bytes replaced.
    """
    if data.startswith(UTF16_BOMS):
        try:
            return data.decode("utf-16"), None
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        first_bad = e.start
    if html:
        for charset in _html_charsets(data, declared):
            codec = _codec_name(charset)
            if codec and codec != "utf-8":
                try:
                    return data.decode(codec), None
                except UnicodeDecodeError:
                    pass
    return data.decode("utf-8-sig", errors="replace"), first_bad


def _html_charsets(data: bytes, declared: str | None) -> Iterator[str | None]:
    yield declared
    if match := _META_CHARSET.search(data, 0, HTML_HEAD_BYTES):
        yield match.group(1).decode("ascii")
    import cchardet

    yield cchardet.detect(data)["encoding"]


def _codec_name(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None
