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
- a datagram with nothing found sends nothing (no lone VERSION header).
"""

from __future__ import annotations

import logging

import caproto

from iochost.discovery.names import NameTable

log = logging.getLogger(__name__)

CA_MINOR_VERSION = caproto.DEFAULT_PROTOCOL_VERSION  # 13, what rsrv announces
MIN_CLIENT_VERSION = 4  # rsrv's CA_VSUPPORTED
MAX_DATAGRAM = 1024  # rsrv's MAX_UDP_SEND; one libca search datagram always fits
SEQUENCE_NO_IS_VALID = 1  # VERSION data_type flag: parameter1 holds the sequence number
ANY_SERVER_ADDRESS = "255.255.255.255"  # INADDR_BROADCAST: use the reply's source address

Address = tuple[str, int]


class SearchResponder:
    """Answers CA UDP name searches from a :class:`NameTable`. Holds no I/O and no state
    between datagrams, so one instance can serve any number of sockets."""

    def __init__(self, table: NameTable, *, max_datagram: int = MAX_DATAGRAM) -> None:
        self.table = table
        self.max_datagram = max_datagram
        self._parser = caproto.Broadcaster(caproto.SERVER)

    def datagram_received(self, data: bytes, sender: Address) -> list[bytes]:
        """The datagrams to send back to ``sender`` (usually zero or one)."""
        try:
            commands = self._parser.recv(data, sender)
        except caproto.RemoteProtocolError as exc:
            log.debug("ignoring malformed CA datagram from %s: %s", sender, exc)
            return []
        sequence = 0
        found: list[bytes] = []
        for command in commands:
            if isinstance(command, caproto.VersionRequest):
                if command.version >= 11:  # CA_V411: the client numbers its datagrams
                    sequence = command.header.parameter1
            elif isinstance(command, caproto.SearchRequest):
                if command.version < MIN_CLIENT_VERSION:
                    break
                reply = self._answer(command)
                if reply is not None:
                    found.append(reply)
            else:
                log.debug("stopping at unexpected %s in a search datagram from %s",
                          type(command).__name__, sender)
                break
        return self._pack(found, sequence)

    def _answer(self, request: caproto.SearchRequest) -> bytes | None:
        try:
            name = request.name
        except UnicodeDecodeError:
            return None
        if not name:
            return None
        entry = self.table.lookup(name)
        if entry is None:
            return None
        # rsrv echoes the request's m_available as the cid; libca and caproto put the
        # channel id in both m_cid and m_available.
        return bytes(caproto.SearchResponse(entry.port, ANY_SERVER_ADDRESS,
                                            request.header.parameter2, CA_MINOR_VERSION))

    def _pack(self, replies: list[bytes], sequence: int) -> list[bytes]:
        if not replies:
            return []
        version = caproto.VersionResponse(CA_MINOR_VERSION)
        version.header.data_type = SEQUENCE_NO_IS_VALID
        version.header.parameter1 = sequence
        header = bytes(version)
        datagrams: list[bytes] = []
        current = bytearray(header)
        for reply in replies:
            if len(current) + len(reply) > self.max_datagram and len(current) > len(header):
                datagrams.append(bytes(current))
                current = bytearray(header)
            current += reply
        datagrams.append(bytes(current))
        return datagrams
