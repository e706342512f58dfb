"""A managed-Kafka front door for tests: TLS and SASL/PLAIN in front of a real Tansu broker.

The embedded broker cannot require SASL here (its users live in its own memory and can only be
created by an already authenticated client), so this loopback server plays the part a managed
cluster's listener plays: it terminates TLS, answers ``SaslHandshake``/``SaslAuthenticate``
itself, refuses any other request before authentication, and after a successful login pipes
the connection unchanged to a dedicated broker that advertises the front door's address (so
every later connection a client opens comes back through here too).

It records each connection (TLS or not, mechanism, user, whether it authenticated), which is
how the tests observe that a client received the settings, and counts connections for the
``/ready`` tests. Only the Kafka request framing is parsed, and only before authentication.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ig_refresh_dagster.devstack.services import ServiceProcess, free_port, start_broker

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_AUTHENTICATION_FAILED = 58
UNSUPPORTED_SASL_MECHANISM = 33


@dataclass
class Connection:
    tls: bool
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    authenticated: bool = False
    refused: str | None = None
    api_keys: list[int] = field(default_factory=list)


class KafkaFrontDoor:
    """``users`` None: no authentication (a counting pass-through); ``tls`` from ``certs``."""

    def __init__(self, users: dict[str, str] | None, certs: Certificates | None = None) -> None:
        self.users = users
        self.certs = certs
        self.connections: list[Connection] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._broker: ServiceProcess | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, log_path: Path | None = None) -> KafkaFrontDoor:
        """The broker, then the listener; everything started is stopped again on failure."""
        context = self.certs.server_context() if self.certs else None

        async def serve() -> None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, ssl=context
            )

        try:
            self._broker = start_broker(advertised_port=self.port, log_path=log_path)
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()
            asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in self._writers:  # every pipe then ends on its own
                writer.transport.abort()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if pending:
                await asyncio.wait(pending, timeout=5)

        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
        if self._broker is not None:
            self._broker.stop()
            self._broker = None

    def __enter__(self) -> KafkaFrontDoor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(tls=writer.get_extra_info("ssl_object") is not None)
        self.connections.append(conn)
        assert self._broker is not None and self._broker.port is not None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._broker.port)
        self._writers |= {writer, up_writer}
        try:
            authenticated = self.users is None or await self._authenticate(
                conn, reader, writer, up_reader, up_writer
            )
            if authenticated:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)

    async def _authenticate(self, conn: Connection, reader, writer, up_reader, up_writer) -> bool:
        """The SASL exchange of a broker listener; True once the client logged in."""
        assert self.users is not None
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            conn.api_keys.append(api_key)
            if api_key == API_VERSIONS:  # the broker's own answer, which lists SASL support
                up_writer.write(_frame(frame))
                await up_writer.drain()
                writer.write(_frame(await _read_frame(up_reader)))
            elif api_key == SASL_HANDSHAKE:
                conn.mechanism = _string(frame, _body_offset(frame))[0]
                error = 0 if conn.mechanism == "PLAIN" else UNSUPPORTED_SASL_MECHANISM
                body = struct.pack(">hi", error, 1) + _encode_string("PLAIN")
                writer.write(_frame(struct.pack(">i", correlation) + body))
            elif api_key == SASL_AUTHENTICATE and version <= 1:
                start = _body_offset(frame)
                (size,) = struct.unpack(">i", frame[start : start + 4])
                _authzid, user, password = frame[start + 4 : start + 4 + size].split(b"\0")
                conn.username, conn.password = user.decode(), password.decode()
                conn.authenticated = self.users.get(conn.username) == conn.password
                error = 0 if conn.authenticated else SASL_AUTHENTICATION_FAILED
                message = None if conn.authenticated else "Authentication failed: bad credentials"
                body = struct.pack(">h", error) + _encode_string(message) + struct.pack(">i", 0)
                if version == 1:
                    body += struct.pack(">q", 0)
                writer.write(_frame(struct.pack(">i", correlation) + body))
                await writer.drain()
                if not conn.authenticated:
                    conn.refused = "bad credentials"
                return conn.authenticated
            else:
                conn.refused = f"api key {api_key} (version {version}) before authentication"
                return False
            await writer.drain()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _body_offset(frame: bytes) -> int:
    """After a v1 request header: api key, version, correlation id, nullable client id."""
    (client_id_len,) = struct.unpack(">h", frame[8:10])
    return 10 + max(client_id_len, 0)


def _string(frame: bytes, offset: int) -> tuple[str, int]:
    (size,) = struct.unpack(">h", frame[offset : offset + 2])
    return frame[offset + 2 : offset + 2 + size].decode(), offset + 2 + size


def _encode_string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while chunk := await source.read(65536):
        sink.write(chunk)
        await sink.drain()
    sink.close()


class Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1, written as PEM files."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ig-refresh test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.pem"
        self.cert_path = directory / "server.pem"
        self.key_path = directory / "server.key"
        self.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context
