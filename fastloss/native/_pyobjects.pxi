# Identity checks over lists of Python objects, for the optimizer step's replay of a
# param group (fastloss/torch/_slots.py): each one a C loop over the list instead of
# a Python-level pass (~10-20 ns an element less, which is most of a 1000-tensor step).
# They hold the GIL (they read Python objects) and change nothing.

from libc.stdint cimport int64_t
from cpython.object cimport PyObject

cdef extern from "Python.h":
    PyObject* PyList_GET_ITEM(object, Py_ssize_t)
    int PyDict_Next(object, Py_ssize_t*, PyObject**, PyObject**)


def same_objects(list a, list b):
    """True when ``a[i] is b[i]`` for every i (and the lengths match)."""
    cdef Py_ssize_t n = len(a), i
    if len(b) != n:
        return False
    for i in range(n):
        if PyList_GET_ITEM(a, i) != PyList_GET_ITEM(b, i):
            return False
    return True


def grads_if_new(list params, list cached):
    """None when ``params[i].grad is cached[i]`` for every i, else the list of the
    current ``.grad`` of every param (``cached`` has one entry per param)."""
    cdef Py_ssize_t n = len(params), i
    if len(cached) != n:
        raise ValueError("grads_if_new: one cached entry per param")
    for i in range(n):
        g = (<object>PyList_GET_ITEM(params, i)).grad
        if <PyObject*>g != PyList_GET_ITEM(cached, i):
            return [p.grad for p in params]
    return None


def same_addresses(list objs, const int64_t[::1] addrs, address):
    """True when ``address(objs[i]) == addrs[i]`` for every i (``address``: e.g.
    ``torch.Tensor.data_ptr``)."""
    cdef Py_ssize_t n = len(objs), i
    if addrs.shape[0] != n:
        return False
    for i in range(n):
        if <int64_t>address(<object>PyList_GET_ITEM(objs, i)) != addrs[i]:
            return False
    return True


def same_dict_values(list dicts, list values):
    """True when the values of the dicts, in order, are the objects of ``values`` (the
    same count, each ``is`` its counterpart)."""
    cdef Py_ssize_t m = len(values), k = 0, pos
    cdef PyObject* key
    cdef PyObject* v
    for d in dicts:
        if type(d) is not dict:
            return False
        pos = 0
        while PyDict_Next(d, &pos, &key, &v):
            if k >= m or v != PyList_GET_ITEM(values, k):
                return False
            k += 1
    return k == m


def new_grad_addresses(list grads, list params, list meta, tensor_type, strided):
    """The data pointers of new gradients, checked against their params: for each i,
    ``grads[i]`` must be a ``tensor_type`` (exactly) on the CPU, ``strided``, contiguous,
    of the dtype and shape in ``meta[i]`` (the param's ``(dtype, shape, address,
    nbytes)``), not overlapping the param's bytes, and ``params[i]`` still contiguous.
    Returns (the pointer of every grad, those of the non-empty ones), or None when one
    fails (the caller then takes the path that raises the error)."""
    cdef Py_ssize_t n = len(grads), i
    cdef int64_t ga, pa, nb
    if len(params) != n or len(meta) != n:
        return None
    ptrs, live = [], []
    for i in range(n):
        g = <object>PyList_GET_ITEM(grads, i)
        p = <object>PyList_GET_ITEM(params, i)
        dt, shape, pa, nb = <object>PyList_GET_ITEM(meta, i)
        if type(g) is not tensor_type or g.dtype is not dt or not g.is_cpu \
                or g.layout is not strided or g.shape != shape \
                or not g.is_contiguous() or not p.is_contiguous():
            return None
        ga = g.data_ptr()
        ptrs.append(ga)
        if nb:  # (empty tensors are not stepped)
            if ga < pa + nb and pa < ga + nb:
                return None
            live.append(ga)
    return ptrs, live
