"""A matplotlib backend for kernels: ``plt.show()`` puts each figure in the console.

The kernel's Python selects it (``module://bai.kernel.mpl_backend``) right
after user code imports matplotlib, unless ``MPLBACKEND`` says otherwise.
Figures render with Agg; ``show()`` sends every open figure as one
``image/svg+xml`` media item, then closes them, like an inline notebook
backend.  Only matplotlib imports this module.
"""

from __future__ import annotations

import importlib
import io
from typing import Any

from bai.kernel import display

# Imported by name so the type checker does not need matplotlib installed.
_agg: Any = importlib.import_module("matplotlib.backends.backend_agg")
_bases: Any = importlib.import_module("matplotlib.backend_bases")
_gcf: Any = importlib.import_module("matplotlib._pylab_helpers").Gcf

FigureCanvas: Any = _agg.FigureCanvasAgg
FigureManager: Any = _bases.FigureManagerBase


def show(*args: Any, **kwargs: Any) -> None:
    """Send each open figure to the console as SVG and close it."""
    for manager in _gcf.get_all_fig_managers():
        buffer = io.StringIO()
        manager.canvas.figure.savefig(buffer, format="svg")
        display.svg(buffer.getvalue())
    _gcf.destroy_all()
