"""The four CA messages the search endpoint reads and writes, as bytes (sans-I/O).

Every CA message starts with a 16-byte big-endian header: command, payload size, data
type, data count (u16 each), then two u32 parameters; the payload follows, padded to a
multiple of 8 bytes. A payload size of 0xFFFF with a data count of 0 marks the extended
header, whose real size and count follow as two more u32 (TCP only in practice, parsed
anyway). The endpoint needs VERSION and SEARCH in, VERSION, SEARCH replies and beacons
(RSRV_IS_UP) out; the layouts are those of EPICS base's ``caProto.h``, which caproto's
tests of this module check byte for byte. Kept here rather than taken from caproto,
whose import (with numpy) cost the daemon ~80 ms of its start and ~15 MB.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHII")
EXTENDED_SIZES = struct.Struct("!II")
VERSION = 0
SEARCH = 6
RSRV_IS_UP = 13  # the beacon
MINOR_VERSION = 13  # CA 4.13, what rsrv speaks and announces
SEQUENCE_NO_IS_VALID = 1  # VERSION data type flag: parameter 1 holds the datagram's sequence number
ANY_ADDRESS = 0xFFFFFFFF  # SEARCH reply address INADDR_BROADCAST: "the address this reply came from"
_SEARCH_REPLY_PAYLOAD = struct.Struct("!H6x")  # the server's minor version, padded to 8


class MalformedDatagram(ValueError):
    """The bytes end inside a header or a payload."""


@dataclass(frozen=True)
class Message:
    """One message of a datagram: header fields and payload."""

    command: int
    data_type: int
    data_count: int
    parameter1: int
    parameter2: int
    payload: bytes

    @property
    def name(self) -> str:
        """A SEARCH request's channel name: the payload up to its first NUL."""
        return self.payload.split(b"\0", 1)[0].decode("latin-1")


def parse_datagram(data: bytes) -> list[Message]:
    """Every message in ``data``, in order; MalformedDatagram if it is cut short."""
    messages: list[Message] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            raise MalformedDatagram(f"{len(data) - offset} bytes left where a header needs {HEADER.size}")
        command, size, data_type, count, parameter1, parameter2 = HEADER.unpack_from(data, offset)
        offset += HEADER.size
        if size == 0xFFFF and count == 0:
            if len(data) - offset < EXTENDED_SIZES.size:
                raise MalformedDatagram("extended header cut short")
            size, count = EXTENDED_SIZES.unpack_from(data, offset)
            offset += EXTENDED_SIZES.size
        if len(data) - offset < size:
            raise MalformedDatagram(f"payload of {size} bytes cut short at {len(data) - offset}")
        messages.append(Message(command, data_type, count, parameter1, parameter2, data[offset:offset + size]))
        offset += size
    return messages


def version_reply(sequence: int) -> bytes:
    """The VERSION message that opens every reply datagram, echoing the client's sequence number."""
    return HEADER.pack(VERSION, 0, SEQUENCE_NO_IS_VALID, MINOR_VERSION, sequence, 0)


def search_reply(port: int, cid: int) -> bytes:
    """"``cid`` is served on TCP ``port`` of the address this reply comes from"."""
    return HEADER.pack(SEARCH, _SEARCH_REPLY_PAYLOAD.size, port, 0, ANY_ADDRESS, cid) + \
        _SEARCH_REPLY_PAYLOAD.pack(MINOR_VERSION)


def beacon(server_port: int, beacon_id: int) -> bytes:
    """RSRV_IS_UP from address 0: the receiver substitutes the datagram's source address."""
    return HEADER.pack(RSRV_IS_UP, 0, MINOR_VERSION, server_port, beacon_id, 0)
