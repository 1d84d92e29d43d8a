# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython twin of ``bai/common/_slots_py.py`` (see there for the contract).

Amounts that are exact ``int`` objects below 2**62 in magnitude are read into
C ``long long`` so that sums, differences and comparisons cannot overflow;
anything else (huge ints, ``±inf``) goes through Python arithmetic, so results
are identical to the pure-Python module in every case.
"""

from cpython.dict cimport PyDict_Copy, PyDict_GetItem, PyDict_Next, PyDict_SetItem
from cpython.object cimport Py_EQ, Py_LE, PyObject, PyObject_RichCompareBool

from bai.common._slots_py import undefined

cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow)
    int PyDict_Contains(object p, object key) except -1

cdef long long _LIMIT = 1LL << 62


cdef inline bint _small(object value, long long* out):
    """Store *value* in *out* and return True if it is an int of magnitude below 2**62."""
    cdef int overflow = 0
    cdef long long number
    if not PyLong_CheckExact(value):
        return False
    number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow != 0 or number >= _LIMIT or number <= -_LIMIT:
        return False
    out[0] = number
    return True


cdef inline dict _combine(dict a, dict b, bint subtracting):
    """``a + b`` or ``a - b`` slot by slot: the keys of ``a`` in order, then those only in ``b``."""
    cdef dict out = <dict>PyDict_Copy(a)
    cdef Py_ssize_t pos = 0
    cdef PyObject* key_p
    cdef PyObject* value_p
    cdef PyObject* current_p
    cdef long long x, y
    while PyDict_Next(b, &pos, &key_p, &value_p):
        key = <object>key_p
        value = <object>value_p
        current_p = PyDict_GetItem(out, key)
        if current_p is NULL and not subtracting:
            # 0 + value is value itself: store it without arithmetic.
            PyDict_SetItem(out, key, value)
            continue
        current = 0 if current_p is NULL else <object>current_p
        if _small(current, &x) and _small(value, &y):
            PyDict_SetItem(out, key, x - y if subtracting else x + y)
            continue
        result = current - value if subtracting else current + value
        # inf + -inf (or inf - inf) is the only way to get NaN from these values.
        if result != result:
            raise undefined(key, "subtraction" if subtracting else "addition")
        PyDict_SetItem(out, key, result)
    return out


cdef inline bint _holds(object left, object right, int op) except -1:
    """Whether ``left <= right`` (*op* ``Py_LE``) or ``left == right`` (``Py_EQ``)."""
    cdef long long x, y
    if _small(left, &x) and _small(right, &y):
        return x <= y if op == Py_LE else x == y
    return PyObject_RichCompareBool(left, right, op)


cdef inline bint _all_slots(dict a, dict b, int op) except -1:
    """Whether :func:`_holds` for ``a[k]`` and ``b[k]`` of every slot ``k`` of either dict."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* key_p
    cdef PyObject* value_p
    cdef PyObject* other_p
    cdef long long y
    while PyDict_Next(a, &pos, &key_p, &value_p):
        other_p = PyDict_GetItem(b, <object>key_p)
        if not _holds(<object>value_p, 0 if other_p is NULL else <object>other_p, op):
            return False
    pos = 0
    while PyDict_Next(b, &pos, &key_p, &value_p):
        # A slot only in b is compared with a's implicit zero.
        value = <object>value_p
        if _small(value, &y):
            if (0 <= y if op == Py_LE else y == 0):
                continue
        elif PyObject_RichCompareBool(0, value, op):
            continue
        if not PyDict_Contains(a, <object>key_p):
            return False
    return True


def add(dict a not None, dict b not None):
    """Return ``a + b`` slot by slot: the keys of ``a`` in order, then those only in ``b``."""
    return _combine(a, b, False)


def subtract(dict a not None, dict b not None):
    """Return ``a - b`` slot by slot (may be negative); key order as :func:`add`."""
    return _combine(a, b, True)


def le(dict a not None, dict b not None):
    """Return whether ``a[k] <= b[k]`` for every slot ``k`` of either dict."""
    return _all_slots(a, b, Py_LE)


def eq(dict a not None, dict b not None):
    """Return whether ``a[k] == b[k]`` for every slot ``k`` of either dict."""
    return _all_slots(a, b, Py_EQ)
