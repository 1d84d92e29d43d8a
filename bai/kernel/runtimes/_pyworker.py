"""The Python process of a query-mode kernel: runs user code in one namespace.

:mod:`bai.kernel.runtimes.python` starts this file as a script with the
image's own Python (``ai.backend.runtime-path``)::

    <runtime-path> -u _pyworker.py CMD_FD CTL_FD BAI_PARENT

so it may import nothing but the standard library and must run on older
Pythons too (3.8+: no ``match``, no runtime use of ``X | Y`` types).

Channels, all JSON lines:

* ``CMD_FD`` (runner -> worker): ``{"t": "run", "code"}``, ``{"t": "input",
  "text"}``, ``{"t": "complete", "id", "text"}``, ``{"t": "interrupt"}``.  End
  of file means the runner is gone and the worker exits.
* ``CTL_FD`` (worker -> runner): ``{"t": "out", "s": "stdout"|"stderr",
  "x": text}``, ``{"t": "media", "mime", "data"}``, ``{"t": "html", "html"}``,
  ``{"t": "input", "password": bool}``, ``{"t": "completion", "id",
  "matches"}``, ``{"t": "done"}``.

Python-level ``sys.stdout``/``sys.stderr`` writes travel on ``CTL_FD`` in
order with everything else; file descriptors 1 and 2 stay pipes the runner
reads, so subprocesses and C code are captured too.  SIGINT raises
KeyboardInterrupt only while user code runs, and never in the middle of a
message on ``CTL_FD``.
"""

from __future__ import annotations

import ast
import builtins
import codecs
import importlib.machinery
import importlib.util
import io
import json
import os
import queue
import re
import signal
import sys
import threading
import time
import traceback
import types

# Every kernel start pays for what this process imports before it is ready:
# typing is imported for the type checker only, and modules that user code
# may never import (getpass, matplotlib, bai's display helper) are adjusted
# when it does (_PostImportHooks).  What the worker itself needs is imported
# here, before the working directory (the user's files) is put on sys.path
# where a file of the same name would shadow it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_SELF = __file__
_MAIN_THREAD = threading.get_ident()
_CHUNK = 65536  # characters per "out" message
_FLUSH_SIZE = 8192  # characters buffered before they are written without a newline
_FLUSH_DELAY = 0.01  # seconds a partial line waits
_MPL_BACKEND = "module://bai.kernel.mpl_backend"


class _State:
    running = False  # user code runs: SIGINT raises KeyboardInterrupt
    writing = False  # the main thread is writing a message: SIGINT waits for the end of it
    deferred = False  # a SIGINT arrived while writing


class _Channel:
    """Ordered worker -> runner messages, written whole even when SIGINT arrives.

    Output is line-buffered like a terminal: a write containing a newline, a
    buffer over :data:`_FLUSH_SIZE` or any other message is written at once by
    the calling thread, so what was printed before a crash is in the pipe;
    a partial line is written by a timer thread :data:`_FLUSH_DELAY` later.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._start()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        # Also run in a child forked by user code: the lock may have been held
        # by a thread that does not exist there, and the timer thread is gone.
        self._cond = threading.Condition()
        self._items: list[Any] = []
        self._chars = 0
        threading.Thread(target=self._timer, name="bai-flush", daemon=True).start()

    def text(self, stream: str, text: str) -> None:
        with self._cond:
            last = self._items[-1] if self._items else None
            if isinstance(last, list) and last[0] == stream:
                last[1].append(text)
            else:
                self._items.append([stream, [text]])
            self._chars += len(text)
            if "\n" in text or self._chars >= _FLUSH_SIZE:
                self._flush()
            else:
                self._cond.notify()

    def send(self, message: dict[str, Any]) -> None:
        with self._cond:
            self._items.append(message)
            self._flush()

    def _timer(self) -> None:
        _block_sigint()
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
            time.sleep(_FLUSH_DELAY)
            with self._cond:
                self._flush()

    def _flush(self) -> None:
        """Write every pending item; the caller holds the condition's lock."""
        main = threading.get_ident() == _MAIN_THREAD
        if main:
            _state.writing = True
        try:
            items, self._items, self._chars = self._items, [], 0
            out: list[bytes] = []
            for item in items:
                if isinstance(item, list):
                    text = "".join(item[1])
                    for i in range(0, len(text), _CHUNK):
                        line = {"t": "out", "s": item[0], "x": text[i : i + _CHUNK]}
                        out.append(json.dumps(line).encode("ascii") + b"\n")
                else:
                    out.append(json.dumps(item).encode("ascii") + b"\n")
            for data in out:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
        except OSError:
            os._exit(0)  # the runner is gone; nobody can see this kernel any more
        finally:
            if main:
                _state.writing = False
        if main and _state.deferred:
            _state.deferred = False
            if _state.running:
                raise KeyboardInterrupt


class _Console(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr``: text goes to the runner in print order."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, channel: _Channel, name: str, fd: int) -> None:
        self._channel = channel
        self._name = name
        self._fd = fd
        self.buffer = _BinaryConsole(self)

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s:
            self._channel.text(self._name, s)
        return len(s)

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass  # the kernel's console outlives any code that closes it


class _BinaryConsole(io.RawIOBase):
    """``sys.stdout.buffer``: bytes decoded as UTF-8 (bad bytes replaced)."""

    def __init__(self, console: _Console) -> None:
        self._console = console
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._console.write(self._decoder.decode(data))
        return len(data)

    def close(self) -> None:
        pass


class _Stdin:
    """``sys.stdin``: each line read is asked from the user like ``input()``."""

    encoding = "utf-8"
    errors = "strict"
    closed = False

    def readable(self) -> bool:
        return True

    def readline(self, size: int = -1) -> str:
        return _ask("", False) + "\n"

    def read(self, size: int = -1) -> str:
        return self.readline()

    def __iter__(self) -> _Stdin:
        return self

    def __next__(self) -> str:
        return self.readline()

    def fileno(self) -> int:
        return 0

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass  # site's exit() closes stdin before raising SystemExit


_state = _State()
_inputs: queue.Queue[str] = queue.Queue()
_runs: queue.Queue[str] = queue.Queue()
_channel: _Channel
_stdout: _Console
_namespace: dict[str, Any]


def _ask(prompt: str, password: bool) -> str:
    if not _state.running:
        raise EOFError("no run is waiting for input")
    if prompt:
        _stdout.write(prompt)
    _channel.send({"t": "input", "password": password})
    return _inputs.get()


def _input(prompt: object = "") -> str:
    return _ask(str(prompt), False)


def _getpass(prompt: str = "Password: ", stream: object = None) -> str:
    return _ask(prompt, True)


def _on_sigint(signum: int, frame: object) -> None:
    if not _state.running:
        return
    if _state.writing:
        _state.deferred = True  # raised by _Channel._flush once the message is whole
        return
    raise KeyboardInterrupt


def _strip_own_frames(te: traceback.TracebackException) -> None:
    seen = set()
    todo = [te]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        item.stack = traceback.StackSummary.from_list(
            [frame for frame in item.stack if frame.filename != _SELF]
        )
        todo.extend(x for x in (item.__cause__, item.__context__) if x is not None)


def _report(exc: BaseException) -> None:
    """Print *exc* to stderr the way the Python REPL does, minus the final newline."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    _strip_own_frames(te)
    text = "".join(te.format())
    sys.stderr.write(text[:-1] if text.endswith("\n") else text)


def _execute(code: str) -> None:
    while not _inputs.empty():
        _inputs.get_nowait()  # an answer that came too late for an interrupted run
    _state.running = True
    try:
        tree = ast.parse(code, "<input>")
    except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes in the source
        _state.running = False
        exc.__traceback__ = None  # the REPL shows no frames for code that did not compile
        _report(exc)
        return
    try:
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body[-1].value)
            del tree.body[-1]
        exec(compile(tree, "<input>", "exec", dont_inherit=True), _namespace)
        if last is not None:
            value = eval(compile(last, "<input>", "eval", dont_inherit=True), _namespace)
            sys.displayhook(value)
    except SystemExit as exc:
        _state.running = False
        if exc.code not in (None, 0):
            _report(exc)
    except BaseException as exc:
        _state.running = False
        _report(exc)
    finally:
        _state.running = False


_TOKEN = re.compile(r"[^\W\d][\w.]*$")


def _complete(text: str) -> list[str]:
    import rlcompleter

    match = _TOKEN.search(text)
    if match is None:
        return []
    completer = rlcompleter.Completer(_namespace)
    matches: list[str] = []
    try:
        for state in range(500):
            candidate = completer.complete(match.group(), state)
            if candidate is None:
                break
            candidate = candidate.rstrip("(): ")
            if candidate and candidate not in matches:
                matches.append(candidate)
    except Exception:  # user objects may raise anything from __getattr__/__dir__
        return matches
    return matches


def _block_sigint() -> None:
    """Keep SIGINT away from this (background) thread: only the main thread runs user code."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _read_commands(fd: int) -> None:
    _block_sigint()
    with os.fdopen(fd, "rb") as stream:
        for line in stream:
            message = json.loads(line)
            kind = message.get("t")
            if kind == "interrupt":
                # Aimed at the main thread: a process-wide SIGINT may land on
                # a user thread and leave a blocking call in the main thread
                # (sleep, a lock, input) waiting.
                signal.pthread_kill(_MAIN_THREAD, signal.SIGINT)
            elif kind == "run":
                _runs.put(message["code"])
            elif kind == "input":
                _inputs.put(message["text"])
            elif kind == "complete":
                _channel.send(
                    {"t": "completion", "id": message["id"], "matches": _complete(message["text"])}
                )
    os._exit(0)  # the runner closed the channel: the kernel is going away


class _BaiFinder:
    """Make ``bai`` (for ``bai.kernel.display``) importable from the runner's tree.

    It sits last on ``sys.meta_path`` and answers for the name ``bai`` only, so
    an installed ``bai`` wins and nothing else of the runner's environment leaks
    into the user's imports.
    """

    def __init__(self, parent: str) -> None:
        self._parent = parent

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        if name != "bai":
            return None
        return importlib.machinery.PathFinder.find_spec(name, [self._parent])


class _PostImportHooks:
    """Adjust some modules right after they are imported, whoever imports them.

    This is how the kernel hooks into modules without importing them at start
    (each import there would slow every kernel start down): nothing happens
    unless user code imports one of them.  :meth:`install` also adjusts those
    already imported.
    """

    def __init__(self, hooks: dict[str, Callable[[Any], None]]) -> None:
        self._hooks = hooks
        self._busy: set[str] = set()

    def install(self) -> None:
        for name, hook in self._hooks.items():
            if name in sys.modules:
                hook(sys.modules[name])
        sys.meta_path.insert(0, self)

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        hook = self._hooks.get(name)
        if hook is None or name in self._busy:
            return None
        self._busy.add(name)
        try:
            spec: Any = importlib.util.find_spec(name)  # Any: its loader gets replaced
        finally:
            self._busy.discard(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _PostImportLoader(spec.loader, hook)
        return spec


class _PostImportLoader:
    def __init__(self, inner: Any, hook: Callable[[Any], None]) -> None:
        self._inner = inner
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)
        self._hook(module)


def _inline_plots(matplotlib: Any) -> None:
    """matplotlib: the kernel's backend; ``MPLBACKEND`` or a later ``matplotlib.use()`` win."""
    if "MPLBACKEND" not in os.environ:
        try:
            matplotlib.rcParams["backend"] = _MPL_BACKEND
        except Exception as exc:  # an unknown matplotlib: keep its own backend
            sys.stderr.write(f"bai.kernel: plots will not be shown inline ({exc})\n")


def _ask_password(getpass: Any) -> None:
    """getpass: ``getpass.getpass()`` asks the user through the runner, like ``input()``."""
    getpass.getpass = _getpass


def _show_in_console(display: Any) -> None:
    """bai.kernel.display: its images and HTML become console items."""
    install = getattr(display, "install_sink", None)
    if install is not None:
        install(_emit)


def _emit(kind: str, payload: dict[str, Any]) -> None:
    message = {"t": kind}
    message.update(payload)
    _channel.send(message)


def main(argv: list[str]) -> None:
    global _channel, _stdout, _namespace
    cmd_fd, ctl_fd, bai_parent = int(argv[1]), int(argv[2]), argv[3]
    # Keep the channels out of user subprocesses: a leftover child holding
    # them would hide this process's death from the runner.
    os.set_inheritable(cmd_fd, False)
    os.set_inheritable(ctl_fd, False)
    _channel = _Channel(ctl_fd)
    _stdout = _Console(_channel, "stdout", 1)
    sys.stdout = _stdout
    sys.stderr = _Console(_channel, "stderr", 2)
    sys.stdin = _Stdin()
    sys.argv = [""]
    sys.path[0] = ""  # like the REPL: the working directory, not this file's directory
    sys.meta_path.append(_BaiFinder(bai_parent))
    builtins.input = _input
    main_module = types.ModuleType("__main__")
    main_module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main_module
    _namespace = main_module.__dict__
    _PostImportHooks(
        {
            "matplotlib": _inline_plots,
            "getpass": _ask_password,
            "bai.kernel.display": _show_in_console,
        }
    ).install()
    signal.signal(signal.SIGINT, _on_sigint)
    threading.Thread(target=_read_commands, args=(cmd_fd,), name="bai-cmd", daemon=True).start()
    while True:
        code = _runs.get()
        try:
            _execute(code)
        except KeyboardInterrupt:
            _state.running = False  # it landed between the user code and the report
        _channel.send({"t": "done"})


if __name__ == "__main__":
    main(sys.argv)
