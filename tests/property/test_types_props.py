"""Properties of session status derivation over arbitrary kernel mixes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bai.common.types import KernelStatus, SessionStatus, derive_session_status, is_terminal

kernel_lists = st.lists(st.sampled_from(list(KernelStatus)), min_size=1, max_size=8)


@settings(max_examples=300)
@given(kernel_lists, st.randoms())
def test_order_of_kernels_does_not_matter(kernels: list[KernelStatus], rnd: object) -> None:
    shuffled = list(kernels)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert derive_session_status(kernels) is derive_session_status(shuffled)


@settings(max_examples=300)
@given(kernel_lists)
def test_a_session_is_final_only_when_every_kernel_is(kernels: list[KernelStatus]) -> None:
    assert is_terminal(derive_session_status(kernels)) == all(is_terminal(k) for k in kernels)


@settings(max_examples=300)
@given(kernel_lists)
def test_a_session_runs_only_when_every_kernel_runs(kernels: list[KernelStatus]) -> None:
    running = derive_session_status(kernels) is SessionStatus.RUNNING
    assert running == all(k is KernelStatus.RUNNING for k in kernels)
