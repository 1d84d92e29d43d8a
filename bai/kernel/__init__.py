"""The kernel runner: the program that runs inside every kernel and executes user code.

The agent starts it as ``python -m bai.kernel`` (a child process for local
kernels, the entrypoint of a container otherwise) and talks to it over NNG
sockets with the message formats of :mod:`bai.kernel.protocol`.

This package depends on the standard library, ``pynng`` and ``msgpack`` only,
and imports nothing from the rest of bai, so it starts fast inside any image.
This ``__init__`` imports nothing at all: user code in a kernel imports
:mod:`bai.kernel.display` through it with whatever Python the image ships.
"""
