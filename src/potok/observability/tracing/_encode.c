/* The tracer's request-path encoders in C: the id pool's entries and the two spans
 * every sampled request makes (its server span, an upstream attempt's span).
 *
 * encode.py holds the same three functions in Python and is what they are tested
 * against (byte for byte, tests/unit/test_span_encoders.py); the tracer uses these when
 * the extension was built (setup.py builds it optionally: no compiler, no extension).
 * Why C: at 100 % sampling the Python encoders cost a request ~10,000 instructions of
 * formatting, packing and strided copies (bench/instructions.sh, BENCHMARKS.md
 * "Tracing"); here each is one call that sizes its output once and fills it.
 *
 * Wire format: https://protobuf.dev/programming-guides/encoding/ ; the messages are
 * opentelemetry-proto's trace.proto and common.proto (Span, KeyValue, AnyValue).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define SERVER_IDS 28 /* [0a 10 trace id][12 08 span id]: the start of a pool entry */
#define ENTRY_RANDOM 32
#define ENTRY_FIELDS 66
#define ENTRY_LINE 70

static const char HEX[] = "0123456789abcdef";
static const char LINE_HEAD[] = "traceparent: 00-"; /* 16 bytes */
static const char LINE_TAIL[] = "-00\r\n";          /* 5 bytes */
static const char PATH_KEY[] = "url.path";
static const char REQUEST_ID_KEY[] = "potok.request_id";

static inline Py_ssize_t
varint_size(uint64_t value)
{
    Py_ssize_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

static inline char *
put_varint(char *out, uint64_t value)
{
    while (value >= 0x80) {
        *out++ = (char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *out++ = (char)value;
    return out;
}

static inline char *
put_fixed64(char *out, uint8_t tag, uint64_t value)
{
    *out++ = (char)tag;
    for (int byte = 0; byte < 8; byte++) {
        *out++ = (char)(value & 0xFF);
        value >>= 8;
    }
    return out;
}

static inline char *
put(char *out, const char *data, Py_ssize_t size)
{
    memcpy(out, data, (size_t)size);
    return out + size;
}

static int
arity(const char *function, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected) {
        return 1;
    }
    PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments but %zd were given",
                 function, expected, nargs);
    return 0;
}

static int
bytes_arg(PyObject *arg, const char *name, const char **data, Py_ssize_t *size)
{
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes, not %.100s", name,
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    *data = PyBytes_AS_STRING(arg);
    *size = PyBytes_GET_SIZE(arg);
    return 0;
}

static int
time_arg(PyObject *arg, const char *name, uint64_t *value)
{
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", name,
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    *value = PyLong_AsUnsignedLongLong(arg); /* OverflowError below 0 or above 2**64 */
    return (*value == (uint64_t)-1 && PyErr_Occurred()) ? -1 : 0;
}

/* A string attribute (Span.attributes, field 9) whose value is `size` bytes once
 * written: [4a len][0a len key][12 len [0a len value]]. */
static Py_ssize_t
string_attribute_size(Py_ssize_t key_size, Py_ssize_t size)
{
    Py_ssize_t any_value = 1 + varint_size((uint64_t)size) + size;
    Py_ssize_t key_value = 1 + varint_size((uint64_t)key_size) + key_size + 1 +
                           varint_size((uint64_t)any_value) + any_value;
    return 1 + varint_size((uint64_t)key_value) + key_value;
}

static char *
put_string_attribute_head(char *out, const char *key, Py_ssize_t key_size, Py_ssize_t size)
{
    Py_ssize_t any_value = 1 + varint_size((uint64_t)size) + size;
    Py_ssize_t key_value = 1 + varint_size((uint64_t)key_size) + key_size + 1 +
                           varint_size((uint64_t)any_value) + any_value;
    *out++ = 0x4a;
    out = put_varint(out, (uint64_t)key_value);
    *out++ = 0x0a;
    out = put_varint(out, (uint64_t)key_size);
    out = put(out, key, key_size);
    *out++ = 0x12;
    out = put_varint(out, (uint64_t)any_value);
    *out++ = 0x0a;
    return put_varint(out, (uint64_t)size);
}

/* A ScopeSpans.spans field (2) of `body` bytes: allocated, its tag and length written;
 * *at is where the body goes. */
static PyObject *
new_span(Py_ssize_t body, char **at)
{
    PyObject *span = PyBytes_FromStringAndSize(NULL, 1 + varint_size((uint64_t)body) + body);
    if (span == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(span);
    *out++ = 0x12;
    *at = put_varint(out, (uint64_t)body);
    return span;
}

PyDoc_STRVAR(server_span_doc,
"server_span(fields, head, start, duration, attributes, addresses, path, request_id,\n"
"            agent, tail, /) -> bytes\n"
"\n"
"A request's server span as a ScopeSpans.spans field: the first 28 bytes of `fields`\n"
"(an id pool entry: trace_id and span_id), `head` (name and kind), the start and end\n"
"times (ns; end = start + int(duration * 1e9), duration in seconds), `attributes`,\n"
"`addresses`, url.path = `path` (bytes read as Latin-1), potok.request_id =\n"
"`request_id` (str), `agent`, `tail` (status and flags). Every bytes part is written\n"
"as given.");

static PyObject *
server_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arity("server_span", nargs, 10)) {
        return NULL;
    }
    const char *fields, *head, *attributes, *addresses, *path, *agent, *tail, *request_id;
    Py_ssize_t fields_size, head_size, attributes_size, addresses_size, path_size, agent_size,
        tail_size, request_id_size;
    uint64_t start;
    if (bytes_arg(args[0], "fields", &fields, &fields_size) < 0 ||
        bytes_arg(args[1], "head", &head, &head_size) < 0 ||
        time_arg(args[2], "start", &start) < 0 ||
        bytes_arg(args[4], "attributes", &attributes, &attributes_size) < 0 ||
        bytes_arg(args[5], "addresses", &addresses, &addresses_size) < 0 ||
        bytes_arg(args[6], "path", &path, &path_size) < 0 ||
        bytes_arg(args[8], "agent", &agent, &agent_size) < 0 ||
        bytes_arg(args[9], "tail", &tail, &tail_size) < 0) {
        return NULL;
    }
    if (fields_size < SERVER_IDS) {
        PyErr_SetString(PyExc_ValueError, "fields must hold at least 28 bytes");
        return NULL;
    }
    double duration = PyFloat_AsDouble(args[3]);
    if (duration == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyUnicode_Check(args[7])) {
        PyErr_Format(PyExc_TypeError, "request_id must be str, not %.100s",
                     Py_TYPE(args[7])->tp_name);
        return NULL;
    }
    request_id = PyUnicode_AsUTF8AndSize(args[7], &request_id_size);
    if (request_id == NULL) {
        return NULL;
    }
    /* As int(duration * 1e9): truncated; a negative or NaN duration is none at all. */
    double nanoseconds = duration * 1e9;
    uint64_t end = start;
    if (nanoseconds >= 1.0) {
        if (nanoseconds >= 18446744073709551616.0 - (double)start) {
            PyErr_SetString(PyExc_OverflowError, "start + duration is past 2**64 ns");
            return NULL;
        }
        end = start + (uint64_t)nanoseconds;
    }
    /* The path as UTF-8: every byte above 0x7f (a Latin-1 letter) takes two. */
    Py_ssize_t path_utf8 = path_size;
    for (Py_ssize_t i = 0; i < path_size; i++) {
        path_utf8 += (unsigned char)path[i] >> 7;
    }
    Py_ssize_t body = SERVER_IDS + head_size + 18 + attributes_size + addresses_size +
                      string_attribute_size(sizeof(PATH_KEY) - 1, path_utf8) +
                      string_attribute_size(sizeof(REQUEST_ID_KEY) - 1, request_id_size) +
                      agent_size + tail_size;
    char *out;
    PyObject *span = new_span(body, &out);
    if (span == NULL) {
        return NULL;
    }
    out = put(out, fields, SERVER_IDS);
    out = put(out, head, head_size);
    out = put_fixed64(out, 0x39, start); /* Span.start_time_unix_nano (7) */
    out = put_fixed64(out, 0x41, end);   /* Span.end_time_unix_nano (8) */
    out = put(out, attributes, attributes_size);
    out = put(out, addresses, addresses_size);
    out = put_string_attribute_head(out, PATH_KEY, sizeof(PATH_KEY) - 1, path_utf8);
    if (path_utf8 == path_size) {
        out = put(out, path, path_size);
    }
    else {
        for (Py_ssize_t i = 0; i < path_size; i++) {
            unsigned char byte = (unsigned char)path[i];
            if (byte < 0x80) {
                *out++ = (char)byte;
            }
            else {
                *out++ = (char)(0xC0 | (byte >> 6));
                *out++ = (char)(0x80 | (byte & 0x3F));
            }
        }
    }
    out = put_string_attribute_head(out, REQUEST_ID_KEY, sizeof(REQUEST_ID_KEY) - 1,
                                    request_id_size);
    out = put(out, request_id, request_id_size);
    out = put(out, agent, agent_size);
    put(out, tail, tail_size);
    return span;
}

PyDoc_STRVAR(attempt_span_doc,
"attempt_span(fields, head, start, end, attributes, tail, /) -> bytes\n"
"\n"
"An upstream attempt's span as a ScopeSpans.spans field: `fields` (its trace_id,\n"
"span_id and parent_span_id fields), `head` (name and kind), start and end (ns),\n"
"`attributes`, `tail` (status and flags), each bytes part written as given.");

static PyObject *
attempt_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arity("attempt_span", nargs, 6)) {
        return NULL;
    }
    const char *fields, *head, *attributes, *tail;
    Py_ssize_t fields_size, head_size, attributes_size, tail_size;
    uint64_t start, end;
    if (bytes_arg(args[0], "fields", &fields, &fields_size) < 0 ||
        bytes_arg(args[1], "head", &head, &head_size) < 0 ||
        time_arg(args[2], "start", &start) < 0 || time_arg(args[3], "end", &end) < 0 ||
        bytes_arg(args[4], "attributes", &attributes, &attributes_size) < 0 ||
        bytes_arg(args[5], "tail", &tail, &tail_size) < 0) {
        return NULL;
    }
    char *out;
    PyObject *span =
        new_span(fields_size + head_size + 18 + attributes_size + tail_size, &out);
    if (span == NULL) {
        return NULL;
    }
    out = put(out, fields, fields_size);
    out = put(out, head, head_size);
    out = put_fixed64(out, 0x39, start);
    out = put_fixed64(out, 0x41, end);
    out = put(out, attributes, attributes_size);
    put(out, tail, tail_size);
    return span;
}

static int
all_zero(const unsigned char *data, int size)
{
    for (int i = 0; i < size; i++) {
        if (data[i] != 0) {
            return 0;
        }
    }
    return 1;
}

static char *
put_hex(char *out, const unsigned char *data, int size)
{
    for (int i = 0; i < size; i++) {
        *out++ = HEX[data[i] >> 4];
        *out++ = HEX[data[i] & 0x0F];
    }
    return out;
}

PyDoc_STRVAR(pool_entries_doc,
"pool_entries(random, dense, bound, /) -> tuple[bytes, list[bytes], bytes] | None\n"
"\n"
"The id pool's (fields, lines, sampled) from `random` (32 bytes an entry: trace id T,\n"
"server span id S, first attempt's span id X). Per entry: its span fields\n"
"[0a 10 T][12 08 S][0a 10 T][12 08 X][22 08 S] (66 bytes; b'' for all when `dense`\n"
"is false); its line b'traceparent: 00-<T>-<X>-<flags>\\r\\n' (70 bytes); whether it\n"
"is sampled (a byte, 1 or 0): when the low 64 bits of T, as 16 hex digits, sort below\n"
"`bound` (16 hex digits; b'g' samples all), and then its flags are 01. None when an\n"
"id would be all zeros (invalid: draw again).");

static PyObject *
pool_entries(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arity("pool_entries", nargs, 3)) {
        return NULL;
    }
    const char *random, *bound;
    Py_ssize_t size, bound_size;
    if (bytes_arg(args[0], "random", &random, &size) < 0 ||
        bytes_arg(args[2], "bound", &bound, &bound_size) < 0) {
        return NULL;
    }
    int dense = PyObject_IsTrue(args[1]);
    if (dense < 0) {
        return NULL;
    }
    if (size % ENTRY_RANDOM != 0) {
        PyErr_SetString(PyExc_ValueError, "random must hold 32 bytes an entry");
        return NULL;
    }
    if (bound_size < 1 || bound_size > 16) {
        PyErr_SetString(PyExc_ValueError, "bound must hold 1 to 16 hex digits");
        return NULL;
    }
    Py_ssize_t count = size / ENTRY_RANDOM;
    const unsigned char *ids = (const unsigned char *)random;
    for (Py_ssize_t entry = 0; entry < count; entry++) {
        const unsigned char *id = ids + entry * ENTRY_RANDOM;
        if (all_zero(id, 16) || all_zero(id + 16, 8) || all_zero(id + 24, 8)) {
            Py_RETURN_NONE;
        }
    }
    PyObject *fields = PyBytes_FromStringAndSize(NULL, dense ? count * ENTRY_FIELDS : 0);
    PyObject *lines = PyList_New(count);
    PyObject *sampled = PyBytes_FromStringAndSize(NULL, count);
    if (fields == NULL || lines == NULL || sampled == NULL) {
        goto error;
    }
    char *field = PyBytes_AS_STRING(fields);
    char *decisions = PyBytes_AS_STRING(sampled);
    for (Py_ssize_t entry = 0; entry < count; entry++) {
        const char *trace = random + entry * ENTRY_RANDOM;
        const char *server = trace + 16, *attempt = trace + 24;
        if (dense) {
            field = put(field, "\x0a\x10", 2);
            field = put(field, trace, 16);
            field = put(field, "\x12\x08", 2);
            field = put(field, server, 8);
            field = put(field, "\x0a\x10", 2);
            field = put(field, trace, 16);
            field = put(field, "\x12\x08", 2);
            field = put(field, attempt, 8);
            field = put(field, "\x22\x08", 2);
            field = put(field, server, 8);
        }
        PyObject *line_object = PyBytes_FromStringAndSize(NULL, ENTRY_LINE);
        if (line_object == NULL) {
            goto error;
        }
        PyList_SET_ITEM(lines, entry, line_object); /* the list owns it now */
        char *line = PyBytes_AS_STRING(line_object);
        char *low_digits = line + sizeof(LINE_HEAD) - 1 + 16; /* T's last 16 digits */
        line = put(line, LINE_HEAD, sizeof(LINE_HEAD) - 1);
        line = put_hex(line, (const unsigned char *)trace, 16);
        *line++ = '-';
        line = put_hex(line, (const unsigned char *)attempt, 8);
        int is_sampled = memcmp(low_digits, bound, (size_t)bound_size) < 0;
        decisions[entry] = (char)is_sampled;
        line = put(line, is_sampled ? "-01\r\n" : LINE_TAIL, sizeof(LINE_TAIL) - 1);
    }
    PyObject *entries = PyTuple_Pack(3, fields, lines, sampled);
    Py_DECREF(fields);
    Py_DECREF(lines);
    Py_DECREF(sampled);
    return entries;
error:
    Py_XDECREF(fields);
    Py_XDECREF(lines); /* a list with NULL items is freed safely */
    Py_XDECREF(sampled);
    return NULL;
}

static PyMethodDef methods[] = {
    {"server_span", (PyCFunction)(void (*)(void))server_span, METH_FASTCALL, server_span_doc},
    {"attempt_span", (PyCFunction)(void (*)(void))attempt_span, METH_FASTCALL,
     attempt_span_doc},
    {"pool_entries", (PyCFunction)(void (*)(void))pool_entries, METH_FASTCALL,
     pool_entries_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "potok.observability.tracing._encode",
    .m_doc = "The tracer's request-path encoders (see encode.py for the same in Python).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__encode(void)
{
    return PyModuleDef_Init(&module);
}
