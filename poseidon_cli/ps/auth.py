"""Who may talk to a job: the per-job secret, TLS, and the log of refused peers (both planes).

Every connection of a cluster run (gRPC control and SFB, the TCP data plane, the worker-port
directory) is opened and served through one :class:`Security` value, so no plane can forget it.

Job secret (``--secret-file FILE`` or the ``POSEIDON_SECRET`` environment variable, the same on
every client; the local launcher makes one). The secret never travels: both ends derive the job
key ``HMAC-SHA256(secret, "poseidon-job-key" 0x00 job_id)`` and prove they know it.

- gRPC (every call, client interceptor -> server interceptor): metadata ``poseidon-auth`` =
  ``<unix ms, hex>.<16-byte nonce, hex>.<HMAC(key, method LF ms LF nonce), hex>``. The shard accepts
  a token whose time is within ``CLOCK_SKEW_S`` of its own clock and whose nonce it has not seen in
  that window (a captured token cannot be replayed, nor used for another method). Anything else is
  answered UNAUTHENTICATED with a message that names nothing of the job, before any handler runs.
- TCP data plane (once per connection, before any request is read): the shard sends ``PSA1`` + a
  16-byte nonce ``sn``; the client answers ``PSA1`` + its nonce ``cn`` + ``HMAC(key, "tcp-client" sn
  cn)``; the shard answers ``HMAC(key, "tcp-server" cn sn)``, so the client knows it reached the
  job's shard and not an impostor. A peer that does not finish this within ``HANDSHAKE_TIMEOUT_S``
  is dropped.

Without TLS the key authenticates the peers but not the bytes: anyone on the path can read the
traffic and could alter it. ``--tls-cert/--tls-key/--tls-ca`` adds mutual TLS on both planes (grpc's
SSL credentials and the standard library's ``ssl``): each end presents a certificate signed by the
CA, and a client checks the shard's certificate against the hosts-file host (a SAN for its name or
IP address). The secret is still required with TLS.

Refusals are logged to stderr once per peer host per ``LOG_EVERY_S`` and at most ``LOG_BURST``
lines per ``LOG_EVERY_S`` in all; they never reach the store, so they cannot stop training or get
a worker blamed.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

from ..errors import ClusterError

#: environment variable carrying the job secret (launchers pass it: ssh SendEnv, mpirun -x,
#: Slurm's exported environment, a Kubernetes Secret as env)
SECRET_ENV = "POSEIDON_SECRET"
#: shortest secret accepted, in bytes
MIN_SECRET_BYTES = 16
#: seconds a gRPC token's time may differ from the shard's clock (the machines' clocks must agree
#: this well: NTP does)
CLOCK_SKEW_S = 120.0
#: seconds a new TCP connection has to finish TLS and the secret handshake
HANDSHAKE_TIMEOUT_S = 5.0
LOG_EVERY_S = 60.0
LOG_BURST = 10

META_AUTH = "poseidon-auth"
TCP_MAGIC = b"PSA1"
NONCE_BYTES = 16
MAC_BYTES = 32
REFUSED = "poseidon: authentication required"


def load_secret(secret_file: str | None = None, environ=None) -> bytes | None:
    """The job secret from ``secret_file`` (its bytes, trailing whitespace dropped), else from
    ``$POSEIDON_SECRET``, else None. ClusterError for an unreadable file or a secret shorter than
    ``MIN_SECRET_BYTES``."""
    environ = os.environ if environ is None else environ
    if secret_file:
        try:
            with open(secret_file, "rb") as f:
                raw = f.read().rstrip()
        except OSError as e:
            raise ClusterError(f"--secret-file {secret_file}: cannot read it ({e.strerror})",
                               "give a readable file holding the job's secret") from None
        where = f"--secret-file {secret_file}"
    elif environ.get(SECRET_ENV):
        raw, where = environ[SECRET_ENV].strip().encode("utf-8"), f"${SECRET_ENV}"
    else:
        return None
    if len(raw) < MIN_SECRET_BYTES:
        raise ClusterError(f"{where}: the job secret has {len(raw)} bytes, fewer than "
                           f"{MIN_SECRET_BYTES}", "make one with: python -c 'import secrets; "
                           "print(secrets.token_hex(32))'")
    return raw


def new_secret() -> str:
    """A fresh random secret (64 hex digits) for a job started by the local launcher."""
    return secrets.token_hex(32)


def job_key(secret: bytes, job_id: str) -> bytes:
    """The key both ends derive from the secret: bound to the job, so one secret used for two
    jobs does not let a member of one into the other."""
    return hmac.new(secret, b"poseidon-job-key\0" + job_id.encode("utf-8"), hashlib.sha256).digest()


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of mutual TLS: this end's certificate and key, and the CA that signed every
    peer's certificate."""
    cert: str
    key: str
    ca: str

    @classmethod
    def from_options(cls, cert, key, ca) -> "TlsFiles | None":
        given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
        if not any(given.values()):
            return None
        missing = [k for k, v in given.items() if not v]
        if missing:
            raise ClusterError(f"TLS needs --tls-cert, --tls-key and --tls-ca; {', '.join(missing)} "
                               "missing", "give all three PEM files, or none")
        for flag, path in given.items():
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                raise ClusterError(f"{flag} {path}: cannot read it ({e.strerror})",
                                   "give a readable PEM file") from None
        return cls(cert, key, ca)

    def read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for path in (self.cert, self.key, self.ca):
            with open(path, "rb") as f:
                out.append(f.read())
        return tuple(out)


class RejectionLog:
    """Refused peers, written to ``stream`` once per host per ``every_s`` and at most ``burst``
    lines per ``every_s`` in all (a flood of strangers costs a few lines a minute)."""

    def __init__(self, name: str, stream=None, every_s: float = LOG_EVERY_S, burst: int = LOG_BURST):
        self.name, self.stream, self.every_s, self.burst = name, stream, every_s, burst
        self.counts: collections.Counter = collections.Counter()
        self._last: dict[str, float] = {}
        self._window = (0.0, 0)   # (start, lines written in it)
        self._lock = threading.Lock()

    @staticmethod
    def host_of(peer: str) -> str:
        """``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5`` or ``1.2.3.4:5`` -> the host part."""
        p = peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer
        host = p.rsplit(":", 1)[0] if ":" in p else p
        return host.strip("[]")

    def note(self, peer: str, what: str) -> bool:
        """Count a refusal of ``peer``; returns whether a line was written."""
        host = self.host_of(peer)
        now = time.monotonic()
        with self._lock:
            self.counts[host] += 1
            last = self._last.get(host)
            if last is not None and now - last < self.every_s:
                return False
            start, n = self._window
            if now - start >= self.every_s:
                start, n = now, 0
            if n >= self.burst:
                return False
            self._window = (start, n + 1)
            self._last[host] = now
            if len(self._last) > 4096:   # bounded however many addresses knock
                self._last = {h: t for h, t in self._last.items() if now - t < self.every_s}
            count = self.counts[host]
        print(f"poseidon: {self.name} refused {host} ({what}; {count} refusal(s) so far; "
              f"further ones from it are not logged for {self.every_s:.0f}s)",
              file=self.stream or sys.stderr, flush=True)
        return True


class _Replays:
    """Nonces of accepted gRPC tokens, kept as long as their token could still be valid."""

    def __init__(self, keep_s: float):
        self.keep_s = keep_s
        self._cur: set = set()
        self._prev: set = set()
        self._rotated = time.monotonic()
        self._lock = threading.Lock()

    def first_use(self, nonce: str) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._rotated >= self.keep_s:
                self._prev, self._cur, self._rotated = self._cur, set(), now
            if nonce in self._cur or nonce in self._prev:
                return False
            self._cur.add(nonce)
            return True


@dataclass(frozen=True)
class Security:
    """How this process opens and serves connections of one job: ``key`` (None: no secret, only
    for in-process tests and benchmarks) and ``tls`` (None: plain TCP)."""

    key: bytes | None = field(default=None, repr=False)
    tls: TlsFiles | None = None

    @classmethod
    def for_job(cls, secret: bytes | None, job_id: str, tls: TlsFiles | None = None) -> "Security":
        return cls(job_key(secret, job_id) if secret else None, tls)

    # ------------------------------------------------------------------ gRPC, client side
    def token(self, method: str, now: float | None = None, nonce: str | None = None) -> str:
        """The ``poseidon-auth`` metadata value for one call of ``method`` ("/service/Method")."""
        ms = format(int((time.time() if now is None else now) * 1000), "x")
        nonce = nonce or secrets.token_hex(NONCE_BYTES)
        mac = _mac(self.key, method.encode(), b"\n", ms.encode(), b"\n", nonce.encode()).hex()
        return f"{ms}.{nonce}.{mac}"

    def channel(self, address: str, options=()):
        """A gRPC channel to ``address`` that authenticates every call (and speaks TLS if set)."""
        import grpc

        options = list(options)
        if self.tls is not None:
            cert, key, ca = self.tls.read()
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                                 certificate_chain=cert)
            ch = grpc.secure_channel(address, creds, options=options)
        else:
            ch = grpc.insecure_channel(address, options=options)
        return grpc.intercept_channel(ch, _ClientAuth(self)) if self.key else ch

    # ------------------------------------------------------------------ gRPC, server side
    def server(self, pool, options, name: str, log: RejectionLog | None = None):
        """A ``grpc.server`` whose every method first checks the caller's token."""
        import grpc

        interceptors = [_ServerAuth(self, log or RejectionLog(name))] if self.key else []
        return grpc.server(pool, options=list(options), interceptors=interceptors)

    def add_port(self, server, address: str) -> int:
        """Bind ``server`` to ``address`` (TLS when set); the port, 0 on failure (as grpc)."""
        import grpc

        if self.tls is None:
            return server.add_insecure_port(address)
        cert, key, ca = self.tls.read()
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                            require_client_auth=True)
        return server.add_secure_port(address, creds)

    def check_token(self, method: str, token: str | None, replays: _Replays,
                    now: float | None = None) -> str | None:
        """None if ``token`` is a fresh, valid token for ``method``; else why not (for the log)."""
        if not token:
            return "no job credentials"
        try:
            ms, nonce, mac = token.split(".")
            t = int(ms, 16) / 1000.0
            got = bytes.fromhex(mac)
        except ValueError:
            return "malformed job credentials"
        want = _mac(self.key, method.encode(), b"\n", ms.encode(), b"\n", nonce.encode())
        if not hmac.compare_digest(got, want):
            return "wrong job credentials (another job's secret?)"
        if abs((time.time() if now is None else now) - t) > CLOCK_SKEW_S:
            return f"credentials timed {t:.0f}, more than {CLOCK_SKEW_S:.0f}s off this clock"
        if not replays.first_use(nonce):
            return "replayed credentials"
        return None

    # ------------------------------------------------------------------ TCP data plane
    def tcp_server_side(self, conn: socket.socket, log: RejectionLog, peer: str):
        """TLS and the secret handshake on an accepted data connection: the socket to use (maybe
        TLS-wrapped), or None when the peer was refused (``conn`` is then closed)."""
        t_end = time.monotonic() + HANDSHAKE_TIMEOUT_S
        try:
            if self.tls is not None:
                conn.settimeout(HANDSHAKE_TIMEOUT_S)
                conn = _server_context(self.tls).wrap_socket(conn, server_side=True)
            if self.key is None:
                return conn
            sn = secrets.token_bytes(NONCE_BYTES)
            _send(conn, TCP_MAGIC + sn, t_end)
            hello = _recv(conn, len(TCP_MAGIC) + NONCE_BYTES + MAC_BYTES, t_end)
            cn, mac = hello[4:4 + NONCE_BYTES], hello[4 + NONCE_BYTES:]
            if hello[:4] != TCP_MAGIC or not hmac.compare_digest(
                    mac, _mac(self.key, b"tcp-client", sn, cn)):
                log.note(peer, "data connection without the job's credentials")
                conn.close()
                return None
            _send(conn, _mac(self.key, b"tcp-server", cn, sn), t_end)
            return conn
        except (OSError, ValueError) as e:   # ssl.SSLError is an OSError; timeouts too
            log.note(peer, f"data connection that did not complete the handshake ({type(e).__name__})")
            conn.close()
            return None

    def tcp_client_side(self, sock: socket.socket, host: str, t_end: float) -> socket.socket:
        """TLS and the secret handshake on a fresh data connection to a shard at ``host``.
        Raises ConnectionRefusedError (the shard answered as another job's) or OSError."""
        if self.tls is not None:
            sock.settimeout(max(0.05, t_end - time.monotonic()))
            sock = _client_context(self.tls).wrap_socket(sock, server_hostname=host)
        if self.key is None:
            return sock
        challenge = _recv(sock, len(TCP_MAGIC) + NONCE_BYTES, t_end)
        if challenge[:4] != TCP_MAGIC:
            raise ConnectionRefusedError("the data port does not speak poseidon's handshake")
        sn, cn = challenge[4:], secrets.token_bytes(NONCE_BYTES)
        _send(sock, TCP_MAGIC + cn + _mac(self.key, b"tcp-client", sn, cn), t_end)
        proof = _recv(sock, MAC_BYTES, t_end)
        if not hmac.compare_digest(proof, _mac(self.key, b"tcp-server", cn, sn)):
            raise ConnectionRefusedError("the shard does not know this job's secret")
        return sock


NO_SECURITY = Security()


def _recv(sock, n: int, t_end: float) -> bytes:
    buf = bytearray(n)
    mv, got = memoryview(buf), 0
    while got < n:
        left = t_end - time.monotonic()
        if left <= 0:
            raise socket.timeout("handshake deadline passed")
        sock.settimeout(left)
        k = sock.recv_into(mv[got:], n - got)
        if k == 0:
            raise ConnectionResetError("peer closed during the handshake")
        got += k
    return bytes(buf)


def _send(sock, data: bytes, t_end: float) -> None:
    sock.settimeout(max(0.01, t_end - time.monotonic()))
    sock.sendall(data)


_contexts: dict = {}


def _server_context(tls: TlsFiles):
    import ssl

    key = ("server", tls)
    if key not in _contexts:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls.cert, tls.key)
        ctx.load_verify_locations(tls.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        _contexts[key] = ctx
    return _contexts[key]


def _client_context(tls: TlsFiles):
    import ssl

    key = ("client", tls)
    if key not in _contexts:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(tls.cert, tls.key)
        ctx.load_verify_locations(tls.ca)
        _contexts[key] = ctx
    return _contexts[key]


# ---------------------------------------------------------------------- gRPC interceptors
# grpc is imported on first use, so that the launcher and the spec (which read secrets) stay light.
@functools.lru_cache(maxsize=None)
def _interceptor_types():
    import grpc

    class CallDetails(collections.namedtuple(
            "CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                            "compression")), grpc.ClientCallDetails):
        pass

    class ClientAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                     grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        """Adds a fresh token to every outgoing call."""

        def __init__(self, security: Security):
            self.security = security

        def _details(self, d):
            md = list(d.metadata or ()) + [(META_AUTH, self.security.token(d.method))]
            return CallDetails(d.method, d.timeout, md, d.credentials,
                               getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._details(details), request)

        intercept_unary_stream = intercept_unary_unary
        intercept_stream_unary = intercept_unary_unary
        intercept_stream_stream = intercept_unary_unary

    class ServerAuth(grpc.ServerInterceptor):
        """Runs before every method: a call without a valid token gets UNAUTHENTICATED (with a
        message that names nothing of the job) and never reaches a handler."""

        def __init__(self, security: Security, log: RejectionLog):
            self.security, self.log = security, log
            self._replays = _Replays(2 * CLOCK_SKEW_S)

        def intercept_service(self, continuation, details):
            token = next((v for k, v in (details.invocation_metadata or ()) if k == META_AUTH), None)
            why = self.security.check_token(details.method, token, self._replays)
            if why is None:
                return continuation(details)
            log = self.log

            def refuse(request, context):
                log.note(context.peer(), f"a gRPC call of {details.method}: {why}")
                context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)

            # answer in the method's own shape, so the caller sees UNAUTHENTICATED, not a
            # protocol error (an unknown method is refused the same way: nothing is revealed)
            real = continuation(details)
            streams_in = real is not None and real.request_streaming
            streams_out = real is not None and real.response_streaming
            make = {(False, False): grpc.unary_unary_rpc_method_handler,
                    (False, True): grpc.unary_stream_rpc_method_handler,
                    (True, False): grpc.stream_unary_rpc_method_handler,
                    (True, True): grpc.stream_stream_rpc_method_handler}[(streams_in, streams_out)]
            return make(refuse)

    return ClientAuth, ServerAuth


def _ClientAuth(security):
    return _interceptor_types()[0](security)


def _ServerAuth(security, log):
    return _interceptor_types()[1](security, log)
