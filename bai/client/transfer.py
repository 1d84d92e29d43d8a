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
  written, one arriving); file writes run in Trio's thread pool, never on
  the event loop, while the next block arrives.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import trio

from bai.client.exceptions import (
    BackendAPIError,
    BackendClientError,
    MalformedResponse,
    error_from_response,
)

__all__ = [
    "PART_SUFFIX",
    "RETRY_STATUSES",
    "WRITE_BLOCK",
    "ResumeCallback",
    "RetryPolicy",
    "TransferProgress",
    "download_file",
    "is_retryable",
    "transfer_timeout",
]

#: Suffix of the file a download is written to until it is complete.
PART_SUFFIX: Final = ".part"
#: Bytes gathered in memory before each write to disk (and each progress report).
WRITE_BLOCK: Final = 1 << 20
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

        A writer task writes each block of :data:`WRITE_BLOCK` bytes in a
        worker thread while the next block arrives.
        """
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
                        if size >= WRITE_BLOCK:
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
                written = await trio.to_thread.run_sync(_pwrite_all, self.fd, block, self.offset)
                self.offset += written
                self.report()


def _pwrite_all(fd: int, chunks: list[bytes], offset: int) -> int:
    data = memoryview(b"".join(chunks))
    total = len(data)
    while data:
        written = os.pwrite(fd, data, offset)
        offset += written
        data = data[written:]
    return total


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
    :func:`transfer_timeout` ``(10, 60)``.
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
