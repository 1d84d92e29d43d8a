"""Resumable bulk transfers with the storage proxy: the retry policy, and downloads.

Bulk data never passes through the manager: ``request-upload`` and
``request-download`` answer ``{"token", "url"}`` and the client talks to the
storage proxy's client-facing API at ``url?token=...`` (unsigned; the token
is the credential).  Uploads speak tus (:mod:`bai.client.tus`); this module
holds what both directions share and the download side.

:func:`download_file` streams ``GET url`` into ``DEST.part`` and renames it to
``DEST`` only once every byte arrived, so ``DEST`` never holds a partial file.
When the connection drops (a transport error, a timeout with no data for
the idle time of *http_timeout*, a body shorter than its ``Content-Length``, or a
retryable status such as 503), it keeps what arrived and asks again with
``Range: bytes=N-`` and ``If-Range: <the validator of the first answer>``
(its strong ``ETag``, else its ``Last-Modified``; the ETag tells apart two
versions written within one second): a ``206`` continues at byte N, a
``200`` means the file changed on the server, so the download restarts from
zero.  Without a validator it cannot resume safely and restarts from zero.

Guarantees:

* at most :attr:`RetryPolicy.max_retries` resumptions, with exponential
  backoff; then :class:`~bai.client.exceptions.BackendClientError` naming the
  last failure;
* an error status that retrying cannot fix (401 for an expired token, 404...)
  raises the typed :class:`~bai.client.exceptions.BackendAPIError` at once;
* on any failure, cancellation included, ``DEST.part`` is removed and
  ``DEST`` is untouched; an existing ``DEST`` is refused unless *overwrite*;
* memory stays bounded (two blocks of :data:`WRITE_BLOCK` bytes: one being
  written, one arriving; a spliced body passes through one pipe of at most
  1 MiB); file writes run in Trio's thread pool, never on
  the event loop, while the next block arrives.

Throughput: give :func:`download_file` a :func:`bulk_client`.  httpcore reads
a socket 64 KiB at a time and every read costs a pass through h11, httpcore
and httpx, plus three copies of the bytes; the bulk client's reads ask for
:data:`READ_SIZE` bytes, and over plain TCP (under Trio, on Linux) it reads an
answer's head exactly, leaving the body in the socket: a ``Content-Length``
body is then spliced from the socket through a pipe into the ``.part`` file
(``os.splice`` in a worker thread), so its bytes never enter Python and the
storage proxy's ``sendfile`` is met by one copy in the kernel.  Elsewhere (TLS,
chunked bodies, another client) the pieces of a block go to the file with one
``pwritev`` (:func:`bai.common.fileio.pwrite_all`), never joined.  Either
way the resumption rules above hold: the offset a download resumes from
only counts bytes already in the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpcore
import httpx
import sniffio
import trio

from bai.client.exceptions import (
    BackendAPIError,
    BackendClientError,
    MalformedResponse,
    error_from_response,
)
from bai.common.fileio import (
    CAN_SPLICE,
    SPLICE_BATCH,
    SocketFailed,
    open_splice_pipe,
    pwrite_all,
    splice_into_file,
)

__all__ = [
    "PART_SUFFIX",
    "READ_SIZE",
    "RETRY_STATUSES",
    "WRITE_BLOCK",
    "ResumeCallback",
    "RetryPolicy",
    "TransferProgress",
    "bulk_client",
    "download_file",
    "is_retryable",
    "transfer_timeout",
]

#: Suffix of the file a download is written to until it is complete.
PART_SUFFIX: Final = ".part"
#: Bytes gathered in memory before each write to disk (and each progress report).
WRITE_BLOCK: Final = 1 << 20
#: Bytes a bulk client asks of the socket per read (httpcore asks 64 KiB).
READ_SIZE: Final = 1 << 20
#: Most pieces gathered into one block (each is one entry of a ``pwritev``).
_MAX_PIECES: Final = 256
#: Statuses after which the same request may succeed later.
RETRY_STATUSES: Final = frozenset({408, 429, 502, 503, 504})

#: Called with (bytes done, total bytes or None when the server did not say).
#: ``done`` may go back (to 0 when a changed file restarts a download, or to the
#: server's offset after an upload resumed).
TransferProgress = Callable[[int, int | None], None]
#: Called when an interrupted transfer resumes, with (retry number from 1, the
#: offset it resumes at, the failure that interrupted it).
ResumeCallback = Callable[[int, int, BaseException], None]

_CONTENT_RANGE: Final = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
#: The blank line that ends a head (h11 accepts a bare LF as a line end too).
_BLANK_LINE: Final = re.compile(rb"\n\r?\n")
#: Bytes peeked at while looking for the end of an answer's head.
_HEAD_PEEK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and after how long, an interrupted transfer resumes.

    A transfer resumes at most *max_retries* times in all.  The wait before
    a resumption doubles from *initial_delay* up to *max_delay*, and starts
    again from *initial_delay* once a resumed transfer moved data.
    """

    max_retries: int = 20
    initial_delay: float = 0.1
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if not 0 <= self.initial_delay <= self.max_delay:
            raise ValueError("delays must satisfy 0 <= initial_delay <= max_delay")

    def delay(self, streak: int) -> float:
        """The wait before the *streak*-th consecutive resumption without progress (from 1)."""
        return float(min(self.max_delay, self.initial_delay * 2 ** max(0, streak - 1)))


def transfer_timeout(connect: float, idle: float) -> httpx.Timeout:
    """Timeouts for a transfer: a connection that moves no data for *idle* seconds is dropped."""
    return httpx.Timeout(connect=connect, read=idle, write=idle, pool=connect)


def is_retryable(exc: BaseException) -> bool:
    """Whether *exc* interrupted a transfer that may resume (a drop, a timeout, a 503...)."""
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return True
    return isinstance(exc, BackendAPIError) and exc.status in RETRY_STATUSES


async def raise_for_status(response: httpx.Response) -> None:
    """Raise the typed API error of a streamed *response* with status >= 400."""
    if response.status_code < 400:
        return
    try:
        body = await response.aread()
    except httpx.TransportError as exc:
        body = str(exc).encode()
    raise error_from_response(response.status_code, response.reason_phrase, body)


def parse_content_range(value: str | None) -> tuple[int, int, int | None]:
    """``bytes FIRST-LAST/TOTAL`` as (first, last, total or None); MalformedResponse else."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        raise MalformedResponse(
            "is not 'bytes FIRST-LAST/TOTAL'", value=value, field="Content-Range"
        )
    first, last, total = match.groups()
    return int(first), int(last), None if total == "*" else int(total)


@contextlib.contextmanager
def _read_errors(timeout: float | None) -> Iterator[None]:
    """Within *timeout* seconds (None: no limit), socket failures as httpcore's read errors."""
    try:
        with trio.fail_after(float("inf") if timeout is None else timeout):
            yield
    except trio.TooSlowError as exc:
        raise httpcore.ReadTimeout(str(exc)) from exc
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise httpcore.ReadError(str(exc)) from exc


class _LargeReadStream(httpcore.AsyncNetworkStream):
    """A network stream whose reads ask for at least :data:`READ_SIZE` bytes.

    h11 takes any amount of data at once and keeps what belongs to the next
    event, so a larger read changes nothing but the number of reads.

    Over plain TCP under Trio (*sock* given) it also reads each answer's head
    exactly: the first reads after a request peek at the socket and take the
    bytes up to the blank line that ends the head, no more.  Once h11 has the
    head, :meth:`body_socket` hands out the socket with the body untouched in
    it, for :func:`download_file` to splice into the file.
    """

    def __init__(
        self, stream: httpcore.AsyncNetworkStream, sock: trio.socket.SocketType | None = None
    ) -> None:
        self._stream = stream
        self._sock = sock
        self._in_head = False  # the next bytes belong to an answer's head
        self._tail = b""  # the head's last 2 bytes so far (the blank line may straddle reads)
        self._clean = False  # the last read ended exactly at the end of a head

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        if self._in_head and self._sock is not None:
            return await self._read_head(self._sock, timeout)
        self._clean = False
        return await self._stream.read(max(max_bytes, READ_SIZE), timeout)

    async def _read_head(self, sock: trio.socket.SocketType, timeout: float | None) -> bytes:  # noqa: ASYNC109
        with _read_errors(timeout):
            peeked = await sock.recv(_HEAD_PEEK, trio.socket.MSG_PEEK)
            if not peeked:
                self._in_head = False
                return b""
            window = self._tail + peeked
            # The head ends at its first blank line, found the way h11 finds it.
            end = _BLANK_LINE.search(window)
            if end is None:
                take = len(peeked)
                self._tail = window[-2:]
            else:
                take = end.end() - len(self._tail)
            data = await sock.recv(take)  # peeked already: all there
        if end is not None and len(data) == take:
            self._in_head, self._clean = False, True
        elif len(data) != take:  # never seen; fall back to plain reads
            self._in_head = False
        return data

    def body_socket(self) -> trio.socket.SocketType | None:
        """The socket, if the last read ended exactly at the end of an answer's head."""
        return self._sock if self._clean else None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self._in_head, self._tail, self._clean = True, b"", False
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _LargeReadStream(tls)  # no socket: TLS bytes cannot be spliced

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _LargeReadBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend for the running event loop, with :class:`_LargeReadStream`."""

    def __init__(self) -> None:
        self._backend: httpcore.AsyncNetworkBackend | None = None

    def _inner(self) -> httpcore.AsyncNetworkBackend:
        if self._backend is None:
            trio_loop = sniffio.current_async_library() == "trio"
            self._backend = httpcore.TrioBackend() if trio_loop else httpcore.AnyIOBackend()
        return self._backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        backend = self._inner()
        stream = await backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        # Trio's streams give their trio socket; under another loop no splicing.
        sock = (
            stream.get_extra_info("socket") if isinstance(backend, httpcore.TrioBackend) else None
        )
        return _LargeReadStream(stream, sock if isinstance(sock, trio.socket.SocketType) else None)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner().connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _LargeReadStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner().sleep(seconds)


class _BulkTransport(httpx.AsyncHTTPTransport):
    """httpx's HTTP/1.1 transport over :class:`_LargeReadBackend`."""

    def __init__(self, *, verify: ssl.SSLContext | bool, trust_env: bool) -> None:
        context = httpx.create_ssl_context(verify=verify, trust_env=trust_env)
        super().__init__(verify=context, trust_env=trust_env)
        # httpx takes no network backend, and its requests all go through this pool:
        # replace the pool it made (still unopened, nothing to close) with one using ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=100,  # httpx's default limits
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_LargeReadBackend(),
        )


def bulk_client(
    *,
    verify: ssl.SSLContext | bool = True,
    headers: Mapping[str, str] | None = None,
    trust_env: bool = True,
) -> httpx.AsyncClient:
    """An httpx client for large downloads: each read asks the socket for :data:`READ_SIZE`.

    *verify* checks TLS certificates (False: don't; an SSL context: that
    one); *headers* go with every request; with *trust_env* the environment's
    proxies and certificate settings apply, as for any httpx client (a proxied
    request reads 64 KiB at a time).  Use it as ``async with``.
    """
    return httpx.AsyncClient(
        transport=_BulkTransport(verify=verify, trust_env=trust_env),
        headers=headers,
        trust_env=trust_env,
    )


class _Restart(Exception):
    """The server's answer cannot continue the partial file: start again from zero."""


@dataclass
class _Download:
    """The state of one download between attempts."""

    http: httpx.AsyncClient
    url: str | httpx.URL
    timeout: httpx.Timeout
    fd: int
    progress: TransferProgress | None
    offset: int = 0
    total: int | None = None
    validator: str | None = None

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.offset, self.total)

    async def restart(self) -> None:
        await trio.to_thread.run_sync(os.ftruncate, self.fd, 0)
        self.offset, self.total, self.validator = 0, None, None
        self.report()

    async def attempt(self) -> None:
        """One GET; returns once the file is complete, raises when the stream broke off."""
        # Ranges count bytes of the stored representation: ask for it unencoded.
        headers = {"Accept-Encoding": "identity"}
        if self.offset:
            if self.validator is None:
                await self.restart()
            else:
                headers["Range"] = f"bytes={self.offset}-"
                headers["If-Range"] = self.validator
        async with self.http.stream(
            "GET", self.url, headers=headers, timeout=self.timeout
        ) as response:
            if response.status_code == 416 and self.offset and self.offset == self.total:
                return  # every byte arrived; only the end of the last answer was lost
            await raise_for_status(response)
            if response.status_code == 206 and self.offset:
                first, _, total = parse_content_range(response.headers.get("Content-Range"))
                if first != self.offset or (self.total is not None and total != self.total):
                    raise _Restart(f"the server answered a range from byte {first}")
            elif response.status_code == 200:
                if self.offset:
                    # If-Range did not match: the file changed since the first answer.
                    await self.restart()
                length = response.headers.get("Content-Length")
                self.total = int(length) if length and length.isdigit() else None
            else:
                raise MalformedResponse(
                    "is not 200 or 206", value=response.status_code, field="download status"
                )
            self.validator = _strong_etag(response) or response.headers.get("Last-Modified")
            await self._receive(response)
        if self.total is not None and self.offset != self.total:
            # h11 reports a short body itself; a long one means the sizes disagree.
            raise MalformedResponse(
                f"has {self.offset} bytes, not the announced {self.total}",
                value=self.offset,
                field="download body",
            )

    async def _receive(self, response: httpx.Response) -> None:
        """Write the body at :attr:`offset` on; a broken stream keeps what arrived, then raises.

        A body still whole in its socket is spliced (:meth:`_splice`);
        otherwise a writer task writes each block of :data:`WRITE_BLOCK` bytes
        in a worker thread while the next block arrives.
        """
        sock = _body_socket(response)
        if sock is not None:
            await self._splice(sock, int(response.headers["Content-Length"]))
            return
        send_block, receive_block = trio.open_memory_channel[list[bytes]](1)
        broken: httpx.TransportError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, receive_block)
            async with send_block:
                block: list[bytes] = []
                size = 0
                try:
                    async for chunk in response.aiter_bytes():
                        block.append(chunk)
                        size += len(chunk)
                        if size >= WRITE_BLOCK or len(block) >= _MAX_PIECES:
                            await send_block.send(block)
                            block, size = [], 0
                except httpx.TransportError as exc:
                    # What arrived before a drop is good data: keep it for the resumption.
                    broken = exc
                if block:
                    await send_block.send(block)
        if broken is not None:
            raise broken

    async def _writer(self, blocks: trio.MemoryReceiveChannel[list[bytes]]) -> None:
        async with blocks:
            async for block in blocks:
                written = await trio.to_thread.run_sync(pwrite_all, self.fd, block, self.offset)
                self.offset += written
                self.report()

    async def _splice(self, sock: trio.socket.SocketType, length: int) -> None:
        """Move *length* body bytes from *sock* into the file, in the kernel (Linux splice).

        Socket to pipe to file: the bytes never enter Python.  Each worker
        thread call moves what the socket holds (up to :data:`~bai.common.fileio.SPLICE_BATCH`)
        and writes all of it before it returns, so :attr:`offset` always
        counts bytes in the file; a broken or stalled connection raises
        httpx's read errors, as the streamed path does.
        """
        idle = self.timeout.read
        read_end, write_end = open_splice_pipe()
        try:
            left = length
            while left > 0:
                with trio.move_on_after(float("inf") if idle is None else idle) as waited:
                    await trio.lowlevel.wait_readable(sock)
                if waited.cancelled_caught:
                    raise httpx.ReadTimeout(f"no data for {idle} s")
                try:
                    moved, ended = await trio.to_thread.run_sync(
                        splice_into_file,
                        sock.fileno(),
                        read_end,
                        write_end,
                        self.fd,
                        self.offset,
                        min(left, SPLICE_BATCH),
                    )
                except SocketFailed as exc:
                    raise httpx.ReadError(str(exc.__cause__)) from exc.__cause__
                if moved:
                    self.offset += moved
                    left -= moved
                    self.report()
                elif ended:
                    raise httpx.RemoteProtocolError(
                        f"the connection closed {left} bytes before the end of the body"
                    )
        finally:
            os.close(read_end)
            os.close(write_end)


def _body_socket(response: httpx.Response) -> trio.socket.SocketType | None:
    """The socket of *response* if its body can be spliced from it: plain TCP under Trio,
    a ``Content-Length`` body without encoding, not a byte of it read yet."""
    if not CAN_SPLICE:
        return None
    stream = response.extensions.get("network_stream")
    if not isinstance(stream, _LargeReadStream):
        return None
    headers = response.headers
    length = headers.get("Content-Length", "")
    if "Transfer-Encoding" in headers or not length.isdigit():
        return None
    if headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return None
    return stream.body_socket()


def _strong_etag(response: httpx.Response) -> str | None:
    etag = response.headers.get("ETag")
    # If-Range needs a strong validator; a weak ETag cannot resume.
    return etag if etag and not etag.startswith("W/") else None


def _open_part(dest: Path, overwrite: bool) -> tuple[Path, int]:
    if dest.is_dir():
        raise BackendClientError(f"{dest} is a directory")
    if dest.exists() and not overwrite:
        raise BackendClientError(f"{dest} exists already (overwrite it explicitly)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    # A stale .part of an earlier run has no validator to resume from: start afresh.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    return part, os.open(part, flags, 0o666)


async def download_file(
    http: httpx.AsyncClient,
    url: str | httpx.URL,
    dest: str | os.PathLike[str],
    *,
    progress: TransferProgress | None = None,
    on_resume: ResumeCallback | None = None,
    retry: RetryPolicy | None = None,
    http_timeout: httpx.Timeout | None = None,
    overwrite: bool = False,
) -> int:
    """Download *url* to *dest*, resuming after dropped connections; returns its size.

    See the module docstring for the guarantees.  *http_timeout* defaults to
    :func:`transfer_timeout` ``(10, 60)``.  Any *http* client works; a
    :func:`bulk_client` is the fast one.
    """
    policy = retry or RetryPolicy()
    path = Path(dest)
    part, fd = await trio.to_thread.run_sync(_open_part, path, overwrite)
    state = _Download(
        http=http,
        url=url,
        timeout=http_timeout or transfer_timeout(10.0, 60.0),
        fd=fd,
        progress=progress,
    )
    retries = streak = 0
    try:
        state.report()
        while True:
            before = state.offset
            try:
                await state.attempt()
                break
            except _Restart as exc:
                await state.restart()
                failure: BaseException = exc
            except (httpx.HTTPError, BackendAPIError) as exc:
                if not is_retryable(exc):
                    raise
                failure = exc
            retries += 1
            streak = 1 if state.offset > before else streak + 1
            if retries > policy.max_retries:
                raise BackendClientError(
                    f"downloading {path.name} failed after {policy.max_retries} "
                    f"resumptions: {str(failure) or type(failure).__name__}"
                ) from failure
            if on_resume is not None:
                on_resume(retries, state.offset, failure)
            await trio.sleep(policy.delay(streak))
        state.fd = -1  # closed below, never twice (the number may be reused at once)
        await trio.to_thread.run_sync(os.close, fd)
        await trio.to_thread.run_sync(os.replace, part, path)
    except httpx.HTTPError as exc:
        _discard(state.fd, part)
        raise BackendClientError(f"downloading {path.name} failed: {exc}") from exc
    except BaseException:
        _discard(state.fd, part)
        raise
    return state.offset


def _discard(fd: int, part: Path) -> None:
    # Synchronous on purpose: this also runs when the task is being cancelled.
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
