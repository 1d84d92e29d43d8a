"""Idle reclaim: sessions nobody uses, or that outlived their policy, are ended.

:mod:`~bai.manager.idle.rules` holds the pure rules (which checkers run,
how much time each session has left); :mod:`~bai.manager.idle.checker` the
service every manager runs.  What counts as use is recorded by
:mod:`bai.manager.sessions.activity`.
"""

from bai.manager.idle.checker import CHECK_INTERVAL, IdleChecker
from bai.manager.idle.rules import Checker, IdleSettings

__all__ = ["CHECK_INTERVAL", "Checker", "IdleChecker", "IdleSettings"]
