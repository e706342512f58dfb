"""A tiny RESP server on loopback that answers every data command with one fixed error line, or
resets the connection, for the Redis states a single valkey-server cannot be put in on demand:
``LOADING`` (a restart loading a large data set) and ``TRYAGAIN`` (a cluster slot mid-resharding).
A real server is used for every other state (tests/test_redis_faults.py)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

# What redis-py's connection set-up (RESP3 by default) and health checks expect.
_HANDSHAKE = {
    b"HELLO": b"%1\r\n$5\r\nproto\r\n:3\r\n",
    b"PING": b"+PONG\r\n",
    b"CLIENT": b"+OK\r\n",
    b"SELECT": b"+OK\r\n",
}


def _read_command(reader) -> list[bytes] | None:
    header = reader.readline()
    if not header:
        return None
    if not header.startswith(b"*"):
        return header.split()
    args = []
    for _ in range(int(header[1:])):
        length = int(reader.readline()[1:])
        args.append(reader.read(length + 2)[:-2])
    return args


class RespStub:
    """``error``: the reply to every data command (e.g. ``"LOADING Redis is loading"``), or
    None to reset the connection instead."""

    def __init__(self, error: str | None) -> None:
        self._error = error
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn, contextlib.suppress(OSError, ValueError), conn.makefile("rb") as reader:
            while not self._stop.is_set():
                command = _read_command(reader)
                if not command:
                    return
                if command[0].upper() in _HANDSHAKE:
                    conn.sendall(_HANDSHAKE[command[0].upper()])
                elif self._error is None:
                    # SO_LINGER 0: close() sends RST, what a crashed or failed-over peer does.
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                else:
                    conn.sendall(f"-{self._error}\r\n".encode())

    @contextlib.contextmanager
    def running(self) -> Iterator[RespStub]:
        server = threading.Thread(target=self._serve, daemon=True)
        server.start()
        try:
            yield self
        finally:
            self._stop.set()
            server.join(5)
            self._sock.close()
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            for thread in self._threads:
                thread.join(5)
