"""The runner's listening NNG sockets, called straight through pynng's C binding.

The runner needs four blocking calls of NNG (open a ``Push0`` or ``Pull0``
socket and listen, send, receive, close) and nothing of pynng's Python layer.
``import pynng`` costs about 35 ms, most of every kernel start after Python
itself: its package ``__init__`` imports :mod:`pynng.nng`, which imports
:mod:`asyncio` (and with it :mod:`ssl`, :mod:`inspect`, :mod:`logging`...) for
the async API.  So this module loads only pynng's compiled cffi extension
``pynng._nng`` (about 6 ms, its ``lib`` and ``ffi``), without running the
package ``__init__``, and wraps those calls.  pynng stays the dependency that
ships NNG; a program that also imports ``pynng`` gets the same extension
module, because it is registered under its own name.

Guarantees: :meth:`Socket.recv` and :meth:`Socket.send` block without holding
the GIL; :meth:`Socket.close` from another thread makes a blocked call raise
:class:`Closed`; every NNG failure is an :class:`NNGError` carrying NNG's
error number and message.
"""

from __future__ import annotations

import sys
from importlib.machinery import PathFinder
from importlib.util import module_from_spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class NNGError(Exception):
    """An NNG call failed; ``errno`` is NNG's error number."""

    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message)
        self.errno = errno


class Timeout(NNGError):
    """A send or receive ran past the socket's timeout (``NNG_ETIMEDOUT``)."""


class Closed(NNGError):
    """The socket was closed, possibly while the call waited (``NNG_ECLOSED``)."""


def _load_binding() -> Any:
    module = sys.modules.get("pynng._nng")
    if module is None:
        package = PathFinder.find_spec("pynng")
        spec = None
        if package is not None and package.submodule_search_locations is not None:
            spec = PathFinder.find_spec("pynng._nng", list(package.submodule_search_locations))
        if spec is None or spec.loader is None:
            raise ImportError("the kernel runner needs pynng (its compiled module pynng._nng)")
        module = module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["pynng._nng"] = module
    return module


_binding = _load_binding()
_lib = _binding.lib
_ffi = _binding.ffi
_ERRORS: dict[int, type[NNGError]] = {_lib.NNG_ETIMEDOUT: Timeout, _lib.NNG_ECLOSED: Closed}


def _check(code: int) -> None:
    if code != 0:
        message = _ffi.string(_lib.nng_strerror(code)).decode("utf-8", "replace")
        raise _ERRORS.get(code, NNGError)(message, code)


class Socket:
    """One NNG socket listening at an address; use :func:`pull` or :func:`push`."""

    def __init__(self, opener: Any, address: str, ms: dict[str, int], sizes: dict[str, int]):
        handle = _ffi.new("nng_socket *")
        _check(opener(handle))
        self._socket = handle[0]
        try:
            for name, value in ms.items():
                _check(_lib.nng_socket_set_ms(self._socket, name.encode(), value))
            for name, value in sizes.items():
                _check(_lib.nng_socket_set_size(self._socket, name.encode(), value))
            _check(_lib.nng_listen(self._socket, address.encode(), _ffi.NULL, 0))
        except BaseException:
            _lib.nng_close(self._socket)
            raise

    def send(self, data: bytes) -> None:
        """Send one message (blocks until a peer takes it, or the send timeout)."""
        _check(_lib.nng_send(self._socket, data, len(data), 0))

    def recv(self) -> bytes:
        """Receive one message (blocks until one arrives or the socket is closed)."""
        data = _ffi.new("char **")
        size = _ffi.new("size_t *")
        _check(_lib.nng_recv(self._socket, data, size, _lib.NNG_FLAG_ALLOC))
        try:
            return _ffi.unpack(data[0], size[0])  # type: ignore[no-any-return]
        finally:
            _lib.nng_free(data[0], size[0])

    def close(self) -> None:
        """Close the socket (idempotent); blocked calls in other threads raise :class:`Closed`."""
        _lib.nng_close(self._socket)


def pull(address: str, *, recv_max_size: int) -> Socket:
    """A ``Pull0`` socket listening at *address*, dropping messages over *recv_max_size* bytes."""
    return Socket(_lib.nng_pull0_open, address, {}, {"recv-size-max": recv_max_size})


def push(address: str, *, send_timeout_ms: int) -> Socket:
    """A ``Push0`` socket listening at *address*; a send waits at most *send_timeout_ms*."""
    return Socket(_lib.nng_push0_open, address, {"send-timeout": send_timeout_ms}, {})
