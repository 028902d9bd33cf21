"""Text as EPICS records hold it: bytes, shown as UTF-8 where they are UTF-8.

A stringin/stringout VAL or a long string's char array holds bytes, sized in bytes, ended by
a NUL. CA clients write any bytes (Latin-1 from an old panel, UTF-8 from a new one); PVA
clients write UTF-8. The one rule every layer uses (the config schema's size check, the
worker's writes and reads of its records, the autosave file):

- A record's bytes are a Python ``str`` decoded as UTF-8 with ``surrogateescape``: a byte
  that is not part of valid UTF-8 is the lone surrogate U+DC80..U+DCFF of that byte, so
  ``b"caf\\xe9"`` is ``"caf\\udce9"`` and ``text_bytes`` gives the same bytes back. Valid
  UTF-8 is ordinary text. Any other lone surrogate (which no record can hold) is U+FFFD.
- A value too long for its record keeps its longest prefix that fits, as EPICS keeps a
  prefix of an over-long put, but cut between characters: a UTF-8 character EPICS cut in
  two (a PVA put of 20 ``é``, 40 bytes, into a 39-byte string) loses its first half too.
  Bytes that are not UTF-8 text are kept as EPICS's byte prefix. So a value at exactly the
  limit that is UTF-8 but for its last 1-3 bytes (which could start a character) loses them.
- What plugins and logs are shown is ``readable``: UTF-8, a byte that is not, U+FFFD (as
  pythonSoftIOC decodes it), so no surrogate ever reaches plugin code or a log line.

Pure; the SDK, the schema and the worker import it.
"""

from __future__ import annotations

import codecs

_ESCAPED = range(0xDC80, 0xDD00)  # surrogateescape's stand-ins for the bytes 0x80..0xFF


def text_bytes(text: str) -> bytes:
    """The bytes a record holds for ``text`` (UTF-8; escaped bytes as themselves)."""
    try:
        return str.encode(text, "utf-8", "surrogateescape")  # str's: a subclass may override encode
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF and ord(c) not in _ESCAPED else c
                       for c in text).encode("utf-8", "surrogateescape")


def held_text(data: bytes) -> str:
    """The text of the bytes a record holds: up to the first NUL (a C string's end)."""
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def is_utf8(text: str) -> bool:
    """Whether ``text``'s record bytes are all valid UTF-8 (no escaped byte)."""
    return not any(ord(c) in _ESCAPED for c in text)


def readable(text: str) -> str:
    """``text`` as plugins and logs see it: UTF-8, each byte that is not as U+FFFD."""
    return text if is_utf8(text) else text_bytes(text).decode("utf-8", "replace")


def fit_bytes(data: bytes, size: int) -> bytes:
    """The bytes of ``data`` (to its first NUL) a field of ``size`` bytes keeps: all when
    they fit short of the limit; else the first ``size`` (EPICS's prefix), less the start of a
    character the limit cut in two when the rest is UTF-8 text. Bytes that are not UTF-8
    are kept as EPICS keeps them: a 39-byte Latin-1 text ending in 0xE9 is not cut."""
    data = data.split(b"\0", 1)[0]
    if len(data) < size:
        return data
    prefix = data[:size]
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        whole = decoder.decode(prefix, final=False)  # holds back a sequence the cut left incomplete
    except UnicodeDecodeError:
        return prefix  # not UTF-8 text: bytes, of which EPICS's prefix is what is kept
    return whole.encode("utf-8")


def fit_text(text: str, size: int) -> str:
    """``text`` as a field of ``size`` bytes keeps it (``fit_bytes``)."""
    return held_text(fit_bytes(text_bytes(text), size))
