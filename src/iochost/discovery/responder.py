"""Sans-I/O CA name-search responder: request datagram in, reply datagrams out.

It answers the way rsrv's UDP server (``cast_server.c`` / ``camessage.c``, EPICS 7) does,
so CA clients cannot tell the daemon from an IOC:

- every reply datagram starts with a VERSION message carrying the client's search
  sequence number (libca uses it for its round-trip estimate);
- each found name gets a SEARCH reply with the serving worker's TCP port, server address
  ``0xFFFFFFFF`` (meaning "the address this reply came from", so a client connects to
  whatever address it searched: the pod IP, a Service IP, loopback) and the request's cid;
- unknown names get no reply at all: rsrv answers NOT_FOUND only on TCP name searches,
  never over UDP, whatever the DO_REPLY flag says (a UDP search may be a broadcast that
  other servers answer);
- searches from clients older than CA 4.4 are ignored, and parsing stops at the first
  message that is not VERSION or SEARCH (answers found so far are still sent);
- a datagram with nothing found sends nothing (no lone VERSION header);
- datagrams from an ignored address (``EPICS_CAS_IGNORE_ADDR_LIST``) get nothing.
"""

from __future__ import annotations

import logging

from iochost.discovery import camessages as ca
from iochost.discovery.name_table import NameTable

log = logging.getLogger(__name__)

MIN_CLIENT_VERSION = 4  # rsrv's CA_VSUPPORTED
MAX_DATAGRAM = 1024  # rsrv's MAX_UDP_SEND; one libca search datagram always fits

Address = tuple[str, int]


class SearchResponder:
    """Answers CA UDP name searches from a :class:`NameTable`. Holds no I/O and no state
    between datagrams, so one instance can serve any number of sockets."""

    def __init__(self, table: NameTable, *, max_datagram: int = MAX_DATAGRAM,
                 ignore: frozenset[str] = frozenset()) -> None:
        self.table = table
        self.max_datagram = max_datagram
        self.ignore = ignore

    def datagram_received(self, data: bytes, sender: Address) -> list[bytes]:
        """The datagrams to send back to ``sender`` (usually zero or one)."""
        if sender[0] in self.ignore:
            return []
        try:
            messages = ca.parse_datagram(data)
        except ca.MalformedDatagram as exc:
            log.debug("ignoring malformed CA datagram from %s: %s", sender, exc)
            return []
        sequence = 0
        found: list[bytes] = []
        for message in messages:
            if message.command == ca.VERSION:
                if message.data_count >= 11:  # CA_V411: the client numbers its datagrams
                    sequence = message.parameter1
            elif message.command == ca.SEARCH:
                if message.data_count < MIN_CLIENT_VERSION:  # the client's minor version
                    break
                reply = self._answer(message)
                if reply is not None:
                    found.append(reply)
            else:
                log.debug("stopping at unexpected command %d in a search datagram from %s",
                          message.command, sender)
                break
        return self._pack(found, sequence)

    def _answer(self, request: ca.Message) -> bytes | None:
        name = request.name
        if not name:
            return None
        entry = self.table.lookup(name)
        if entry is None:
            return None
        # rsrv echoes the request's m_available (parameter 2) as the cid; libca and
        # caproto put the channel id in both m_cid and m_available.
        return ca.search_reply(entry.port, request.parameter2)

    def _pack(self, replies: list[bytes], sequence: int) -> list[bytes]:
        if not replies:
            return []
        header = ca.version_reply(sequence)
        datagrams: list[bytes] = []
        current = bytearray(header)
        for reply in replies:
            if len(current) + len(reply) > self.max_datagram and len(current) > len(header):
                datagrams.append(bytes(current))
                current = bytearray(header)
            current += reply
        datagrams.append(bytes(current))
        return datagrams
