"""A cuttable TCP proxy, and the smallest MongoDB wire-protocol server pymongo will talk to.

No MongoDB server exists on this machine, so the server behind the proxy is a stand-in: it
answers the handshake (``hello``/``isMaster``) as a standalone MongoDB 7 would and acknowledges
every other command with an empty but well-formed reply (``find`` returns no documents, writes
report one document). It stores nothing. What the tests exercise is the real pymongo client and
the real network path through the proxy, which the test cuts and restores.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from datetime import UTC, datetime
from typing import Any

import bson
from bson.int64 import Int64

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _command_reply(command: dict[str, Any]) -> dict[str, Any]:
    name = next(iter(command), "")
    if name.lower() in ("hello", "ismaster"):
        return {
            "ismaster": True,
            "isWritablePrimary": True,
            "helloOk": True,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": datetime.now(UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "ok": 1.0,
        }
    if name == "find":
        ns = f"{command.get('$db', 'test')}.{command['find']}"
        return {"cursor": {"firstBatch": [], "id": Int64(0), "ns": ns}, "ok": 1.0}
    if name in ("update", "delete"):
        return {"n": 1, "nModified": 1, "ok": 1.0}
    if name == "insert":
        return {"n": len(command.get("documents", [])), "ok": 1.0}
    return {"ok": 1.0}


class MongoWireStandin:
    """Answers OP_QUERY (the legacy handshake) and OP_MSG on a free loopback port."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._stopped = threading.Event()

    def __enter__(self) -> MongoWireStandin:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._listener.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            while (header := _read_exact(conn, HEADER.size)) is not None:
                length, request_id, _, opcode = HEADER.unpack(header)
                body = _read_exact(conn, length - HEADER.size)
                if body is None:
                    return
                if opcode == OP_QUERY:
                    conn.sendall(self._reply_to_query(request_id, body))
                elif opcode == OP_MSG:
                    conn.sendall(self._reply_to_msg(request_id, body))
                else:
                    return

    @staticmethod
    def _reply_to_query(request_id: int, body: bytes) -> bytes:
        name_end = body.index(b"\0", 4)
        query_start = name_end + 1 + 8  # numberToSkip, numberToReturn
        (size,) = struct.unpack_from("<i", body, query_start)
        command = bson.decode(body[query_start : query_start + size])
        doc = bson.encode(_command_reply(command))
        payload = struct.pack("<iqii", 0, 0, 0, 1) + doc
        return HEADER.pack(HEADER.size + len(payload), 0, request_id, OP_REPLY) + payload

    @staticmethod
    def _reply_to_msg(request_id: int, body: bytes) -> bytes:
        # flagBits, then section kind 0 (the command document) first, as pymongo sends it.
        assert body[4] == 0, "expected the command document first"
        (size,) = struct.unpack_from("<i", body, 5)
        command = bson.decode(body[5 : 5 + size])
        payload = struct.pack("<i", 0) + b"\0" + bson.encode(_command_reply(command))
        return HEADER.pack(HEADER.size + len(payload), 0, request_id, OP_MSG) + payload


class CuttableProxy:
    """Forwards loopback TCP connections to ``upstream_port`` until ``cut()``: then every
    connection is reset and new ones are closed at once, until ``restore()``."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._cut = False

    def __enter__(self) -> CuttableProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self.cut()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()  # RST, as a dropped network path or a dead server looks

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cut
            if cut:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
