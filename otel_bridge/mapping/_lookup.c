/* The rule tables' look-ups (otel_bridge/mapping/lookup.py) and the calls' time format in C.
 *
 * The mapping calls these some thirty times per span; in Python each call costs more in the interpreter
 * than in the look-up itself. lookup.py holds the reference versions: same arguments, same results
 * (tests/test_lookup_native.py compares them), for the trees and rule tables the mapping passes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdio.h>
#include <time.h>
#include "_text.h"

static PyObject *conflict_key; /* otel_bridge.decode.otlp.CONFLICT_KEY */
static PyObject *iso_time_reference; /* otel_bridge.decode.otlp.iso_time, for a time outside 0..2**64-1 */

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

/* The value of one (key, path) source in `tree` (a dict): 1 and *value (borrowed) when present and not None,
 * 0 when absent, -1 on an error. */
static int source_value(PyObject *tree, PyObject *source, PyObject **value) {
    if (!PyTuple_Check(source) || PyTuple_GET_SIZE(source) != 2) {
        PyErr_SetString(PyExc_TypeError, "a source must be a (key, path) tuple");
        return -1;
    }
    PyObject *path = PyTuple_GET_ITEM(source, 1);
    if (check_path(path) < 0) return -1;
    if (PyTuple_GET_SIZE(path) == 0) return 0; /* the reference reads path[0]: no rule has an empty path */
    /* Most sources belong to conventions the span does not use: one dict probe rules them out. */
    int present = PyDict_Contains(tree, PyTuple_GET_ITEM(path, 0));
    if (present <= 0) return present;
    *value = find_in(tree, path);
    if (!*value) return PyErr_Occurred() ? -1 : 0;
    return 1;
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
        PyObject *source = PyTuple_GET_ITEM(sources, i), *value;
        int found = source_value(tree, source, &value);
        if (found < 0) return NULL;
        if (!found) continue;
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

/* See lookup.first_of_each: {name: the first truthy value of its sources, in the first tree that has one}. */
static PyObject *first_of_each(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "first_of_each(trees, table) takes 2 arguments");
        return NULL;
    }
    PyObject *trees = args[0], *table = args[1];
    if (!PyTuple_Check(trees) || !PyTuple_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "first_of_each(trees, table): both must be tuples");
        return NULL;
    }
    PyObject *found = PyDict_New();
    if (!found) return NULL;
    Py_ssize_t rows = PyTuple_GET_SIZE(table), count = PyTuple_GET_SIZE(trees);
    for (Py_ssize_t i = 0; i < rows; i++) {
        PyObject *row = PyTuple_GET_ITEM(table, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 2) {
            PyErr_SetString(PyExc_TypeError, "a table row must be a (name, sources) tuple");
            goto fail;
        }
        for (Py_ssize_t j = 0; j < count; j++) {
            PyObject *key = NULL, *value = first_source(PyTuple_GET_ITEM(trees, j), PyTuple_GET_ITEM(row, 1), 1, &key);
            if (value) {
                if (PyDict_SetItem(found, PyTuple_GET_ITEM(row, 0), value) < 0) goto fail;
                break;
            }
            if (PyErr_Occurred()) goto fail;
        }
    }
    return found;
fail:
    Py_DECREF(found);
    return NULL;
}

/* See lookup.counts: ({field: the first count its sources hold}, how many values present were no count). */
static PyObject *counts(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "counts(tree, table) takes 2 arguments");
        return NULL;
    }
    PyObject *tree = args[0], *table = args[1];
    if (!PyDict_Check(tree) || !PyTuple_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "counts(tree, table): a dict and a tuple");
        return NULL;
    }
    PyObject *found = PyDict_New();
    if (!found) return NULL;
    Py_ssize_t unusable = 0, rows = PyTuple_GET_SIZE(table);
    for (Py_ssize_t i = 0; i < rows; i++) {
        PyObject *row = PyTuple_GET_ITEM(table, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(row, 1))) {
            PyErr_SetString(PyExc_TypeError, "a table row must be a (field, sources) tuple");
            goto fail;
        }
        PyObject *sources = PyTuple_GET_ITEM(row, 1);
        Py_ssize_t n = PyTuple_GET_SIZE(sources);
        for (Py_ssize_t k = 0; k < n; k++) {
            PyObject *value;
            int present = source_value(tree, PyTuple_GET_ITEM(sources, k), &value);
            if (present < 0) goto fail;
            if (!present) continue;
            PyObject *count = as_int(module, value);
            if (!count) goto fail;
            if (count == Py_None) {
                Py_DECREF(count);
                unusable++; /* not a count: otel_dump keeps it */
                continue;
            }
            int failed = PyDict_SetItem(found, PyTuple_GET_ITEM(row, 0), count);
            Py_DECREF(count);
            if (failed < 0) goto fail;
            break;
        }
    }
    return Py_BuildValue("(Nn)", found, unusable);
fail:
    Py_DECREF(found);
    return NULL;
}

/* See otlp.iso_time: nanoseconds since the epoch -> "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, microseconds). */
static PyObject *iso_time(PyObject *module, PyObject *arg) {
    if (!PyLong_CheckExact(arg)) return PyObject_CallOneArg(iso_time_reference, arg);
    unsigned long long nanos = PyLong_AsUnsignedLongLong(arg);
    if (nanos == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear(); /* negative, or past 64 bits: the reference's arithmetic */
        return PyObject_CallOneArg(iso_time_reference, arg);
    }
    time_t seconds = (time_t)(nanos / 1000000000ULL);
    struct tm t;
    if (!gmtime_r(&seconds, &t)) return PyObject_CallOneArg(iso_time_reference, arg);
    char text[64];
    int n = snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, (unsigned)(nanos % 1000000000ULL / 1000ULL));
    return PyUnicode_FromStringAndSize(text, n);
}

static PyMethodDef methods[] = {
    {"find", (PyCFunction)(void (*)(void))find, METH_FASTCALL, "find(tree, path): see lookup.find"},
    {"first_truthy", (PyCFunction)(void (*)(void))first_truthy, METH_FASTCALL, "see lookup.first_truthy"},
    {"first", (PyCFunction)(void (*)(void))first, METH_FASTCALL, "see lookup.first"},
    {"first_present", (PyCFunction)(void (*)(void))first_present, METH_FASTCALL, "see lookup.first_present"},
    {"as_int", as_int, METH_O, "see lookup.as_int"},
    {"as_str", as_str, METH_O, "see lookup.as_str"},
    {"as_bool", as_bool, METH_O, "see lookup.as_bool"},
    {"first_of_each", (PyCFunction)(void (*)(void))first_of_each, METH_FASTCALL, "see lookup.first_of_each"},
    {"counts", (PyCFunction)(void (*)(void))counts, METH_FASTCALL, "see lookup.counts"},
    {"iso_time", iso_time, METH_O, "see otel_bridge.decode.otlp.iso_time"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "otel_bridge.mapping._lookup", NULL, -1, methods,
                                        NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__lookup(void) {
    PyObject *otlp = PyImport_ImportModule("otel_bridge.decode.otlp");
    if (!otlp) return NULL;
    conflict_key = PyObject_GetAttrString(otlp, "CONFLICT_KEY");
    iso_time_reference = PyObject_GetAttrString(otlp, "iso_time");
    Py_DECREF(otlp);
    if (!conflict_key || !iso_time_reference) return NULL;
    return PyModule_Create(&module_def);
}
