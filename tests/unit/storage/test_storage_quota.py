"""Quota arithmetic of the storage proxy (bai.storage.quota)."""

from __future__ import annotations

import pytest

from bai.common.storage_api import StorageErrorType
from bai.storage.errors import StorageError
from bai.storage.quota import Budget, check_room


def test_no_limit_takes_anything() -> None:
    check_room([Budget("folder f", None, used=10**15, reserved=10**15)], 10**15)


def test_exactly_at_the_limit_is_allowed() -> None:
    check_room([Budget("folder f", 100, used=60, reserved=30)], 10)


def test_one_byte_over_is_refused_naming_the_numbers() -> None:
    with pytest.raises(StorageError) as caught:
        check_room([Budget("folder f", 100, used=60, reserved=30)], 11, field="size")
    exc = caught.value
    assert exc.error_type is StorageErrorType.QUOTA_EXCEEDED
    assert exc.status == 413
    assert exc.field == "size"
    assert "100" in exc.detail and "60 used" in exc.detail and "30 reserved" in exc.detail


def test_the_scope_limit_counts_even_when_the_folder_has_room() -> None:
    budgets = [Budget("folder f", None, used=5), Budget("quota scope user:x", 10, used=8)]
    check_room(budgets, 2)
    with pytest.raises(StorageError, match="quota scope user:x"):
        check_room(budgets, 3)


def test_adding_nothing_is_refused_only_once_over() -> None:
    check_room([Budget("folder f", 10, used=10)], 0)
    with pytest.raises(StorageError):
        check_room([Budget("folder f", 10, used=11)], 0)


def test_room() -> None:
    assert Budget("f", None, 5).room() is None
    assert Budget("f", 10, 4, 3).room() == 3
    assert Budget("f", 10, 12).room() == -2
