/* Helpers the C extensions share (header-only: each extension is its own shared object). */
#ifndef OTEL_BRIDGE_TEXT_H
#define OTEL_BRIDGE_TEXT_H

#include <Python.h>

/* str.isdigit(): non-empty, and every character a digit (Unicode digits included, as in Python). */
static inline int is_digits(PyObject *s) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (n == 0) return 0;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!Py_UNICODE_ISDIGIT(PyUnicode_READ(kind, data, i))) return 0;
    return 1;
}

#endif
