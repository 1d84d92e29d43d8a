from collections.abc import Sequence
from typing import Final

CONCENTRATED: Final[int]
DISPERSED: Final[int]
ROUNDROBIN: Final[int]

class Bins:
    width: int
    def __init__(
        self, rows: Sequence[Sequence[int | float]], groups: Sequence[Sequence[int]], width: int
    ) -> None: ...
    def row(self, agent: int) -> list[int | float]: ...
    def fits(self, agent: int, req: Sequence[int | float]) -> bool: ...
    def pick(
        self,
        req: Sequence[int | float],
        groups: Sequence[int],
        extras: Sequence[int],
        mode: int,
        after: int,
    ) -> int: ...
    def take(self, agent: int, req: Sequence[int | float], kernels: int) -> None: ...
    def give(self, agent: int, req: Sequence[int | float], kernels: int) -> None: ...
