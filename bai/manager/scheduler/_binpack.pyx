# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Cython twin of ``bai/manager/scheduler/_binpack_py.py`` (see there for the contract).

Rows live in one C array of ``long long``.  Construction accepts only exact
``int`` cells of magnitude below 2**62 and raises :class:`OverflowError`
otherwise, so sums and differences of a cell and a request that fits it can
never overflow; the caller then falls back to the Python twin, which gives
the same answers for any amounts.  A requested amount that is not such an
int exceeds every cell, so it fits nowhere, as in the Python twin.
"""

from libc.stdlib cimport free, malloc

cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1

cdef long long _LIMIT = 1LL << 62

CONCENTRATED = 0
DISPERSED = 1
ROUNDROBIN = 2


cdef inline bint _small(object value, long long* out) except -1:
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


cdef class Bins:
    """Free capacity rows of a set of agents; see the Python twin's docstring."""

    cdef long long* _cells
    cdef Py_ssize_t _count
    cdef Py_ssize_t _stride
    cdef readonly Py_ssize_t width
    cdef Py_ssize_t* _members
    cdef Py_ssize_t* _starts
    cdef Py_ssize_t _groups
    cdef long long* _req
    cdef Py_ssize_t* _wanted

    def __cinit__(self, rows, groups, Py_ssize_t width):
        cdef Py_ssize_t index, slot, position, total
        cdef long long value
        self.width = width
        self._stride = width + 1
        self._count = len(rows)
        self._groups = len(groups)
        total = 0
        for group in groups:
            total += len(group)
        self._cells = <long long*>malloc(max(1, self._count * self._stride) * sizeof(long long))
        self._members = <Py_ssize_t*>malloc(max(1, total) * sizeof(Py_ssize_t))
        self._starts = <Py_ssize_t*>malloc((self._groups + 1) * sizeof(Py_ssize_t))
        self._req = <long long*>malloc(self._stride * sizeof(long long))
        self._wanted = <Py_ssize_t*>malloc(self._stride * sizeof(Py_ssize_t))
        if (
            self._cells is NULL or self._members is NULL or self._starts is NULL
            or self._req is NULL or self._wanted is NULL
        ):
            raise MemoryError()
        for index in range(self._count):
            row = rows[index]
            if len(row) != self._stride:
                raise ValueError(f"a row needs {self._stride} cells, got {len(row)}")
            for slot in range(self._stride):
                if not _small(row[slot], &value):
                    raise OverflowError("a cell is not an int of magnitude below 2**62")
                self._cells[index * self._stride + slot] = value
        position = 0
        for index in range(self._groups):
            self._starts[index] = position
            for member in sorted(groups[index]):
                if not 0 <= member < self._count:
                    raise ValueError("a group names an agent index out of range")
                self._members[position] = member
                position += 1
        self._starts[self._groups] = position

    def __dealloc__(self):
        free(self._cells)
        free(self._members)
        free(self._starts)
        free(self._req)
        free(self._wanted)

    cdef Py_ssize_t _load(self, req) except -2:
        """Copy *req* into the buffers; return how many slots it wants, or -1 if it fits nowhere."""
        cdef Py_ssize_t slot, wanted = 0
        cdef long long value
        if len(req) != self.width:
            raise ValueError(f"a request needs {self.width} amounts, got {len(req)}")
        for slot in range(self.width):
            amount = req[slot]
            if not _small(amount, &value):
                # Beyond every cell: a huge negative amount is met by all, a huge
                # positive one (or infinity) by none, exactly as in the Python twin.
                if amount < 0:
                    value = -_LIMIT
                else:
                    return -1
            self._req[slot] = value
            if value != 0:
                self._wanted[wanted] = slot
                wanted += 1
        return wanted

    cdef inline bint _fits_wanted(self, Py_ssize_t agent, Py_ssize_t wanted) noexcept:
        cdef long long* row = self._cells + agent * self._stride
        cdef Py_ssize_t i, slot
        for i in range(wanted):
            slot = self._wanted[i]
            if row[slot] < self._req[slot]:
                return False
        return True

    cdef inline int _compare(self, Py_ssize_t a, Py_ssize_t b, Py_ssize_t wanted) noexcept:
        """Compare the ranks of agents *a* and *b*: wanted slots in order, then containers."""
        cdef long long* x = self._cells + a * self._stride
        cdef long long* y = self._cells + b * self._stride
        cdef Py_ssize_t i, slot
        for i in range(wanted):
            slot = self._wanted[i]
            if x[slot] != y[slot]:
                return -1 if x[slot] < y[slot] else 1
        slot = self.width
        if x[slot] != y[slot]:
            return -1 if x[slot] < y[slot] else 1
        return 0

    def row(self, Py_ssize_t agent):
        """Return a copy of the agent's row."""
        self._check(agent)
        cdef long long* row = self._cells + agent * self._stride
        return [row[slot] for slot in range(self._stride)]

    def fits(self, Py_ssize_t agent, req):
        """Whether *req* (one amount per slot) fits the agent's free amounts."""
        self._check(agent)
        cdef Py_ssize_t slot
        cdef long long* row = self._cells + agent * self._stride
        if self._load(req) < 0:
            return False
        for slot in range(self.width):
            if row[slot] < self._req[slot]:
                return False
        return True

    def pick(self, req, groups, extras, int mode, Py_ssize_t after):
        """Return the index of the agent chosen by *mode* for *req*, or -1."""
        cdef Py_ssize_t wanted, group, start, end, count, position, offset, agent
        cdef Py_ssize_t best = -1, number
        cdef long long extra, best_extra = 0
        cdef int order
        cdef bint concentrated = mode == CONCENTRATED
        if len(groups) != len(extras):
            raise ValueError("groups and extras differ in length")
        wanted = self._load(req)
        if wanted < 0:
            return -1
        if mode == ROUNDROBIN:
            group = self._group(groups[0])
            start = self._starts[group]
            end = self._starts[group + 1]
            count = end - start
            position = start
            while position < end and self._members[position] <= after:
                position += 1
            for offset in range(count):
                agent = self._members[start + (position - start + offset) % count]
                if self._fits_wanted(agent, wanted):
                    return agent
            return -1
        for number in range(len(groups)):
            group = self._group(groups[number])
            extra = extras[number]
            if best >= 0 and extra > best_extra:
                break
            for position in range(self._starts[group], self._starts[group + 1]):
                agent = self._members[position]
                if not self._fits_wanted(agent, wanted):
                    continue
                if best >= 0:
                    order = self._compare(agent, best, wanted)
                    if not (
                        (order < 0 if concentrated else order > 0) or (order == 0 and agent < best)
                    ):
                        continue
                best = agent
                best_extra = extra
        return best

    cdef Py_ssize_t _group(self, object number) except -1:
        cdef Py_ssize_t group = number
        if not 0 <= group < self._groups:
            raise IndexError("no such group")
        return group

    def take(self, Py_ssize_t agent, req, long long kernels):
        """Subtract *req* and add *kernels* containers to the agent (after a fit)."""
        self._shift(agent, req, kernels, -1)

    def give(self, Py_ssize_t agent, req, long long kernels):
        """Undo :meth:`take` with the same arguments."""
        self._shift(agent, req, kernels, 1)

    cdef void _shift(self, Py_ssize_t agent, req, long long kernels, int sign) except *:
        self._check(agent)
        cdef Py_ssize_t slot
        cdef long long* row = self._cells + agent * self._stride
        if self._load(req) < 0:
            raise OverflowError("a requested amount is too large to take")
        for slot in range(self.width):
            row[slot] += sign * self._req[slot]
        row[self.width] += sign * kernels

    cdef void _check(self, Py_ssize_t agent) except *:
        if not 0 <= agent < self._count:
            raise IndexError("no such agent")
