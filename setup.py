"""Build hook for the optional Cython extensions.

Each extension is declared with ``optional=True`` so that an install without a
C compiler (or without Cython) still succeeds and falls back to the pure-Python
twin.  ``cythonize()`` is deliberately not used: it drops ``optional``.
Setting ``BAI_NO_EXTENSIONS=1`` skips the extensions entirely.
"""

import os

from setuptools import Extension, setup

OPTIONAL_EXTENSIONS = [
    Extension("bai.common._slots", ["bai/common/_slots.pyx"], optional=True),
    Extension(
        "bai.manager.scheduler._binpack", ["bai/manager/scheduler/_binpack.pyx"], optional=True
    ),
]


def _extensions() -> list[Extension]:
    if os.environ.get("BAI_NO_EXTENSIONS", "").strip() not in ("", "0"):
        return []
    return [ext for ext in OPTIONAL_EXTENSIONS if all(os.path.exists(s) for s in ext.sources)]


setup(ext_modules=_extensions())
