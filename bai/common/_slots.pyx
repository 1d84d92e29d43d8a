# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython twin of ``bai/common/_slots_py.py`` (see there for the contract).

Amounts that are exact ``int`` objects below 2**62 in magnitude are read into
C ``long long`` so that sums, differences and comparisons cannot overflow;
anything else (huge ints, ``±inf``) goes through Python arithmetic, so results
are identical to the pure-Python module in every case.
"""

from cpython.dict cimport PyDict_Copy, PyDict_GetItem, PyDict_Next, PyDict_SetItem
from cpython.object cimport PyObject

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


def add(dict a not None, dict b not None):
    """Return ``a + b`` slot by slot: the keys of ``a`` in order, then those only in ``b``."""
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
        if current_p is NULL:
            PyDict_SetItem(out, key, value)
            continue
        current = <object>current_p
        if _small(current, &x) and _small(value, &y):
            PyDict_SetItem(out, key, x + y)
            continue
        total = current + value
        if total != total:
            raise undefined(key, "addition")
        PyDict_SetItem(out, key, total)
    return out


def subtract(dict a not None, dict b not None):
    """Return ``a - b`` slot by slot (may be negative); key order as :func:`add`."""
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
        if current_p is NULL:
            current = 0
        else:
            current = <object>current_p
        if _small(current, &x) and _small(value, &y):
            PyDict_SetItem(out, key, x - y)
            continue
        diff = current - value
        if diff != diff:
            raise undefined(key, "subtraction")
        PyDict_SetItem(out, key, diff)
    return out


def le(dict a not None, dict b not None):
    """Return whether ``a[k] <= b[k]`` for every slot ``k`` of either dict."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* key_p
    cdef PyObject* value_p
    cdef PyObject* other_p
    cdef long long x, y
    while PyDict_Next(a, &pos, &key_p, &value_p):
        value = <object>value_p
        other_p = PyDict_GetItem(b, <object>key_p)
        if other_p is NULL:
            other = 0
        else:
            other = <object>other_p
        if _small(value, &x) and _small(other, &y):
            if x > y:
                return False
        elif value > other:
            return False
    pos = 0
    while PyDict_Next(b, &pos, &key_p, &value_p):
        value = <object>value_p
        if _small(value, &x):
            if x >= 0:
                continue
        elif not value < 0:
            continue
        if not PyDict_Contains(a, <object>key_p):
            return False
    return True


def eq(dict a not None, dict b not None):
    """Return whether ``a[k] == b[k]`` for every slot ``k`` of either dict."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* key_p
    cdef PyObject* value_p
    cdef PyObject* other_p
    cdef long long x, y
    while PyDict_Next(a, &pos, &key_p, &value_p):
        value = <object>value_p
        other_p = PyDict_GetItem(b, <object>key_p)
        if other_p is NULL:
            other = 0
        else:
            other = <object>other_p
        if _small(value, &x) and _small(other, &y):
            if x != y:
                return False
        elif value != other:
            return False
    pos = 0
    while PyDict_Next(b, &pos, &key_p, &value_p):
        value = <object>value_p
        if _small(value, &x):
            if x == 0:
                continue
        elif value == 0:
            continue
        if not PyDict_Contains(a, <object>key_p):
            return False
    return True
