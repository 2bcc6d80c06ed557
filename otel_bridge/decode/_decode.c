/* The OTLP trace decoder: ExportTraceServiceRequest bytes -> otel_bridge.decode.decoded, sanitized as it reads.
 *
 * reference.py's decode_request_python is the reference: the same algorithm (fields read in field-number
 * order, lists read up to their limit and the rest counted), so the same values, tallies and errors
 * (tests/test_decode_native.py compares the two), several times faster, because reading protobuf fields
 * through Python costs more than the whole wire walk here. Two passes over the bytes: `validate` checks
 * the wire format, the UTF-8 of every string field and the nesting depth as the protobuf runtime does, so
 * a request is refused whole or decoded whole; `build` then makes the Python objects.
 *
 * What it takes from Python: at import, the types and helpers named in PyInit__decode; per request, one
 * sanitize.NativeInterface tuple (limits, text_plan, key_verdicts and the Sanitizer's methods, read by
 * position in ctx_init), whose methods it calls only where a value may change (text_plan says how to tell).
 * Field numbers come from _otlp_fields.h.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include "_text.h"
#include "_otlp_fields.h"

/* ------------------------------------------------------------------------------------------------ */
/* Module state: what the decoder takes from Python once.                                            */

static PyObject *refused, *upb_errors;       /* otel_bridge.decode.wire: the error for refused bytes */
static PyObject *json_loads;                 /* orjson.loads */
static PyObject *ResourceSpansType, *ScopeSpansType, *SpanType; /* otel_bridge.decode.decoded */
static PyObject *key_shapes, *key_shape_of;  /* otlp.KEY_SHAPES and otlp.key_shape: one cache for both decoders */
static PyObject *s_conflict, *s_max_attributes, *s_max_events, *s_max_links;
#define UINT32_MAX_COUNT 4294967295ULL
/* The protobuf runtime refuses messages nested 100 deep (the request itself is level 0). */
#define MAX_MESSAGE_DEPTH 100

/* ------------------------------------------------------------------------------------------------ */
/* Wire format.                                                                                      */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Reader;

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };
#define TAG(field, wire_type) (((uint64_t)(field) << 3) | (uint64_t)(wire_type))

/* Every read fails closed: on bad bytes it returns -1, zeroes its output and leaves the reader at its end,
 * so the build pass, which ignores results on bytes already validated, can never read out of bounds. */
static inline int fail(Reader *r) {
    r->p = r->end;
    return -1;
}

static inline int read_varint(Reader *r, uint64_t *out) {
    uint64_t value = 0;
    *out = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return fail(r);
        uint8_t byte = *r->p++;
        value |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return 0;
        }
    }
    return fail(r); /* more than 10 bytes */
}

static inline int read_tag(Reader *r, uint32_t *field, int *wire_type) {
    uint64_t tag;
    *field = 0;
    *wire_type = -1;
    if (read_varint(r, &tag) < 0 || tag > UINT32_MAX || (tag >> 3) == 0) return fail(r);
    *field = (uint32_t)(tag >> 3);
    *wire_type = (int)(tag & 7);
    return 0;
}

/* A length-delimited field's contents. */
static inline int read_len(Reader *r, Reader *sub) {
    uint64_t n;
    sub->p = sub->end = r->end;
    if (read_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p)) return fail(r);
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return 0;
}

static inline int read_fixed64(Reader *r, uint64_t *out) {
    *out = 0;
    if (r->end - r->p < 8) return fail(r);
    memcpy(out, r->p, 8); /* little endian on every platform CPython's wheels target */
    r->p += 8;
    return 0;
}

static inline int read_fixed32(Reader *r, uint32_t *out) {
    *out = 0;
    if (r->end - r->p < 4) return fail(r);
    memcpy(out, r->p, 4);
    r->p += 4;
    return 0;
}

static int skip_group(Reader *r, uint32_t group, int depth);

/* Skip one field of the given wire type (its tag already read). */
static int skip_field(Reader *r, uint32_t field, int wire_type, int depth) {
    uint64_t ignored;
    Reader sub;
    switch (wire_type) {
    case WT_VARINT: return read_varint(r, &ignored);
    case WT_I64: return read_fixed64(r, &ignored);
    case WT_LEN: return read_len(r, &sub);
    case WT_I32: {
        uint32_t v;
        return read_fixed32(r, &v);
    }
    case WT_SGROUP: return skip_group(r, field, depth + 1);
    default: return -1; /* an end group with no start, or wire types 6 and 7 */
    }
}

static int skip_group(Reader *r, uint32_t group, int depth) {
    if (depth >= MAX_MESSAGE_DEPTH) return -2;
    for (;;) {
        uint32_t field;
        int wire_type, rc;
        if (read_tag(r, &field, &wire_type) < 0) return -1;
        if (wire_type == WT_EGROUP) return field == group ? 0 : -1;
        if ((rc = skip_field(r, field, wire_type, depth)) < 0) return rc;
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Pass 1: validate. Each message kind names its string and message fields; the rest is skipped.      */

typedef enum {
    M_REQUEST, M_RESOURCE_SPANS, M_RESOURCE, M_ENTITY_REF, M_SCOPE_SPANS, M_SCOPE, M_SPAN, M_EVENT, M_LINK,
    M_STATUS, M_KEY_VALUE, M_ANY_VALUE, M_ARRAY, M_KVLIST, M_NONE
} Message;

#define STRING_FIELD (-1)

/* What field `field` of `message` holds: a message kind, STRING_FIELD, or M_NONE (a scalar or unknown). */
static int field_kind(Message message, uint32_t field) {
    switch (message) {
    case M_REQUEST: return field == ExportTraceServiceRequest__resource_spans ? M_RESOURCE_SPANS : M_NONE;
    case M_RESOURCE_SPANS:
        switch (field) {
        case ResourceSpans__resource: return M_RESOURCE;
        case ResourceSpans__scope_spans: return M_SCOPE_SPANS;
        case ResourceSpans__schema_url: return STRING_FIELD;
        default: return M_NONE;
        }
    case M_RESOURCE: return field == Resource__attributes ? M_KEY_VALUE : field == Resource__entity_refs ? M_ENTITY_REF : M_NONE;
    case M_ENTITY_REF:
        switch (field) {
        case EntityRef__schema_url: case EntityRef__type: case EntityRef__id_keys: case EntityRef__description_keys:
            return STRING_FIELD;
        default: return M_NONE;
        }
    case M_SCOPE_SPANS:
        switch (field) {
        case ScopeSpans__scope: return M_SCOPE;
        case ScopeSpans__spans: return M_SPAN;
        case ScopeSpans__schema_url: return STRING_FIELD;
        default: return M_NONE;
        }
    case M_SCOPE:
        switch (field) {
        case InstrumentationScope__name: case InstrumentationScope__version: return STRING_FIELD;
        case InstrumentationScope__attributes: return M_KEY_VALUE;
        default: return M_NONE;
        }
    case M_SPAN:
        switch (field) {
        case Span__trace_state: case Span__name: return STRING_FIELD;
        case Span__attributes: return M_KEY_VALUE;
        case Span__events: return M_EVENT;
        case Span__links: return M_LINK;
        case Span__status: return M_STATUS;
        default: return M_NONE;
        }
    case M_EVENT: return field == Event__name ? STRING_FIELD : field == Event__attributes ? M_KEY_VALUE : M_NONE;
    case M_LINK: return field == Link__trace_state ? STRING_FIELD : field == Link__attributes ? M_KEY_VALUE : M_NONE;
    case M_STATUS: return field == Status__message ? STRING_FIELD : M_NONE;
    case M_KEY_VALUE: return field == KeyValue__key ? STRING_FIELD : field == KeyValue__value ? M_ANY_VALUE : M_NONE;
    case M_ANY_VALUE:
        switch (field) {
        case AnyValue__string_value: return STRING_FIELD;
        case AnyValue__array_value: return M_ARRAY;
        case AnyValue__kvlist_value: return M_KVLIST;
        default: return M_NONE;
        }
    case M_ARRAY: return field == ArrayValue__values ? M_ANY_VALUE : M_NONE;
    case M_KVLIST: return field == KeyValueList__values ? M_KEY_VALUE : M_NONE;
    default: return M_NONE;
    }
}

static int valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t chunk;
            memcpy(&chunk, s + i, 8);
            if (!(chunk & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && s[i + 1] < 0xA0) return 0; /* overlong */
            if (c == 0xED && s[i + 1] > 0x9F) return 0; /* a surrogate */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && s[i + 1] < 0x90) return 0; /* overlong */
            if (c == 0xF4 && s[i + 1] > 0x8F) return 0; /* past U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* Negative, and -1 - the index of upb's words for each in wire.UPB_ERRORS. */
enum { E_CORRUPT = -1, E_DEPTH = -2, E_UTF8 = -3 };

/* 0 when `r` holds a valid `message`; counts the spans it meets. */
static int validate(Reader *r, Message message, int depth, Py_ssize_t *spans) {
    if (depth >= MAX_MESSAGE_DEPTH) return E_DEPTH;
    while (r->p < r->end) {
        uint32_t field;
        int wire_type, rc;
        if (read_tag(r, &field, &wire_type) < 0) return E_CORRUPT;
        int kind = field_kind(message, field);
        if (kind == M_NONE || wire_type != WT_LEN) {
            if ((rc = skip_field(r, field, wire_type, depth)) < 0) return rc == -2 ? E_DEPTH : E_CORRUPT;
            continue;
        }
        Reader sub;
        if (read_len(r, &sub) < 0) return E_CORRUPT;
        if (kind == STRING_FIELD) {
            if (!valid_utf8(sub.p, (size_t)(sub.end - sub.p))) return E_UTF8;
        } else {
            if (kind == M_SPAN) (*spans)++;
            if ((rc = validate(&sub, (Message)kind, depth + 1, spans)) < 0) return rc;
        }
    }
    return 0;
}

static void raise_bad_request(Py_ssize_t size, int error) {
    PyObject *detail = PyTuple_GET_ITEM(PyTuple_GET_ITEM(upb_errors, -1 - error), 0); /* borrowed */
    PyObject *exc = PyObject_CallFunction(refused, "nO", size, detail);
    if (!exc) return;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

/* ------------------------------------------------------------------------------------------------ */
/* Pass 2: build. The bytes are valid, so reads cannot fail; errors here are Python's (memory, a     */
/* sanitizer method raising).                                                                        */

#define MAX_ANCHORS 64

typedef struct {
    Py_ssize_t max_attributes, max_events, max_links, max_depth, max_length;
    /* Sanitizer.text_plan: when text(s) may change s. */
    int call_always;
    Py_ssize_t min_length, n_anchors;
    /* Where to look closer: one-byte anchors by byte (the least rule length they need, 0 for none), and a
     * bit per pair of bytes that some longer anchor starts with, so ordinary text is passed over a byte at
     * a time with one table read. */
    Py_ssize_t single_byte_min[256];
    uint8_t starts_pair[65536 / 8];
    struct {
        const char *text;
        Py_ssize_t length, rule_min_length;
    } anchors[MAX_ANCHORS];
    PyObject *plan; /* keeps the anchors' text alive */
    PyObject *key_verdicts; /* dict, or NULL when no key is dropped */
    PyObject *text, *blob, *drops, *too_deep, *too_deep_key, *nested, *hit;
} Ctx;

static PyObject *call1(PyObject *f, PyObject *a) { return PyObject_CallOneArg(f, a); }

static int hit(Ctx *c, PyObject *limit, Py_ssize_t count) {
    PyObject *n = PyLong_FromSsize_t(count);
    if (!n) return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(c->hit, limit, n, NULL);
    Py_DECREF(n);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* Whether text(s) may change s (see Redaction.text_plan): past the length limit, or holding an anchor of a
 * rule it is long enough for. One pass over the UTF-8 bytes; anchors are ASCII, so a byte match is a
 * character match. */
static int text_may_change(Ctx *c, const char *utf8, Py_ssize_t nbytes, Py_ssize_t length) {
    if (c->call_always || length > c->max_length) return 1;
    if (length < c->min_length) return 0;
    const uint8_t *s = (const uint8_t *)utf8;
    for (Py_ssize_t i = 0; i < nbytes; i++) {
        Py_ssize_t single = c->single_byte_min[s[i]];
        if (single && single <= length) return 1;
        if (i + 1 == nbytes) break;
        unsigned pair = ((unsigned)s[i] << 8) | s[i + 1];
        if (!(c->starts_pair[pair >> 3] & (1u << (pair & 7)))) continue;
        for (Py_ssize_t k = 0; k < c->n_anchors; k++) {
            if (c->anchors[k].rule_min_length > length || c->anchors[k].length > nbytes - i) continue;
            if (memcmp(s + i, c->anchors[k].text, (size_t)c->anchors[k].length) == 0) return 1;
        }
    }
    return 0;
}

/* A string field's value as the sanitizer leaves it (new reference). */
static PyObject *clean_text(Ctx *c, const uint8_t *utf8, Py_ssize_t nbytes) {
    PyObject *s = PyUnicode_DecodeUTF8((const char *)utf8, nbytes, NULL);
    if (!s) return NULL;
    if (!text_may_change(c, (const char *)utf8, nbytes, PyUnicode_GET_LENGTH(s))) return s;
    PyObject *cleaned = call1(c->text, s);
    Py_DECREF(s);
    return cleaned;
}

static PyObject *hex_of(const uint8_t *p, Py_ssize_t n) {
    static const char digits[] = "0123456789abcdef";
    PyObject *s = PyUnicode_New(n * 2, 127);
    if (!s) return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[2 * i] = (Py_UCS1)digits[p[i] >> 4];
        out[2 * i + 1] = (Py_UCS1)digits[p[i] & 15];
    }
    return s;
}

/* key -> (parents, last, has_index) (new reference): otlp.KEY_SHAPES, filled by otlp.key_shape. */
static PyObject *key_shape(PyObject *key) {
    PyObject *shape = PyDict_GetItemWithError(key_shapes, key);
    if (shape) return Py_NewRef(shape);
    if (PyErr_Occurred()) return NULL;
    return call1(key_shape_of, key);
}

/* Whether to drop `key` (a dotted path): redaction's key rules, asked only when the cache does not say no. */
static int drops_key(Ctx *c, PyObject *key, int use_cache) {
    if (!c->key_verdicts) return 0;
    if (use_cache) {
        PyObject *verdict = PyDict_GetItemWithError(c->key_verdicts, key);
        if (verdict == Py_False) return 0;
        if (!verdict && PyErr_Occurred()) return -1;
    }
    PyObject *r = call1(c->drops, key);
    if (!r) return -1;
    int yes = PyObject_IsTrue(r);
    Py_DECREF(r);
    return yes;
}

/* otlp._indexed_list: a dict keyed exactly "0".."n-1" (n > 0) as the list it stands for: 1 and *out set when it
 * is one, 0 when not, -1 on error. Its keys are checked for digits first, which allocates nothing: most dicts
 * have other keys. */
static int digit_keys(PyObject *dict) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    if (PyDict_GET_SIZE(dict) == 0) return 0;
    while (PyDict_Next(dict, &pos, &k, &v))
        if (!PyUnicode_Check(k) || !is_digits(k)) return 0;
    return 1;
}

static int index_list(PyObject *dict, PyObject **out) {
    Py_ssize_t n = PyDict_GET_SIZE(dict);
    *out = NULL;
    if (!digit_keys(dict)) return 0;
    PyObject *list = PyList_New(n);
    if (!list) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *index = PyUnicode_FromFormat("%zd", i);
        PyObject *item = index ? PyDict_GetItemWithError(dict, index) : NULL;
        Py_XDECREF(index);
        if (!item) {
            Py_DECREF(list);
            return PyErr_Occurred() ? -1 : 0;
        }
        PyList_SET_ITEM(list, i, Py_NewRef(item));
    }
    *out = list;
    return 1;
}

static PyObject *any_value(Ctx *c, Reader *r, Py_ssize_t levels, PyObject *path);

/* KeyValue -> its key (new reference, or NULL with *value_at empty when absent) and where its value is. */
static PyObject *key_value(Reader *kv, Reader *value_at, int *has_value) {
    PyObject *key = NULL;
    *has_value = 0;
    while (kv->p < kv->end) {
        uint32_t field;
        int wire_type;
        read_tag(kv, &field, &wire_type);
        if (field == KeyValue__key && wire_type == WT_LEN) {
            Reader s;
            read_len(kv, &s);
            Py_XDECREF(key);
            key = PyUnicode_DecodeUTF8((const char *)s.p, s.end - s.p, NULL);
            if (!key) return NULL;
        } else if (field == KeyValue__value && wire_type == WT_LEN) {
            read_len(kv, value_at);
            *has_value = 1;
        } else {
            skip_field(kv, field, wire_type, 0);
        }
    }
    if (!key) key = PyUnicode_New(0, 0);
    return key;
}

/* A JSON-ready value of an AnyValue, as otlp._value_of (new reference). */
static PyObject *any_value(Ctx *c, Reader *r, Py_ssize_t levels, PyObject *path) {
    int kind = 0; /* the oneof field set last */
    uint64_t varint = 0, fixed = 0;
    Reader sub = {0, 0};
    while (r->p < r->end) {
        uint32_t field;
        int wire_type;
        read_tag(r, &field, &wire_type);
        int matches;
        switch (field) {
        case AnyValue__string_value: case AnyValue__array_value: case AnyValue__kvlist_value: case AnyValue__bytes_value:
            matches = wire_type == WT_LEN;
            break;
        case AnyValue__bool_value: case AnyValue__int_value: matches = wire_type == WT_VARINT; break;
        case AnyValue__double_value: matches = wire_type == WT_I64; break;
        default: matches = 0; /* string_value_strindex (profiles only) is read as no value */
        }
        if (!matches) {
            skip_field(r, field, wire_type, 0);
            continue;
        }
        kind = (int)field;
        if (wire_type == WT_LEN) read_len(r, &sub);
        else if (wire_type == WT_VARINT) read_varint(r, &varint);
        else read_fixed64(r, &fixed);
    }
    switch (kind) {
    case AnyValue__string_value: return clean_text(c, sub.p, sub.end - sub.p);
    case AnyValue__bool_value: return PyBool_FromLong(varint != 0);
    case AnyValue__int_value: return PyLong_FromLongLong((long long)varint);
    case AnyValue__double_value: {
        double number;
        memcpy(&number, &fixed, 8);
        PyObject *f = PyFloat_FromDouble(number);
        if (f && (number != number || number == Py_HUGE_VAL || number == -Py_HUGE_VAL)) {
            PyObject *s = PyObject_Str(f); /* "nan", "inf", "-inf", as Weave's ingestion writes them */
            Py_DECREF(f);
            return s;
        }
        return f;
    }
    case AnyValue__array_value: {
        if (levels <= 0) return PyObject_CallNoArgs(c->too_deep);
        PyObject *list = PyList_New(0);
        if (!list) return NULL;
        while (sub.p < sub.end) {
            uint32_t field;
            int wire_type;
            read_tag(&sub, &field, &wire_type);
            if (field != ArrayValue__values || wire_type != WT_LEN) {
                skip_field(&sub, field, wire_type, 0);
                continue;
            }
            Reader item;
            read_len(&sub, &item);
            PyObject *v = any_value(c, &item, levels - 1, path);
            if (!v || PyList_Append(list, v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(v);
        }
        return list;
    }
    case AnyValue__kvlist_value: {
        if (levels <= 0) return PyObject_CallNoArgs(c->too_deep);
        PyObject *dict = PyDict_New();
        if (!dict) return NULL;
        while (sub.p < sub.end) {
            uint32_t field;
            int wire_type;
            read_tag(&sub, &field, &wire_type);
            if (field != KeyValueList__values || wire_type != WT_LEN) {
                skip_field(&sub, field, wire_type, 0);
                continue;
            }
            Reader kv, value_at = {0, 0};
            int has_value;
            read_len(&sub, &kv);
            PyObject *key = key_value(&kv, &value_at, &has_value);
            if (!key) goto kv_fail;
            PyObject *key_path = NULL;
            if (c->key_verdicts) {
                key_path = PyUnicode_FromFormat("%U.%U", path, key);
                if (!key_path) {
                    Py_DECREF(key);
                    goto kv_fail;
                }
                int dropped = drops_key(c, key_path, 0);
                if (dropped) {
                    Py_DECREF(key);
                    Py_DECREF(key_path);
                    if (dropped < 0) goto kv_fail;
                    continue;
                }
            } else {
                key_path = Py_NewRef(path); /* not read: only the key rules look at paths */
            }
            PyObject *v = has_value ? any_value(c, &value_at, levels - 1, key_path) : Py_NewRef(Py_None);
            Py_DECREF(key_path);
            if (!v || PyDict_SetItem(dict, key, v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(key);
                goto kv_fail;
            }
            Py_DECREF(v);
            Py_DECREF(key);
        }
        PyObject *list;
        int indexed = index_list(dict, &list);
        if (indexed == 0) return dict;
        Py_DECREF(dict);
        return indexed > 0 ? list : NULL;
    kv_fail:
        Py_DECREF(dict);
        return NULL;
    }
    case AnyValue__bytes_value: {
        PyObject *b = PyBytes_FromStringAndSize((const char *)sub.p, sub.end - sub.p);
        if (!b) return NULL;
        PyObject *v = call1(c->blob, b);
        Py_DECREF(b);
        return v;
    }
    default: Py_RETURN_NONE; /* no value, or string_value_strindex (profiles only) */
    }
}

/* ---- attribute trees (otlp.attribute_tree) ---- */

typedef struct {
    PyObject *tree;  /* dict */
    PyObject *keys;  /* list of the keys kept, or NULL */
    PyObject *built; /* set of ids of the dicts unflattening made, or NULL until one is */
    int indexed;
    Py_ssize_t seen; /* KeyValues met, kept or cut by max_attributes */
} Tree;

static int tree_init(Tree *t, int with_keys) {
    t->tree = PyDict_New();
    t->keys = with_keys ? PyList_New(0) : NULL;
    t->built = NULL;
    t->indexed = 0;
    t->seen = 0;
    return (t->tree && (!with_keys || t->keys)) ? 0 : -1;
}

static void tree_clear(Tree *t) {
    Py_CLEAR(t->tree);
    Py_CLEAR(t->keys);
    Py_CLEAR(t->built);
}

static int mark_built(Tree *t, PyObject *dict) {
    if (!t->built && !(t->built = PySet_New(NULL))) return -1;
    PyObject *id = PyLong_FromVoidPtr(dict);
    if (!id) return -1;
    int rc = PySet_Add(t->built, id);
    Py_DECREF(id);
    return rc;
}

static int is_built(Tree *t, PyObject *dict) {
    if (!t->built) return 0;
    PyObject *id = PyLong_FromVoidPtr(dict);
    if (!id) return -1;
    int rc = PySet_Contains(t->built, id);
    Py_DECREF(id);
    return rc;
}

/* otlp._index_node: a list as the dict of its indexes, marked built (new reference). */
static PyObject *index_node(Tree *t, PyObject *list) {
    PyObject *node = PyDict_New();
    if (!node) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *index = PyUnicode_FromFormat("%zd", i);
        if (!index || PyDict_SetItem(node, index, PyList_GET_ITEM(list, i)) < 0) {
            Py_XDECREF(index);
            Py_DECREF(node);
            return NULL;
        }
        Py_DECREF(index);
    }
    if (mark_built(t, node) < 0) {
        Py_DECREF(node);
        return NULL;
    }
    return node;
}

static PyObject *merged(Tree *t, PyObject *existing, PyObject *value);

/* One item of otlp._merged's loop: `item` into node[key], merged with what is there. */
static int merge_item(Tree *t, PyObject *node, PyObject *key, PyObject *item) {
    PyObject *current = PyDict_GetItemWithError(node, key);
    if (!current && PyErr_Occurred()) return -1;
    if (!current || current == Py_None) return PyDict_SetItem(node, key, item);
    Py_INCREF(current);
    PyObject *both = merged(t, current, item);
    Py_DECREF(current);
    if (!both) return -1;
    int rc = PyDict_SetItem(node, key, both);
    Py_DECREF(both);
    return rc;
}

/* otlp._merged: two values for one place -> one, losing nothing (new reference). */
static PyObject *merged(Tree *t, PyObject *existing, PyObject *value) {
    int existing_list = PyList_CheckExact(existing), existing_dict = PyDict_CheckExact(existing);
    int value_list = PyList_CheckExact(value), value_dict = PyDict_CheckExact(value);
    if (!existing_list && !existing_dict && !value_list && !value_dict) return Py_NewRef(value);
    PyObject *node;
    if (existing_list) {
        node = index_node(t, existing);
    } else if (existing_dict) {
        node = Py_NewRef(existing);
    } else if ((node = PyDict_New()) && PyDict_SetItem(node, s_conflict, existing) < 0) {
        Py_CLEAR(node);
    }
    if (!node) return NULL;
    if (value_list) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            PyObject *index = PyUnicode_FromFormat("%zd", i);
            if (!index || merge_item(t, node, index, PyList_GET_ITEM(value, i)) < 0) {
                Py_XDECREF(index);
                goto fail;
            }
            Py_DECREF(index);
        }
    } else if (value_dict) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(value, &pos, &k, &v))
            if (merge_item(t, node, k, v) < 0) goto fail;
    } else if (merge_item(t, node, s_conflict, value) < 0) {
        goto fail;
    }
    return node;
fail:
    Py_DECREF(node);
    return NULL;
}

/* A top-level string value that may be JSON text: decoded as attribute_tree does (new reference). */
static PyObject *json_value(Ctx *c, PyObject *text, Py_ssize_t levels) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n == 0) return Py_NewRef(text);
    Py_UCS4 first = PyUnicode_READ_CHAR(text, 0);
    if (first != '{' && first != '[' && first != '"') return Py_NewRef(text);
    if (first == '"' && (n < 2 || PyUnicode_READ_CHAR(text, n - 1) != '"')) return Py_NewRef(text);
    PyObject *decoded = call1(json_loads, text);
    if (!decoded) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) return NULL; /* orjson.JSONDecodeError is one */
        PyErr_Clear();
        return Py_NewRef(text);
    }
    if (PyUnicode_CheckExact(decoded)) {
        /* A JSON string: its escapes may spell out what the text hid. */
        PyObject *cleaned = call1(c->text, decoded);
        Py_DECREF(decoded);
        return cleaned;
    }
    /* Deeper than `levels` only if it has more opening brackets than that; most values are not walked. */
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (!utf8) {
        Py_DECREF(decoded);
        return NULL;
    }
    Py_ssize_t brackets = 0;
    for (Py_ssize_t i = 0; i < size; i++) brackets += (utf8[i] == '{') | (utf8[i] == '[');
    if (brackets <= levels) return decoded;
    PyObject *levels_obj = PyLong_FromSsize_t(levels);
    PyObject *kept = levels_obj ? PyObject_CallFunctionObjArgs(c->nested, decoded, text, levels_obj, NULL) : NULL;
    Py_XDECREF(levels_obj);
    Py_DECREF(decoded);
    return kept;
}

/* One KeyValue into the tree (the body of attribute_tree's loop). */
static int tree_add(Ctx *c, Tree *t, Reader *kv) {
    Reader value_at = {0, 0};
    int has_value, rc = -1;
    PyObject *key = key_value(kv, &value_at, &has_value), *value = NULL;
    if (!key) return -1;
    int dropped = drops_key(c, key, 1);
    if (dropped) {
        Py_DECREF(key);
        return dropped < 0 ? -1 : 0;
    }
    if (t->keys && PyList_Append(t->keys, key) < 0) goto done;
    PyObject *shape = key_shape(key); /* held: a sanitizer call below could clear the cache */
    if (!shape) goto done;
    if (!PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != 3 || !PyTuple_CheckExact(PyTuple_GET_ITEM(shape, 0))) {
        PyErr_SetString(PyExc_TypeError, "otlp.key_shape must return (parents, last, has_index)");
        goto done_shape;
    }
    PyObject *parents = PyTuple_GET_ITEM(shape, 0), *last = PyTuple_GET_ITEM(shape, 1);
    int has_index = PyTuple_GET_ITEM(shape, 2) == Py_True;
    Py_ssize_t n_parents = PyTuple_GET_SIZE(parents);
    if (n_parents >= c->max_depth) {
        PyObject *r = PyObject_CallNoArgs(c->too_deep_key);
        if (!r) goto done_shape;
        Py_DECREF(r);
        n_parents = 0;
        last = key;
        has_index = 0;
    }
    Py_ssize_t levels = c->max_depth - n_parents - 1;
    value = has_value ? any_value(c, &value_at, levels, key) : Py_NewRef(Py_None);
    if (!value) goto done_shape;
    if (PyUnicode_CheckExact(value)) {
        PyObject *decoded = json_value(c, value, levels);
        if (!decoded) goto done_shape;
        Py_SETREF(value, decoded);
    }
    PyObject *node = t->tree;
    if (n_parents) {
        if (has_index) t->indexed = 1;
        for (Py_ssize_t i = 0; i < n_parents; i++) {
            PyObject *part = PyTuple_GET_ITEM(parents, i);
            PyObject *child = PyDict_GetItemWithError(node, part);
            if (!child && PyErr_Occurred()) goto done_shape;
            if (!child || child == Py_None) { /* None counts as absent, as in dict.get */
                child = PyDict_New();
                if (!child) goto done_shape;
                if (PyDict_SetItem(node, part, child) < 0 || mark_built(t, child) < 0) {
                    Py_DECREF(child);
                    goto done_shape;
                }
                Py_DECREF(child); /* node holds it */
            } else if (!PyDict_CheckExact(child)) { /* a value that sub-keys go under: a JSON array, a scalar */
                PyObject *empty = PyDict_New();
                child = empty ? merged(t, child, empty) : NULL;
                Py_XDECREF(empty);
                if (!child) goto done_shape;
                t->indexed = 1;
                int rc_set = PyDict_SetItem(node, part, child);
                Py_DECREF(child); /* node holds it */
                if (rc_set < 0) goto done_shape;
            }
            node = child;
        }
    }
    PyObject *current = PyDict_GetItemWithError(node, last);
    if (!current && PyErr_Occurred()) goto done_shape;
    if (!current || current == Py_None) {
        rc = PyDict_SetItem(node, last, value);
    } else {
        Py_INCREF(current);
        PyObject *both = merged(t, current, value);
        Py_DECREF(current);
        t->indexed = 1;
        rc = both ? PyDict_SetItem(node, last, both) : -1;
        Py_XDECREF(both);
    }
done_shape:
    Py_DECREF(shape);
done:
    Py_XDECREF(value);
    Py_DECREF(key);
    return rc;
}

/* otlp._listify_children: built dicts keyed exactly "0".."n-1" -> lists, depth first, below dicts. */
static int listify(Tree *t, PyObject *node) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(node, &pos, &key, &value)) {
        if (!PyDict_CheckExact(value)) continue;
        Py_INCREF(value);
        PyObject *list = NULL;
        int rc = listify(t, value);
        if (rc == 0 && digit_keys(value)) { /* checked first: it allocates nothing, is_built does */
            rc = is_built(t, value);
            if (rc > 0) rc = index_list(value, &list);
        }
        Py_DECREF(value);
        if (rc < 0) return -1;
        if (list) {
            /* Replacing the value of an existing key does not resize the dict being walked. */
            rc = PyDict_SetItem(node, key, list);
            Py_DECREF(list);
            if (rc < 0) return -1;
        }
    }
    return 0;
}

/* A repeated KeyValue field met once more: into the tree, or counted past max_attributes. */
static int tree_field(Ctx *c, Tree *t, Reader *kv) {
    if (t->seen++ >= c->max_attributes) return 0;
    return tree_add(c, t, kv);
}

/* The tree done; the dropped_attributes_count to report, with what max_attributes cut added. */
/* Past a limit: the excess added to the message's dropped count (saturating, as the field is 32 bits), and hit. */
static int count_over(Ctx *c, PyObject *limit, Py_ssize_t seen, Py_ssize_t max, uint64_t *dropped) {
    if (seen <= max) return 0;
    uint64_t total = *dropped + (uint64_t)(seen - max);
    *dropped = total > UINT32_MAX_COUNT ? UINT32_MAX_COUNT : total;
    return hit(c, limit, seen - max);
}

static int tree_finish(Ctx *c, Tree *t, uint64_t *dropped) {
    if (t->indexed && listify(t, t->tree) < 0) return -1;
    return count_over(c, s_max_attributes, t->seen, c->max_attributes, dropped);
}

/* ---- messages ---- */

static PyObject *text_field(Ctx *c, Reader *s) { return clean_text(c, s->p, s->end - s->p); }

static PyObject *event_of(Ctx *c, Reader *r, PyObject **keys_out) {
    uint64_t time = 0, dropped = 0, v;
    PyObject *name = NULL, *event = NULL;
    Tree t;
    if (tree_init(&t, 1) < 0) goto fail;
    while (r->p < r->end) {
        uint32_t field;
        int wire_type;
        Reader s;
        read_tag(r, &field, &wire_type);
        if (field == Event__time_unix_nano && wire_type == WT_I64) read_fixed64(r, &time);
        else if (field == Event__name && wire_type == WT_LEN) {
            read_len(r, &s);
            Py_XSETREF(name, text_field(c, &s));
            if (!name) goto fail;
        } else if (field == Event__attributes && wire_type == WT_LEN) {
            read_len(r, &s);
            if (tree_field(c, &t, &s) < 0) goto fail;
        } else if (field == Event__dropped_attributes_count && wire_type == WT_VARINT) {
            read_varint(r, &v);
            dropped = (uint32_t)v;
        } else skip_field(r, field, wire_type, 0);
    }
    if (tree_finish(c, &t, &dropped) < 0) goto fail;
    if (!name) name = PyUnicode_New(0, 0);
    event = Py_BuildValue("{sNsKsOsK}", "name", name, "timestamp", (unsigned long long)time, "attributes", t.tree,
                          "dropped_attributes_count", (unsigned long long)dropped);
    name = NULL;
    if (!event) goto fail;
    *keys_out = t.keys;
    t.keys = NULL;
    tree_clear(&t);
    return event;
fail:
    Py_XDECREF(name);
    tree_clear(&t);
    return NULL;
}

static PyObject *link_of(Ctx *c, Reader *r) {
    uint64_t dropped = 0, v;
    uint32_t flags = 0;
    Reader trace_id = {0, 0}, span_id = {0, 0};
    PyObject *trace_state = NULL;
    Tree t;
    if (tree_init(&t, 0) < 0) goto fail;
    while (r->p < r->end) {
        uint32_t field;
        int wire_type;
        Reader s;
        read_tag(r, &field, &wire_type);
        if (field == Link__trace_id && wire_type == WT_LEN) read_len(r, &trace_id);
        else if (field == Link__span_id && wire_type == WT_LEN) read_len(r, &span_id);
        else if (field == Link__trace_state && wire_type == WT_LEN) {
            read_len(r, &s);
            Py_XSETREF(trace_state, text_field(c, &s));
            if (!trace_state) goto fail;
        } else if (field == Link__attributes && wire_type == WT_LEN) {
            read_len(r, &s);
            if (tree_field(c, &t, &s) < 0) goto fail;
        } else if (field == Link__dropped_attributes_count && wire_type == WT_VARINT) {
            read_varint(r, &v);
            dropped = (uint32_t)v;
        } else if (field == Link__flags && wire_type == WT_I32) read_fixed32(r, &flags);
        else skip_field(r, field, wire_type, 0);
    }
    if (tree_finish(c, &t, &dropped) < 0) goto fail;
    if (!trace_state) trace_state = PyUnicode_New(0, 0);
    PyObject *link = Py_BuildValue("{sNsNsNsOsKsk}", "trace_id", hex_of(trace_id.p, trace_id.end - trace_id.p),
                                   "span_id", hex_of(span_id.p, span_id.end - span_id.p), "trace_state", trace_state,
                                   "attributes", t.tree, "dropped_attributes_count", (unsigned long long)dropped,
                                   "flags", (unsigned long)flags);
    trace_state = NULL;
    tree_clear(&t);
    return link;
fail:
    Py_XDECREF(trace_state);
    tree_clear(&t);
    return NULL;
}

static PyObject *bytes_of(Reader *s) { return PyBytes_FromStringAndSize((const char *)s->p, s->end - s->p); }

static PyObject *span_of(Ctx *c, Reader *r) {
    Reader trace_id = {0, 0}, span_id = {0, 0}, parent = {0, 0};
    uint64_t start = 0, end = 0, v, dropped_attributes = 0, dropped_events = 0, dropped_links = 0;
    uint32_t flags = 0;
    int32_t kind = 0, status_code = 0;
    Py_ssize_t events_seen = 0, links_seen = 0;
    PyObject *trace_state = NULL, *name = NULL, *status_message = NULL, *events = PyList_New(0),
             *event_keys = PyList_New(0), *links = PyList_New(0), *span = NULL;
    Tree t;
    if (tree_init(&t, 1) < 0 || !events || !event_keys || !links) goto fail;
    while (r->p < r->end) {
        uint32_t field;
        int wire_type;
        Reader s;
        read_tag(r, &field, &wire_type);
        switch (TAG(field, wire_type)) {
        case TAG(Span__trace_id, WT_LEN): read_len(r, &trace_id); break;
        case TAG(Span__span_id, WT_LEN): read_len(r, &span_id); break;
        case TAG(Span__parent_span_id, WT_LEN): read_len(r, &parent); break;
        case TAG(Span__trace_state, WT_LEN):
            read_len(r, &s);
            Py_XSETREF(trace_state, text_field(c, &s));
            if (!trace_state) goto fail;
            break;
        case TAG(Span__name, WT_LEN):
            read_len(r, &s);
            Py_XSETREF(name, text_field(c, &s));
            if (!name) goto fail;
            break;
        case TAG(Span__attributes, WT_LEN):
            read_len(r, &s);
            if (tree_field(c, &t, &s) < 0) goto fail;
            break;
        case TAG(Span__events, WT_LEN):
            read_len(r, &s);
            if (events_seen++ < c->max_events) {
                PyObject *keys = NULL, *event = event_of(c, &s, &keys);
                if (!event) goto fail;
                int rc = PyList_Append(events, event) | PyList_Append(event_keys, keys);
                Py_DECREF(event);
                Py_DECREF(keys);
                if (rc < 0) goto fail;
            }
            break;
        case TAG(Span__links, WT_LEN):
            read_len(r, &s);
            if (links_seen++ < c->max_links) {
                PyObject *link = link_of(c, &s);
                if (!link) goto fail;
                int rc = PyList_Append(links, link);
                Py_DECREF(link);
                if (rc < 0) goto fail;
            }
            break;
        case TAG(Span__status, WT_LEN):
            read_len(r, &s);
            while (s.p < s.end) { /* Status */
                uint32_t f;
                int w;
                read_tag(&s, &f, &w);
                if (f == Status__message && w == WT_LEN) {
                    Reader m;
                    read_len(&s, &m);
                    Py_XSETREF(status_message, text_field(c, &m));
                    if (!status_message) goto fail;
                } else if (f == Status__code && w == WT_VARINT) {
                    read_varint(&s, &v);
                    status_code = (int32_t)(uint32_t)v;
                } else skip_field(&s, f, w, 0);
            }
            break;
        case TAG(Span__kind, WT_VARINT): read_varint(r, &v); kind = (int32_t)(uint32_t)v; break;
        case TAG(Span__dropped_attributes_count, WT_VARINT): read_varint(r, &v); dropped_attributes = (uint32_t)v; break;
        case TAG(Span__dropped_events_count, WT_VARINT): read_varint(r, &v); dropped_events = (uint32_t)v; break;
        case TAG(Span__dropped_links_count, WT_VARINT): read_varint(r, &v); dropped_links = (uint32_t)v; break;
        case TAG(Span__start_time_unix_nano, WT_I64): read_fixed64(r, &start); break;
        case TAG(Span__end_time_unix_nano, WT_I64): read_fixed64(r, &end); break;
        case TAG(Span__flags, WT_I32): read_fixed32(r, &flags); break;
        default: skip_field(r, field, wire_type, 0);
        }
    }
    if (tree_finish(c, &t, &dropped_attributes) < 0 ||
        count_over(c, s_max_events, events_seen, c->max_events, &dropped_events) < 0 ||
        count_over(c, s_max_links, links_seen, c->max_links, &dropped_links) < 0)
        goto fail;
    PyObject *empty = PyUnicode_New(0, 0);
    if (!empty) goto fail;
    PyObject *items = Py_BuildValue(
        "(NNNNkNiKKOOKOOKOKiN)", bytes_of(&trace_id), bytes_of(&span_id), bytes_of(&parent),
        trace_state ? trace_state : Py_NewRef(empty), (unsigned long)flags, name ? name : Py_NewRef(empty), (int)kind,
        (unsigned long long)start, (unsigned long long)end, t.tree, t.keys, (unsigned long long)dropped_attributes,
        events, event_keys, (unsigned long long)dropped_events, links, (unsigned long long)dropped_links,
        (int)status_code, status_message ? status_message : Py_NewRef(empty));
    Py_DECREF(empty);
    trace_state = name = status_message = NULL; /* stolen by "N" */
    if (!items) goto fail;
    PyObject *args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (!args) goto fail;
    span = PyTuple_Type.tp_new((PyTypeObject *)SpanType, args, NULL);
    Py_DECREF(args);
fail:
    Py_XDECREF(trace_state);
    Py_XDECREF(name);
    Py_XDECREF(status_message);
    Py_XDECREF(events);
    Py_XDECREF(event_keys);
    Py_XDECREF(links);
    tree_clear(&t);
    return span;
}

static PyObject *make(PyObject *type, PyObject *a, PyObject *b) {
    PyObject *items = PyTuple_Pack(2, a, b);
    if (!items) return NULL;
    PyObject *args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (!args) return NULL;
    PyObject *obj = PyTuple_Type.tp_new((PyTypeObject *)type, args, NULL);
    Py_DECREF(args);
    return obj;
}

/* ---- lazy spans ---- */

/* One request being decoded: its bytes and the sanitizer's methods, shared by its span iterators. */
typedef struct {
    PyObject_HEAD
    Ctx c;
    Py_buffer view;
} DecoderObject;

/* A ScopeSpans' spans, each decoded when iterated: a request's spans never all exist at once, so each
 * span's objects are freed, and their memory reused while still in cache, before the next is built. */
typedef struct {
    PyObject_HEAD
    DecoderObject *decoder;
    Reader r;
} SpanIterObject;

static void ctx_clear(Ctx *c);

static void decoder_dealloc(DecoderObject *self) {
    ctx_clear(&self->c);
    if (self->view.obj) PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_bridge.decode._decode.Decoder",
    .tp_basicsize = sizeof(DecoderObject),
    .tp_dealloc = (destructor)decoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The state of one decode_request call, kept while its spans are iterated.",
};

static void span_iter_dealloc(SpanIterObject *self) {
    Py_XDECREF(self->decoder);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *span_iter_next(SpanIterObject *self) {
    Reader *r = &self->r;
    while (r->p < r->end) {
        uint32_t field;
        int wire_type;
        Reader s;
        read_tag(r, &field, &wire_type);
        if (field == ScopeSpans__spans && wire_type == WT_LEN) {
            read_len(r, &s);
            return span_of(&self->decoder->c, &s);
        }
        skip_field(r, field, wire_type, 0);
    }
    return NULL; /* StopIteration */
}

static PyTypeObject SpanIterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_bridge.decode._decode.SpanIterator",
    .tp_basicsize = sizeof(SpanIterObject),
    .tp_dealloc = (destructor)span_iter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The spans of one ScopeSpans, decoded one at a time.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)span_iter_next,
};

/* One Resource or InstrumentationScope message (a repeated one merges): its attributes into t, its dropped
   count, and a scope's name and version (name_field 0 for a resource, which has neither). */
static int attributed_message(Ctx *c, Reader *s, Tree *t, uint64_t *dropped, uint32_t attributes_field,
                              uint32_t dropped_field, uint32_t name_field, uint32_t version_field, PyObject **name,
                              PyObject **version) {
    uint64_t v;
    while (s->p < s->end) {
        uint32_t f;
        int w;
        Reader m;
        read_tag(s, &f, &w);
        if (name_field && (f == name_field || f == version_field) && w == WT_LEN) {
            read_len(s, &m);
            PyObject *text = text_field(c, &m);
            if (!text) return -1;
            Py_XSETREF(*(f == name_field ? name : version), text);
        } else if (f == attributes_field && w == WT_LEN) {
            read_len(s, &m);
            if (tree_field(c, t, &m) < 0) return -1;
        } else if (f == dropped_field && w == WT_VARINT) {
            read_varint(s, &v);
            *dropped = (uint32_t)v;
        } else skip_field(s, f, w, 0);
    }
    return 0;
}

static PyObject *scope_spans_of(DecoderObject *decoder, Reader *r) {
    Ctx *c = &decoder->c;
    PyObject *name = NULL, *version = NULL, *scope = NULL, *result = NULL;
    SpanIterObject *spans = PyObject_New(SpanIterObject, &SpanIterType);
    uint64_t dropped = 0;
    Tree t;
    if (!spans) return NULL;
    spans->decoder = (DecoderObject *)Py_NewRef(decoder);
    spans->r = *r;
    if (tree_init(&t, 0) < 0) goto fail;
    while (r->p < r->end) {
        uint32_t field;
        int wire_type;
        Reader s;
        read_tag(r, &field, &wire_type);
        if (field == ScopeSpans__scope && wire_type == WT_LEN) { /* a repeated one merges */
            read_len(r, &s);
            if (attributed_message(c, &s, &t, &dropped, InstrumentationScope__attributes,
                                   InstrumentationScope__dropped_attributes_count, InstrumentationScope__name,
                                   InstrumentationScope__version, &name, &version) < 0)
                goto fail;
        } else skip_field(r, field, wire_type, 0); /* the spans: read by the iterator */
    }
    if (tree_finish(c, &t, &dropped) < 0) goto fail;
    if (!name) name = PyUnicode_New(0, 0);
    if (!version) version = PyUnicode_New(0, 0);
    scope = Py_BuildValue("{sNsNsOsK}", "name", name, "version", version, "attributes", t.tree,
                          "dropped_attributes_count", (unsigned long long)dropped);
    name = version = NULL;
    if (scope) result = make(ScopeSpansType, scope, (PyObject *)spans);
fail:
    Py_XDECREF(name);
    Py_XDECREF(version);
    Py_XDECREF(scope);
    Py_XDECREF(spans);
    tree_clear(&t);
    return result;
}

static PyObject *resource_spans_of(DecoderObject *decoder, Reader *r) {
    Ctx *c = &decoder->c;
    PyObject *scopes = PyList_New(0), *resource = NULL, *result = NULL;
    uint64_t dropped = 0;
    Tree t;
    if (tree_init(&t, 0) < 0 || !scopes) goto fail;
    while (r->p < r->end) {
        uint32_t field;
        int wire_type;
        Reader s;
        read_tag(r, &field, &wire_type);
        if (field == ResourceSpans__resource && wire_type == WT_LEN) { /* a repeated one merges */
            read_len(r, &s);
            if (attributed_message(c, &s, &t, &dropped, Resource__attributes, Resource__dropped_attributes_count, 0, 0,
                                   NULL, NULL) < 0)
                goto fail;
        } else if (field == ResourceSpans__scope_spans && wire_type == WT_LEN) {
            read_len(r, &s);
            PyObject *scope = scope_spans_of(decoder, &s);
            if (!scope) goto fail;
            int rc = PyList_Append(scopes, scope);
            Py_DECREF(scope);
            if (rc < 0) goto fail;
        } else skip_field(r, field, wire_type, 0);
    }
    if (tree_finish(c, &t, &dropped) < 0) goto fail;
    resource = Py_BuildValue("{sOsK}", "attributes", t.tree, "dropped_attributes_count", (unsigned long long)dropped);
    if (resource) result = make(ResourceSpansType, resource, scopes);
fail:
    Py_XDECREF(resource);
    Py_XDECREF(scopes);
    tree_clear(&t);
    return result;
}

/* ------------------------------------------------------------------------------------------------ */
/* Entry points.                                                                                     */

/* The request's sanitize.NativeInterface, by position: its fields in the order that class lists them. */
enum {
    NI_MAX_ATTRIBUTES, NI_MAX_EVENTS, NI_MAX_LINKS, NI_MAX_DEPTH, NI_TEXT_PLAN, NI_KEY_VERDICTS, NI_TEXT, NI_BLOB,
    NI_DROPS, NI_TOO_DEEP, NI_TOO_DEEP_KEY, NI_NESTED, NI_HIT, NI_SIZE
};

static int ctx_init(Ctx *c, PyObject *interface) {
    memset(c, 0, sizeof(*c));
    if (!PyTuple_Check(interface) || PyTuple_GET_SIZE(interface) != NI_SIZE) {
        PyErr_SetString(PyExc_TypeError, "decode_request takes a sanitize.NativeInterface (Sanitizer.native())");
        return -1;
    }
    PyObject **field = &PyTuple_GET_ITEM(interface, 0);
    c->max_attributes = PyLong_AsSsize_t(field[NI_MAX_ATTRIBUTES]);
    c->max_events = PyLong_AsSsize_t(field[NI_MAX_EVENTS]);
    c->max_links = PyLong_AsSsize_t(field[NI_MAX_LINKS]);
    c->max_depth = PyLong_AsSsize_t(field[NI_MAX_DEPTH]);
    if (PyErr_Occurred()) return -1;
    /* (max_length, call_always, min_length, ((rule_min_length, (anchor, ...)), ...)) */
    c->plan = Py_NewRef(field[NI_TEXT_PLAN]);
    PyObject *rules;
    int call_always;
    if (!PyArg_ParseTuple(c->plan, "npnO!", &c->max_length, &call_always, &c->min_length, &PyTuple_Type, &rules))
        return -1;
    c->call_always = call_always;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(rules) && !c->call_always; i++) {
        Py_ssize_t rule_min_length;
        PyObject *anchors;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(rules, i), "nO!", &rule_min_length, &PyTuple_Type, &anchors)) return -1;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(anchors); j++) {
            PyObject *anchor = PyTuple_GET_ITEM(anchors, j);
            Py_ssize_t length;
            const char *text = PyUnicode_Check(anchor) ? PyUnicode_AsUTF8AndSize(anchor, &length) : NULL;
            if (!text) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "text_plan anchors must be str");
                return -1;
            }
            if (length == 0 || !PyUnicode_IS_ASCII(anchor) || c->n_anchors == MAX_ANCHORS) {
                c->call_always = 1; /* not a byte pattern this scan can look for: let text() decide every time */
                break;
            }
            if (length == 1) {
                Py_ssize_t *least = &c->single_byte_min[(uint8_t)text[0]];
                if (!*least || rule_min_length < *least) *least = rule_min_length > 0 ? rule_min_length : 1;
                continue;
            }
            c->anchors[c->n_anchors].text = text;
            c->anchors[c->n_anchors].length = length;
            c->anchors[c->n_anchors].rule_min_length = rule_min_length;
            c->n_anchors++;
            unsigned pair = ((unsigned)(uint8_t)text[0] << 8) | (uint8_t)text[1];
            c->starts_pair[pair >> 3] |= (uint8_t)(1u << (pair & 7));
        }
    }
    PyObject *verdicts = field[NI_KEY_VERDICTS];
    if (PyDict_Check(verdicts)) c->key_verdicts = Py_NewRef(verdicts);
    else if (verdicts != Py_None) {
        PyErr_SetString(PyExc_TypeError, "NativeInterface.key_verdicts must be a dict or None");
        return -1;
    }
    c->text = Py_NewRef(field[NI_TEXT]);
    c->blob = Py_NewRef(field[NI_BLOB]);
    c->drops = Py_NewRef(field[NI_DROPS]);
    c->too_deep = Py_NewRef(field[NI_TOO_DEEP]);
    c->too_deep_key = Py_NewRef(field[NI_TOO_DEEP_KEY]);
    c->nested = Py_NewRef(field[NI_NESTED]);
    c->hit = Py_NewRef(field[NI_HIT]);
    return 0;
}

static void ctx_clear(Ctx *c) {  /* safe on a zeroed or partly initialised Ctx */
    Py_CLEAR(c->plan);
    Py_CLEAR(c->key_verdicts);
    Py_CLEAR(c->text);
    Py_CLEAR(c->blob);
    Py_CLEAR(c->drops);
    Py_CLEAR(c->too_deep);
    Py_CLEAR(c->too_deep_key);
    Py_CLEAR(c->nested);
    Py_CLEAR(c->hit);
}

static int checked(Py_buffer *view, Py_ssize_t *spans) {
    Reader r = {(const uint8_t *)view->buf, (const uint8_t *)view->buf + view->len};
    *spans = 0;
    int rc = validate(&r, M_REQUEST, 0, spans);
    if (rc < 0) raise_bad_request(view->len, rc);
    return rc;
}

PyDoc_STRVAR(decode_request_doc,
             "decode_request(data, interface) -> list[ResourceSpans]\n\n"
             "An ExportTraceServiceRequest's bytes as otel_bridge.decode.decoded values, limits and redaction applied\n"
             "through `interface` (a Sanitizer's native()); each ScopeSpans' spans are decoded as they are iterated. BadRequestError\n"
             "saying why when the bytes are not such a request (checked whole before anything is decoded).");

static PyObject *decode_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_request(data, interface) takes 2 arguments");
        return NULL;
    }
    DecoderObject *decoder = PyObject_New(DecoderObject, &DecoderType);
    if (!decoder) return NULL;
    memset(&decoder->c, 0, sizeof(decoder->c));
    decoder->view.obj = NULL;
    PyObject *result = NULL;
    Py_ssize_t spans;
    if (PyObject_GetBuffer(args[0], &decoder->view, PyBUF_SIMPLE) < 0 || checked(&decoder->view, &spans) < 0 ||
        ctx_init(&decoder->c, args[1]) < 0)
        goto done;
    result = PyList_New(0);
    Reader r = {(const uint8_t *)decoder->view.buf, (const uint8_t *)decoder->view.buf + decoder->view.len};
    while (result && r.p < r.end) {
        uint32_t field;
        int wire_type;
        Reader s;
        read_tag(&r, &field, &wire_type);
        if (field != ExportTraceServiceRequest__resource_spans || wire_type != WT_LEN) {
            skip_field(&r, field, wire_type, 0);
            continue;
        }
        read_len(&r, &s);
        PyObject *resource_spans = resource_spans_of(decoder, &s);
        if (!resource_spans || PyList_Append(result, resource_spans) < 0) Py_CLEAR(result);
        Py_XDECREF(resource_spans);
    }
done:
    Py_DECREF(decoder); /* the span iterators keep it while they live */
    return result;
}

PyDoc_STRVAR(count_spans_doc, "count_spans(data) -> int\n\nThe spans in an ExportTraceServiceRequest's bytes, "
                              "which are checked as decode_request checks them.");

static PyObject *count_spans(PyObject *module, PyObject *data) {
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t spans;
    int rc = checked(&view, &spans);
    PyBuffer_Release(&view);
    return rc < 0 ? NULL : PyLong_FromSsize_t(spans);
}

static PyMethodDef methods[] = {
    {"decode_request", (PyCFunction)(void (*)(void))decode_request, METH_FASTCALL, decode_request_doc},
    {"count_spans", count_spans, METH_O, count_spans_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "otel_bridge.decode._decode", NULL, -1, methods, NULL, NULL, NULL, NULL};

static PyObject *import_attr(const char *module, const char *name) {
    PyObject *m = PyImport_ImportModule(module);
    if (!m) return NULL;
    PyObject *attr = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return attr;
}

PyMODINIT_FUNC PyInit__decode(void) {
    if (!(refused = import_attr("otel_bridge.decode.wire", "refused")) ||
        !(upb_errors = import_attr("otel_bridge.decode.wire", "UPB_ERRORS")) ||
        !(json_loads = import_attr("orjson", "loads")) ||
        !(ResourceSpansType = import_attr("otel_bridge.decode.decoded", "ResourceSpans")) ||
        !(ScopeSpansType = import_attr("otel_bridge.decode.decoded", "ScopeSpans")) ||
        !(SpanType = import_attr("otel_bridge.decode.decoded", "Span")) ||
        !(key_shapes = import_attr("otel_bridge.decode.otlp", "KEY_SHAPES")) ||
        !(key_shape_of = import_attr("otel_bridge.decode.otlp", "key_shape")) ||
        !(s_conflict = import_attr("otel_bridge.decode.otlp", "CONFLICT_KEY")))
        return NULL;
    if (!PyTuple_Check(upb_errors) || PyTuple_GET_SIZE(upb_errors) != 3 || !PyDict_Check(key_shapes)) {
        PyErr_SetString(PyExc_TypeError, "otel_bridge.decode: UPB_ERRORS or KEY_SHAPES is not what _decode.c reads");
        return NULL;
    }
    if (!(s_max_attributes = PyUnicode_InternFromString("max_attributes")) ||
        !(s_max_events = PyUnicode_InternFromString("max_events")) ||
        !(s_max_links = PyUnicode_InternFromString("max_links")))
        return NULL;
    if (PyType_Ready(&DecoderType) < 0 || PyType_Ready(&SpanIterType) < 0) return NULL;
    return PyModule_Create(&module_def);
}
