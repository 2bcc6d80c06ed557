/* The rule tables' look-ups (otel_bridge/mapping/lookup.py) in C.
 *
 * The mapping calls these some thirty times per span; in Python each call costs more in the interpreter
 * than in the look-up itself. lookup.py holds the reference versions: same arguments, same results
 * (tests/test_lookup_native.py compares them), for the trees and rule tables the mapping passes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include "_text.h"

static PyObject *conflict_key; /* otel_bridge.decode.otlp.CONFLICT_KEY */

/* The value at `path` (a tuple of str) in `tree`, borrowed; NULL without an error when absent. */
static PyObject *find_in(PyObject *tree, PyObject *path) {
    PyObject *node = tree;
    Py_ssize_t n = PyTuple_GET_SIZE(path);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyTuple_GET_ITEM(path, i);
        if (PyDict_CheckExact(node)) {
            node = PyDict_GetItemWithError(node, part);
            if (!node || node == Py_None) return NULL;
        } else if (PyList_CheckExact(node) && PyUnicode_Check(part) && is_digits(part)) {
            PyObject *index = PyLong_FromUnicodeObject(part, 10); /* int(part), as the reference */
            if (!index) return NULL;
            int overflow;
            long long at = PyLong_AsLongLongAndOverflow(index, &overflow);
            Py_DECREF(index);
            if (overflow || at >= PyList_GET_SIZE(node)) return NULL;
            node = PyList_GET_ITEM(node, at);
            if (node == Py_None) return NULL; /* a null array item is absent, as a null value is */
        } else {
            return NULL;
        }
    }
    return node;
}

static int check_path(PyObject *path) {
    if (!PyTuple_Check(path)) {
        PyErr_Format(PyExc_TypeError, "a key path must be a tuple, not %.100s", Py_TYPE(path)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *find(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "find(tree, path) takes 2 arguments");
        return NULL;
    }
    if (check_path(args[1]) < 0) return NULL;
    PyObject *value = find_in(args[0], args[1]);
    if (!value) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return Py_NewRef(value);
}

/* The first (key, path) source present in `tree` whose value passes: truthy (truthy=1) or not None.
 * Sets *key to the source's key (borrowed); returns the value (borrowed) or NULL. */
static PyObject *first_source(PyObject *tree, PyObject *sources, int truthy, PyObject **key) {
    if (!PyDict_Check(tree)) {
        PyErr_Format(PyExc_TypeError, "tree must be a dict, not %.100s", Py_TYPE(tree)->tp_name);
        return NULL;
    }
    if (!PyTuple_Check(sources)) {
        PyErr_Format(PyExc_TypeError, "sources must be a tuple, not %.100s", Py_TYPE(sources)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(sources);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *source = PyTuple_GET_ITEM(sources, i);
        if (!PyTuple_Check(source) || PyTuple_GET_SIZE(source) != 2) {
            PyErr_SetString(PyExc_TypeError, "a source must be a (key, path) tuple");
            return NULL;
        }
        PyObject *path = PyTuple_GET_ITEM(source, 1);
        if (check_path(path) < 0) return NULL;
        if (PyTuple_GET_SIZE(path) == 0) continue; /* the reference reads path[0]: no rule has an empty path */
        /* Most sources belong to conventions the span does not use: one dict probe rules them out. */
        int present = PyDict_Contains(tree, PyTuple_GET_ITEM(path, 0));
        if (present < 0) return NULL;
        if (!present) continue;
        PyObject *value = find_in(tree, path);
        if (!value) {
            if (PyErr_Occurred()) return NULL;
            continue;
        }
        if (truthy) {
            int yes = PyObject_IsTrue(value);
            if (yes < 0) return NULL;
            if (!yes) continue;
        }
        *key = PyTuple_GET_ITEM(source, 0);
        return value;
    }
    return NULL;
}

#define TWO_ARGS(name)                                                                  \
    if (nargs != 2) {                                                                   \
        PyErr_SetString(PyExc_TypeError, name "(tree, sources) takes 2 arguments");     \
        return NULL;                                                                    \
    }

static PyObject *first_truthy(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    TWO_ARGS("first_truthy")
    PyObject *key = NULL, *value = first_source(args[0], args[1], 1, &key);
    if (!value) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return PyTuple_Pack(2, key, value);
}

static PyObject *first(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    TWO_ARGS("first")
    PyObject *key = NULL, *value = first_source(args[0], args[1], 1, &key);
    if (!value) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return Py_NewRef(value);
}

static PyObject *first_present(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    TWO_ARGS("first_present")
    PyObject *key = NULL, *value = first_source(args[0], args[1], 0, &key);
    if (!value) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return Py_NewRef(value);
}

/* `x` beside `x.y`: the scalar sent for `x` is kept under CONFLICT_KEY (borrowed; NULL for None). */
static PyObject *scalar(PyObject *value) {
    if (PyDict_CheckExact(value)) {
        PyObject *inner = PyDict_GetItemWithError(value, conflict_key);
        return inner == Py_None ? NULL : inner;
    }
    return value == Py_None ? NULL : value;
}

/* See lookup.as_int: a non-negative int64, from an int, an integral float or a string of ASCII digits. */
static PyObject *as_int(PyObject *module, PyObject *arg) {
    PyObject *value = scalar(arg), *number;
    if (!value) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (PyFloat_CheckExact(value)) {
        double d = PyFloat_AS_DOUBLE(value);
        /* float.is_integer(), then the range the reference checks after int(value) */
        if (!isfinite(d) || floor(d) != d || d < 0.0 || d >= 9223372036854775808.0) Py_RETURN_NONE;
        number = PyLong_FromDouble(d);
    } else if (PyUnicode_CheckExact(value)) {
        Py_ssize_t length = PyUnicode_GET_LENGTH(value);
        if (length == 0 || !PyUnicode_IS_ASCII(value)) Py_RETURN_NONE;
        const Py_UCS1 *digits = PyUnicode_1BYTE_DATA(value);
        for (Py_ssize_t i = 0; i < length; i++) {
            if (digits[i] < '0' || digits[i] > '9') Py_RETURN_NONE;
        }
        number = PyLong_FromUnicodeObject(value, 10);
    } else if (PyLong_CheckExact(value)) {
        number = Py_NewRef(value);
    } else {
        Py_RETURN_NONE;
    }
    if (!number) return NULL;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (overflow || v < 0) {
        Py_DECREF(number);
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE; /* negative or past 64 bits: not a count */
    }
    return number;
}

static PyObject *as_str(PyObject *module, PyObject *arg) {
    PyObject *value = scalar(arg);
    if (!value) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (PyUnicode_CheckExact(value)) {
        if (PyUnicode_GET_LENGTH(value) == 0) Py_RETURN_NONE;
        return Py_NewRef(value);
    }
    if (PyLong_CheckExact(value) || PyFloat_CheckExact(value) || PyBool_Check(value)) return PyObject_Str(value);
    Py_RETURN_NONE;
}

static PyObject *as_bool(PyObject *module, PyObject *arg) {
    PyObject *value = scalar(arg);
    if (!value) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (PyBool_Check(value)) return Py_NewRef(value);
    if (PyUnicode_CheckExact(value)) {
        PyObject *lower = PyObject_CallMethod(value, "lower", NULL);
        if (!lower) return NULL;
        int is_true = PyUnicode_CompareWithASCIIString(lower, "true") == 0;
        int is_false = PyUnicode_CompareWithASCIIString(lower, "false") == 0;
        Py_DECREF(lower);
        if (is_true) Py_RETURN_TRUE;
        if (is_false) Py_RETURN_FALSE;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"find", (PyCFunction)(void (*)(void))find, METH_FASTCALL, "find(tree, path): see lookup.find"},
    {"first_truthy", (PyCFunction)(void (*)(void))first_truthy, METH_FASTCALL, "see lookup.first_truthy"},
    {"first", (PyCFunction)(void (*)(void))first, METH_FASTCALL, "see lookup.first"},
    {"first_present", (PyCFunction)(void (*)(void))first_present, METH_FASTCALL, "see lookup.first_present"},
    {"as_int", as_int, METH_O, "see lookup.as_int"},
    {"as_str", as_str, METH_O, "see lookup.as_str"},
    {"as_bool", as_bool, METH_O, "see lookup.as_bool"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "otel_bridge.mapping._lookup", NULL, -1, methods,
                                        NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__lookup(void) {
    PyObject *otlp = PyImport_ImportModule("otel_bridge.decode.otlp");
    if (!otlp) return NULL;
    conflict_key = PyObject_GetAttrString(otlp, "CONFLICT_KEY");
    Py_DECREF(otlp);
    if (!conflict_key) return NULL;
    return PyModule_Create(&module_def);
}
