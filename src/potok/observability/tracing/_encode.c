/* The tracer's request path in C: the id pool's entries, the two spans every sampled
 * request makes (its server span, an upstream attempt's span), the recorder that makes
 * them (Trace) and the tracer's begin (Begin, over the pool's state, Pool).
 *
 * Each is in Python too, the reference it is tested against and what runs where the
 * extension was not built (setup.py builds it optionally: no compiler, no extension):
 * the encoders in encode.py (the same bytes, tests/unit/test_span_encoders.py), the
 * recorder in trace.py's PythonRequestTrace and begin in tracer.py's Tracer._begin (the
 * same spans and decisions, tests/unit/test_span_recorders.py). Why C: in the tracer's
 * loop under callgrind the Python ones cost a sampled request ~44,000 instructions, these
 * ~10,600 (a proxied request is ~188,000), and at 1 % sampling every request ~9,000
 * against ~1,500 (BENCHMARKS.md "Tracing"): formatting, packing, strided copies and the
 * interpreter's frames, where C sizes each output once and fills it.
 *
 * Wire format: https://protobuf.dev/programming-guides/encoding/ ; the messages are
 * opentelemetry-proto's trace.proto and common.proto (Span, KeyValue, AnyValue).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <structmember.h>
#include <string.h>
#include <time.h>

#define LIKELY(condition) __builtin_expect(!!(condition), 1)
#define UNLIKELY(condition) __builtin_expect(!!(condition), 0)

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

/* A server span's parts; `parent` (may be empty) goes before `head`, and when
 * `flags` is not NULL it replaces the last 4 bytes of `tail` (Span.flags' value). */
typedef struct {
    const char *fields, *parent, *head, *attributes, *addresses, *path, *request_id, *agent,
        *tail, *flags;
    Py_ssize_t parent_size, head_size, attributes_size, addresses_size, path_size,
        request_id_size, agent_size, tail_size;
    uint64_t start;
    double duration;
} ServerParts;

static PyObject *
write_server_span(const ServerParts *parts)
{
    /* As int(duration * 1e9): truncated; a negative or NaN duration is none at all. */
    double nanoseconds = parts->duration * 1e9;
    uint64_t start = parts->start, end = start;
    if (nanoseconds >= 1.0) {
        if (nanoseconds >= 18446744073709551616.0 - (double)start) {
            PyErr_SetString(PyExc_OverflowError, "start + duration is past 2**64 ns");
            return NULL;
        }
        end = start + (uint64_t)nanoseconds;
    }
    const char *path = parts->path;
    Py_ssize_t path_size = parts->path_size;
    /* The path as UTF-8: every byte above 0x7f (a Latin-1 letter) takes two. */
    Py_ssize_t path_utf8 = path_size;
    for (Py_ssize_t i = 0; i < path_size; i++) {
        path_utf8 += (unsigned char)path[i] >> 7;
    }
    Py_ssize_t body = SERVER_IDS + parts->parent_size + parts->head_size + 18 +
                      parts->attributes_size + parts->addresses_size +
                      string_attribute_size(sizeof(PATH_KEY) - 1, path_utf8) +
                      string_attribute_size(sizeof(REQUEST_ID_KEY) - 1, parts->request_id_size) +
                      parts->agent_size + parts->tail_size;
    char *out;
    PyObject *span = new_span(body, &out);
    if (span == NULL) {
        return NULL;
    }
    out = put(out, parts->fields, SERVER_IDS);
    out = put(out, parts->parent, parts->parent_size);
    out = put(out, parts->head, parts->head_size);
    out = put_fixed64(out, 0x39, start); /* Span.start_time_unix_nano (7) */
    out = put_fixed64(out, 0x41, end);   /* Span.end_time_unix_nano (8) */
    out = put(out, parts->attributes, parts->attributes_size);
    out = put(out, parts->addresses, parts->addresses_size);
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
                                    parts->request_id_size);
    out = put(out, parts->request_id, parts->request_id_size);
    out = put(out, parts->agent, parts->agent_size);
    out = put(out, parts->tail, parts->tail_size);
    if (parts->flags != NULL) {
        memcpy(out - 4, parts->flags, 4);
    }
    return span;
}

static int
request_id_arg(PyObject *arg, const char **data, Py_ssize_t *size)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "request_id must be str, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    *data = PyUnicode_AsUTF8AndSize(arg, size);
    return *data == NULL ? -1 : 0;
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
    ServerParts parts = {.parent = "", .parent_size = 0, .flags = NULL};
    Py_ssize_t fields_size;
    if (bytes_arg(args[0], "fields", &parts.fields, &fields_size) < 0 ||
        bytes_arg(args[1], "head", &parts.head, &parts.head_size) < 0 ||
        time_arg(args[2], "start", &parts.start) < 0 ||
        bytes_arg(args[4], "attributes", &parts.attributes, &parts.attributes_size) < 0 ||
        bytes_arg(args[5], "addresses", &parts.addresses, &parts.addresses_size) < 0 ||
        bytes_arg(args[6], "path", &parts.path, &parts.path_size) < 0 ||
        bytes_arg(args[8], "agent", &parts.agent, &parts.agent_size) < 0 ||
        bytes_arg(args[9], "tail", &parts.tail, &parts.tail_size) < 0) {
        return NULL;
    }
    if (fields_size < SERVER_IDS) {
        PyErr_SetString(PyExc_ValueError, "fields must hold at least 28 bytes");
        return NULL;
    }
    parts.duration = PyFloat_AsDouble(args[3]);
    if (parts.duration == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (request_id_arg(args[7], &parts.request_id, &parts.request_id_size) < 0) {
        return NULL;
    }
    return write_server_span(&parts);
}

PyDoc_STRVAR(attempt_span_doc,
"attempt_span(fields, head, start, end, attributes, tail, /) -> bytes\n"
"\n"
"An upstream attempt's span as a ScopeSpans.spans field: `fields` (its trace_id,\n"
"span_id and parent_span_id fields), `head` (name and kind), start and end (ns),\n"
"`attributes`, `tail` (status and flags), each bytes part written as given.");

static PyObject *
write_attempt_span(const char *fields, Py_ssize_t fields_size, const char *head,
                   Py_ssize_t head_size, uint64_t start, uint64_t end, const char *attributes,
                   Py_ssize_t attributes_size, const char *tail, Py_ssize_t tail_size)
{
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
    return write_attempt_span(fields, fields_size, head, head_size, start, end, attributes,
                              attributes_size, tail, tail_size);
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

/* The recorder: what every sampled request calls, as trace.py's PythonRequestTrace
 * does it (the reference: same attributes, same spans). trace.py subclasses this type
 * (NativeRequestTrace) with the Python methods of the rarer spans and binds the caches
 * and the functions that fill them (bind()); a cache miss, an unusual attempt (a
 * resend, an error, a trace state) and a retry's new span id go back to Python. */

typedef struct {
    PyObject_HEAD
    PyObject *fields;        /* bytes: an id pool entry's */
    PyObject *line;          /* bytes: the first attempt's trace context lines */
    PyObject *spans;         /* list of bytes: the finished spans */
    PyObject *tracestate;    /* bytes or None */
    PyObject *parent_fields; /* bytes: the caller's span as a parent (b"": none) */
    PyObject *attempt;       /* bytes (the open attempt's span fields) or None */
    PyObject *attempt_method;
    PyObject *attempt_target;
    PyObject *attempt_error; /* str or None */
    long long start_ns, attempt_start, waiting_since;
    long long attempts, attempt_resend, attempt_status;
} Trace;

static struct {
    PyTypeObject *type; /* trace.py's NativeRequestTrace */
    PyObject *attempts, *describe_attempt, *addresses, *describe_addresses, *agents,
        *describe_agent, *local_flags, *remote_flags;
    /* method names, interned */
    PyObject *describe, *new_span, *unusual_attempt;
} bound;

/* Begin's attribute and method names, interned (intern_names) */
static struct {
    PyObject *trace_headers, *trace_lines, *trace, *refill, *fields;
} begin_names;

/* As time.time_ns(): the system clock. */
static void
now_ns(long long *value)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    *value = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static int
trace_traverse(Trace *self, visitproc visit, void *arg)
{
    /* Not its type: a Python subclass's traverse visits that (this base is static). */
    Py_VISIT(self->fields);
    Py_VISIT(self->line);
    Py_VISIT(self->spans);
    Py_VISIT(self->tracestate);
    Py_VISIT(self->parent_fields);
    Py_VISIT(self->attempt);
    Py_VISIT(self->attempt_method);
    Py_VISIT(self->attempt_target);
    Py_VISIT(self->attempt_error);
    return 0;
}

static int
trace_clear(Trace *self)
{
    Py_CLEAR(self->fields);
    Py_CLEAR(self->line);
    Py_CLEAR(self->spans);
    Py_CLEAR(self->tracestate);
    Py_CLEAR(self->parent_fields);
    Py_CLEAR(self->attempt);
    Py_CLEAR(self->attempt_method);
    Py_CLEAR(self->attempt_target);
    Py_CLEAR(self->attempt_error);
    return 0;
}

/* A garbage-collected object's dealloc: untracked, its members cleared, freed. */
static void
gc_dealloc(PyObject *self, inquiry clear)
{
    PyObject_GC_UnTrack(self);
    clear(self);
    Py_TYPE(self)->tp_free(self);
}

static void
trace_dealloc(Trace *self)
{
    gc_dealloc((PyObject *)self, (inquiry)trace_clear);
}

static PyObject *empty_bytes; /* b"" */

/* Whether the members are there (tp_clear, the garbage collector's, empties them all). */
static int
trace_ready(Trace *self)
{
    if (self->spans != NULL) {
        return 1;
    }
    PyErr_SetString(PyExc_RuntimeError, "a cleared trace");
    return 0;
}

/* The state of a new trace, as PythonRequestTrace.__init__ leaves it. Every object
 * member is set (never NULL) from here on: only attempt_error can be set from Python,
 * and only to an object. */
static int
trace_start(Trace *self, PyObject *fields, PyObject *line, PyObject *parent_fields,
            PyObject *tracestate)
{
    PyObject *spans = PyList_New(0);
    if (spans == NULL) {
        return -1;
    }
    now_ns(&self->start_ns);
    Py_XSETREF(self->spans, spans);
    Py_XSETREF(self->fields, Py_NewRef(fields));
    Py_XSETREF(self->line, Py_NewRef(line));
    Py_XSETREF(self->parent_fields, Py_NewRef(parent_fields));
    Py_XSETREF(self->tracestate, Py_NewRef(tracestate));
    Py_XSETREF(self->attempt, Py_NewRef(Py_None));
    Py_XSETREF(self->attempt_method, Py_NewRef(empty_bytes));
    Py_XSETREF(self->attempt_target, Py_NewRef(Py_None));
    Py_XSETREF(self->attempt_error, Py_NewRef(Py_None));
    self->attempt_start = self->waiting_since = 0;
    self->attempts = self->attempt_resend = self->attempt_status = 0;
    return 0;
}

static PyObject *
trace_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    Trace *self = (Trace *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    if (trace_start(self, empty_bytes, empty_bytes, empty_bytes, Py_None) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
trace_init(Trace *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fields", "line", "parent_fields", "tracestate", NULL};
    PyObject *fields, *line, *parent_fields = NULL, *tracestate = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "SS|SO:RequestTrace", keywords, &fields,
                                     &line, &parent_fields, &tracestate)) {
        return -1;
    }
    if (tracestate != Py_None && !PyBytes_Check(tracestate)) {
        PyErr_SetString(PyExc_TypeError, "tracestate must be bytes or None");
        return -1;
    }
    return trace_start(self, fields, line, parent_fields == NULL ? empty_bytes : parent_fields,
                       tracestate);
}

PyDoc_STRVAR(new_trace_doc,
"new_trace(fields, line, /) -> RequestTrace\n"
"\n"
"A trace of the gateway's own (as RequestTrace(fields, line)): the bound class's\n"
"instance without the class call.");

/* A trace of the gateway's own (new reference): the bound class's instance, started. */
static PyObject *
make_trace(PyObject *fields, PyObject *line)
{
    if (bound.type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() has not been called");
        return NULL;
    }
    if (!PyBytes_Check(fields) || !PyBytes_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "fields and line must be bytes");
        return NULL;
    }
    Trace *self = (Trace *)bound.type->tp_alloc(bound.type, 0);
    if (self == NULL) {
        return NULL;
    }
    if (trace_start(self, fields, line, empty_bytes, Py_None) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
new_trace(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arity("new_trace", nargs, 2)) {
        return NULL;
    }
    return make_trace(args[0], args[1]);
}

/* (method, target, status): the cached (head, attributes) of an attempt, borrowed from
 * the tuple it returns in *owner (a new reference). */
static int
attempt_described(Trace *self, PyObject **owner, PyObject **head, PyObject **attributes)
{
    PyObject *status = PyLong_FromLongLong(self->attempt_status);
    if (status == NULL) {
        return -1;
    }
    PyObject *key = PyTuple_Pack(3, self->attempt_method, self->attempt_target, status);
    Py_DECREF(status);
    if (key == NULL) {
        return -1;
    }
    PyObject *described = PyDict_GetItemWithError(bound.attempts, key);
    if (described != NULL) {
        Py_INCREF(described);
    }
    else if (!PyErr_Occurred()) {
        described = PyObject_CallOneArg(bound.describe_attempt, key);
    }
    Py_DECREF(key);
    if (described == NULL) {
        return -1;
    }
    if (!PyTuple_Check(described) || PyTuple_GET_SIZE(described) != 2 ||
        !PyBytes_Check(PyTuple_GET_ITEM(described, 0)) ||
        !PyBytes_Check(PyTuple_GET_ITEM(described, 1))) {
        Py_DECREF(described);
        PyErr_SetString(PyExc_TypeError, "an attempt is described by (bytes, bytes)");
        return -1;
    }
    *owner = described;
    *head = PyTuple_GET_ITEM(described, 0);
    *attributes = PyTuple_GET_ITEM(described, 1);
    return 0;
}

static int
trace_end_attempt(Trace *self)
{
    if (!trace_ready(self)) {
        return -1;
    }
    if (self->attempt == Py_None) {
        return 0;
    }
    PyObject *fields = self->attempt; /* the reference moves here */
    self->attempt = Py_NewRef(Py_None);
    PyObject *described, *head, *attributes;
    if (attempt_described(self, &described, &head, &attributes) < 0) {
        Py_DECREF(fields);
        return -1;
    }
    PyObject *unusual = NULL;
    PyObject *tail = bound.local_flags;
    if (self->attempt_resend || self->attempt_error != Py_None || self->attempt_status >= 500 ||
        self->tracestate != Py_None) {
        PyObject *call[3] = {(PyObject *)self, fields, attributes};
        unusual = PyObject_VectorcallMethod(bound.unusual_attempt, call,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (unusual == NULL) {
            goto error;
        }
        if (!PyTuple_Check(unusual) || PyTuple_GET_SIZE(unusual) != 3 ||
            !PyBytes_Check(PyTuple_GET_ITEM(unusual, 0)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(unusual, 1)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(unusual, 2))) {
            PyErr_SetString(PyExc_TypeError, "_unusual_attempt returns 3 bytes");
            goto error;
        }
        Py_SETREF(fields, Py_NewRef(PyTuple_GET_ITEM(unusual, 0)));
        attributes = PyTuple_GET_ITEM(unusual, 1);
        tail = PyTuple_GET_ITEM(unusual, 2);
    }
    long long end;
    now_ns(&end);
    if (self->attempt_start < 0 || end < 0) {
        PyErr_SetString(PyExc_OverflowError, "a time before 1970");
        goto error;
    }
    PyObject *span = write_attempt_span(
        PyBytes_AS_STRING(fields), PyBytes_GET_SIZE(fields), PyBytes_AS_STRING(head),
        PyBytes_GET_SIZE(head), (uint64_t)self->attempt_start, (uint64_t)end,
        PyBytes_AS_STRING(attributes), PyBytes_GET_SIZE(attributes), PyBytes_AS_STRING(tail),
        PyBytes_GET_SIZE(tail));
    if (span == NULL) {
        goto error;
    }
    int appended = PyList_Append(self->spans, span);
    Py_DECREF(span);
    Py_XDECREF(unusual);
    Py_DECREF(described);
    Py_DECREF(fields);
    return appended;
error:
    Py_XDECREF(unusual);
    Py_DECREF(described);
    Py_DECREF(fields);
    return -1;
}

static PyObject *
trace_end_attempt_method(Trace *self, PyObject *unused)
{
    (void)unused;
    if (trace_end_attempt(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
trace_begin_attempt(Trace *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!arity("begin_attempt", nargs, 3) || !trace_ready(self)) {
        return NULL;
    }
    long long resend = PyLong_AsLongLong(args[2]);
    if (resend == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (trace_end_attempt(self) < 0) {
        return NULL;
    }
    now_ns(&self->attempt_start);
    Py_SETREF(self->attempt_method, Py_NewRef(args[0]));
    Py_SETREF(self->attempt_target, Py_NewRef(args[1]));
    self->attempt_resend = resend;
    self->attempt_status = 0;
    Py_XSETREF(self->attempt_error, Py_NewRef(Py_None));
    self->attempts += 1;
    if (self->attempts == 1) { /* the pool drew its id with the trace's */
        if (!PyBytes_Check(self->fields) || PyBytes_GET_SIZE(self->fields) < ENTRY_FIELDS) {
            PyErr_SetString(PyExc_ValueError, "fields must hold 66 bytes");
            return NULL;
        }
        PyObject *attempt =
            PyBytes_FromStringAndSize(PyBytes_AS_STRING(self->fields) + SERVER_IDS,
                                      ENTRY_FIELDS - SERVER_IDS);
        if (attempt == NULL) {
            return NULL;
        }
        Py_SETREF(self->attempt, attempt);
        return Py_NewRef(self->line);
    }
    PyObject *call[1] = {(PyObject *)self};
    PyObject *made = PyObject_VectorcallMethod(bound.new_span, call,
                                               1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (made == NULL) {
        return NULL;
    }
    if (!PyTuple_Check(made) || PyTuple_GET_SIZE(made) != 2 ||
        !PyBytes_Check(PyTuple_GET_ITEM(made, 0))) {
        Py_DECREF(made);
        PyErr_SetString(PyExc_TypeError, "_new_span returns (fields bytes, line)");
        return NULL;
    }
    Py_SETREF(self->attempt, Py_NewRef(PyTuple_GET_ITEM(made, 0)));
    PyObject *line = Py_NewRef(PyTuple_GET_ITEM(made, 1));
    Py_DECREF(made);
    return line;
}

/* Bytes from a cache, or from its filler on a miss (a new reference, in *owned too). */
static PyObject *
cached(PyObject *cache, PyObject *fill, PyObject *key, PyObject **owned)
{
    PyObject *value = PyDict_GetItemWithError(cache, key);
    if (value != NULL) {
        Py_INCREF(value);
    }
    else if (PyErr_Occurred() || (value = PyObject_CallOneArg(fill, key)) == NULL) {
        return NULL;
    }
    *owned = value;
    if (!PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "a cached attribute is bytes");
        return NULL;
    }
    return value;
}

/* The user agent's attribute (a new reference, in *owned too; b"" with none). */
static PyObject *
user_agent(PyObject *headers, PyObject **owned)
{
    if (!PyList_Check(headers)) {
        PyErr_SetString(PyExc_TypeError, "headers must be a list");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *header = PyList_GET_ITEM(headers, i);
        if (!PyTuple_Check(header) || PyTuple_GET_SIZE(header) != 2) {
            PyErr_SetString(PyExc_TypeError, "a header is a (name, value) tuple");
            return NULL;
        }
        PyObject *name = PyTuple_GET_ITEM(header, 0);
        if (!PyBytes_Check(name) || PyBytes_GET_SIZE(name) != 10) {
            continue;
        }
        const char *text = PyBytes_AS_STRING(name);
        int same = 1;
        for (int c = 0; c < 10 && same; c++) {
            char lower = (text[c] >= 'A' && text[c] <= 'Z') ? (char)(text[c] + 32) : text[c];
            same = lower == "user-agent"[c];
        }
        if (same) {
            return cached(bound.agents, bound.describe_agent, PyTuple_GET_ITEM(header, 1),
                          owned);
        }
    }
    *owned = Py_NewRef(empty_bytes);
    return empty_bytes;
}

static PyObject *
trace_finish(Trace *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!arity("finish", nargs, 8) || !trace_ready(self)) {
        return NULL;
    }
    PyObject *key = args[0], *addresses_key = args[1], *headers = args[2],
             *described_cache = args[6], *tracer = args[7];
    if (!PyDict_Check(described_cache)) {
        PyErr_SetString(PyExc_TypeError, "described must be a dict");
        return NULL;
    }
    ServerParts parts = {.parent = "", .parent_size = 0, .flags = NULL};
    Py_ssize_t fields_size;
    if (bytes_arg(args[3], "path", &parts.path, &parts.path_size) < 0 ||
        request_id_arg(args[4], &parts.request_id, &parts.request_id_size) < 0 ||
        bytes_arg(self->fields, "fields", &parts.fields, &fields_size) < 0 ||
        bytes_arg(self->parent_fields, "parent_fields", &parts.parent, &parts.parent_size) <
            0) {
        return NULL;
    }
    parts.duration = PyFloat_AsDouble(args[5]);
    if (parts.duration == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (fields_size < SERVER_IDS || self->start_ns < 0) {
        PyErr_SetString(PyExc_ValueError, "fields too short or start before 1970");
        return NULL;
    }
    parts.start = (uint64_t)self->start_ns;
    if (trace_end_attempt(self) < 0) {
        return NULL;
    }
    PyObject *result = NULL, *addresses_owned = NULL, *agent_owned = NULL;
    PyObject *described = PyDict_GetItemWithError(described_cache, key);
    if (described != NULL) {
        Py_INCREF(described);
    }
    else if (PyErr_Occurred()) {
        return NULL;
    }
    else {
        PyObject *call[2] = {tracer, key};
        described = PyObject_VectorcallMethod(bound.describe, call,
                                              2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (described == NULL) {
            return NULL;
        }
    }
    if (!PyTuple_Check(described) || PyTuple_GET_SIZE(described) != 3 ||
        bytes_arg(PyTuple_GET_ITEM(described, 0), "head", &parts.head, &parts.head_size) < 0 ||
        bytes_arg(PyTuple_GET_ITEM(described, 1), "attributes", &parts.attributes,
                  &parts.attributes_size) < 0 ||
        bytes_arg(PyTuple_GET_ITEM(described, 2), "tail", &parts.tail, &parts.tail_size) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "a server span is described by 3 bytes");
        }
        goto done;
    }
    if (parts.tail_size < 4) {
        PyErr_SetString(PyExc_ValueError, "a server span's tail holds its flags");
        goto done;
    }
    if (parts.parent_size) { /* continued: the caller's span is the parent */
        parts.flags = PyBytes_AS_STRING(bound.remote_flags) +
                      PyBytes_GET_SIZE(bound.remote_flags) - 4;
    }
    PyObject *addresses =
        cached(bound.addresses, bound.describe_addresses, addresses_key, &addresses_owned);
    if (addresses == NULL) {
        goto done;
    }
    parts.addresses = PyBytes_AS_STRING(addresses);
    parts.addresses_size = PyBytes_GET_SIZE(addresses);
    PyObject *agent = user_agent(headers, &agent_owned);
    if (agent == NULL) {
        goto done;
    }
    parts.agent = PyBytes_AS_STRING(agent);
    parts.agent_size = PyBytes_GET_SIZE(agent);
    PyObject *span = write_server_span(&parts);
    if (span == NULL) {
        goto done;
    }
    int appended = PyList_Append(self->spans, span);
    Py_DECREF(span);
    if (appended == 0) {
        result = Py_NewRef(self->spans);
    }
done:
    Py_DECREF(described);
    Py_XDECREF(addresses_owned);
    Py_XDECREF(agent_owned);
    return result;
}

static PyMethodDef trace_methods[] = {
    {"begin_attempt", (PyCFunction)(void (*)(void))trace_begin_attempt, METH_FASTCALL,
     "begin_attempt(method, target, resend, /) -> bytes: as PythonRequestTrace's."},
    {"end_attempt", (PyCFunction)trace_end_attempt_method, METH_NOARGS,
     "end_attempt() -> None: as PythonRequestTrace's."},
    {"finish", (PyCFunction)(void (*)(void))trace_finish, METH_FASTCALL,
     "finish(key, addresses, headers, path, request_id, duration, described, tracer, /)"
     " -> list[bytes]: as PythonRequestTrace's."},
    {NULL, NULL, 0, NULL},
};

/* What Python sets: attempt_status, attempt_error (the caller's, as the attempt goes) and
 * waiting_since (a policy's); the rest is the recorder's own. */
#define OBJECT_MEMBER(name) {#name, T_OBJECT, offsetof(Trace, name), READONLY, NULL}
#define INT_MEMBER(name) {#name, T_LONGLONG, offsetof(Trace, name), READONLY, NULL}
#define SET_INT_MEMBER(name) {#name, T_LONGLONG, offsetof(Trace, name), 0, NULL}

static PyMemberDef trace_members[] = {
    OBJECT_MEMBER(fields),
    OBJECT_MEMBER(line),
    OBJECT_MEMBER(spans),
    OBJECT_MEMBER(tracestate),
    OBJECT_MEMBER(parent_fields),
    OBJECT_MEMBER(attempt),
    OBJECT_MEMBER(attempt_method),
    OBJECT_MEMBER(attempt_target),
    {"attempt_error", T_OBJECT_EX, offsetof(Trace, attempt_error), 0, NULL},
    INT_MEMBER(start_ns),
    INT_MEMBER(attempt_start),
    SET_INT_MEMBER(waiting_since),
    INT_MEMBER(attempts),
    INT_MEMBER(attempt_resend),
    SET_INT_MEMBER(attempt_status),
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject TraceType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "potok.observability.tracing._encode.Trace",
    .tp_doc = "A sampled request's recorder (trace.py's PythonRequestTrace in C).",
    .tp_basicsize = sizeof(Trace),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = trace_new,
    .tp_init = (initproc)trace_init,
    .tp_dealloc = (destructor)trace_dealloc,
    .tp_traverse = (traverseproc)trace_traverse,
    .tp_clear = (inquiry)trace_clear,
    .tp_methods = trace_methods,
    .tp_members = trace_members,
};

PyDoc_STRVAR(bind_doc,
"bind(cls, attempts, describe_attempt, addresses, describe_addresses, agents,\n"
"     describe_agent, local_flags, remote_flags, /) -> None\n"
"\n"
"What the recorder uses (trace.py's): the class new_trace makes (a subclass of Trace),\n"
"the caches of encoded attempts, addresses and user agents (dicts) with the functions\n"
"that encode (and cache) a miss, and Span.flags' fields of a local and a remote parent.");

static PyObject *
bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arity("bind", nargs, 9)) {
        return NULL;
    }
    if (!PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &TraceType)) {
        PyErr_SetString(PyExc_TypeError, "cls must be a subclass of Trace");
        return NULL;
    }
    if (!PyDict_Check(args[1]) || !PyDict_Check(args[3]) || !PyDict_Check(args[5]) ||
        !PyCallable_Check(args[2]) || !PyCallable_Check(args[4]) || !PyCallable_Check(args[6]) ||
        !PyBytes_Check(args[7]) || !PyBytes_Check(args[8]) || PyBytes_GET_SIZE(args[8]) < 4) {
        PyErr_SetString(PyExc_TypeError, "bind: dicts, callables and flags bytes expected");
        return NULL;
    }
    Py_XSETREF(bound.type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(bound.attempts, Py_NewRef(args[1]));
    Py_XSETREF(bound.describe_attempt, Py_NewRef(args[2]));
    Py_XSETREF(bound.addresses, Py_NewRef(args[3]));
    Py_XSETREF(bound.describe_addresses, Py_NewRef(args[4]));
    Py_XSETREF(bound.agents, Py_NewRef(args[5]));
    Py_XSETREF(bound.describe_agent, Py_NewRef(args[6]));
    Py_XSETREF(bound.local_flags, Py_NewRef(args[7]));
    Py_XSETREF(bound.remote_flags, Py_NewRef(args[8]));
    Py_RETURN_NONE;
}

static int
intern_names(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&bound.describe, "describe"},
        {&bound.new_span, "_new_span"},
        {&bound.unusual_attempt, "_unusual_attempt"},
        {&begin_names.trace_headers, "trace_headers"},
        {&begin_names.trace_lines, "trace_lines"},
        {&begin_names.trace, "trace"},
        {&begin_names.refill, "refill"},
        {&begin_names.fields, "fields"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL) {
            *names[i].slot = PyUnicode_InternFromString(names[i].text);
            if (*names[i].slot == NULL) {
                return -1;
            }
        }
    }
    if (empty_bytes == NULL) {
        empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    }
    return empty_bytes == NULL ? -1 : 0;
}

/* The id pool's state (context.py's IdPool subclasses this: its Python methods refill
 * and take; `begin` below reads it without attribute lookups) and the tracer's begin in
 * C: what every request of a gateway with tracing on calls. */

typedef struct {
    PyObject_HEAD
    PyObject *lines;   /* list of bytes: each entry's traceparent line */
    PyObject *sampled; /* bytes: each entry's decision, 1 or 0 */
    PyObject *raw;     /* bytes: the entries' span fields, ENTRY_FIELDS each, or b"" */
    Py_ssize_t next;   /* the next entry to take */
} Pool;

static int
pool_traverse(Pool *self, visitproc visit, void *arg)
{
    Py_VISIT(self->lines);
    Py_VISIT(self->sampled);
    Py_VISIT(self->raw);
    return 0;
}

static int
pool_clear(Pool *self)
{
    Py_CLEAR(self->lines);
    Py_CLEAR(self->sampled);
    Py_CLEAR(self->raw);
    return 0;
}

static void
pool_dealloc(Pool *self)
{
    gc_dealloc((PyObject *)self, (inquiry)pool_clear);
}

static PyMemberDef pool_members[] = {
    {"lines", T_OBJECT, offsetof(Pool, lines), 0, NULL},
    {"sampled", T_OBJECT, offsetof(Pool, sampled), 0, NULL},
    {"raw", T_OBJECT, offsetof(Pool, raw), 0, NULL},
    {"next", T_PYSSIZET, offsetof(Pool, next), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject PoolType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "potok.observability.tracing._encode.Pool",
    .tp_doc = "The id pool's state: lines, sampled, raw, next (context.py's IdPool).",
    .tp_basicsize = sizeof(Pool),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)pool_dealloc,
    .tp_traverse = (traverseproc)pool_traverse,
    .tp_clear = (inquiry)pool_clear,
    .tp_members = pool_members,
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Pool *pool;
    PyObject *continued; /* the tracer's: (exchange) -> whether it continues the caller's */
    /* The exchange class whose slots begin reads and writes at their offsets (NULL until
     * it has seen one), its version tag then, and the offsets (see same_layout). */
    PyTypeObject *layout;
    unsigned int layout_version;
    Py_ssize_t headers_at, lines_at, trace_at;
} Begin;

/* Begin's exchange slots (trace_headers, trace_lines, trace) by offset, not by name:
 * the three lookups by name (the class's dict, the member descriptor, its getter or
 * setter) and the tracer's method lookup at the call site were ~500 instructions and ~40
 * L1 misses a request, most of what begin cost (callgrind's self cost by function under
 * bench/instructions.sh CACHE_SIM=1; BENCHMARKS.md "Tracing"). Only while the exchange's class is the one whose
 * layout was noted and unchanged since: the same version tag (CPython gives a class a new
 * one when it or a base is modified), generic attribute access, plain writable slots.
 * Anything else goes by name, as Python would. */

static Py_ssize_t
slot_offset(PyTypeObject *type, PyObject *name)
{
    PyObject *descriptor = _PyType_Lookup(type, name); /* borrowed; sets no error */
    if (descriptor == NULL || !Py_IS_TYPE(descriptor, &PyMemberDescr_Type)) {
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
        return -1;
    }
    return member->offset;
}

static void
note_layout(Begin *self, PyTypeObject *type)
{
    if (type->tp_getattro != PyObject_GenericGetAttr ||
        type->tp_setattro != PyObject_GenericSetAttr) {
        return;
    }
    Py_ssize_t headers = slot_offset(type, begin_names.trace_headers);
    Py_ssize_t lines = slot_offset(type, begin_names.trace_lines);
    Py_ssize_t trace = slot_offset(type, begin_names.trace);
    /* _PyType_Lookup gave the class a version tag if it can have one */
    if (headers < 0 || lines < 0 || trace < 0 ||
        !PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG) || type->tp_version_tag == 0) {
        return;
    }
    Py_XSETREF(self->layout, (PyTypeObject *)Py_NewRef(type));
    self->layout_version = type->tp_version_tag;
    self->headers_at = headers;
    self->lines_at = lines;
    self->trace_at = trace;
}

static inline int
same_layout(Begin *self, PyObject *exchange)
{
    PyTypeObject *type = Py_TYPE(exchange);
    if (LIKELY(type == self->layout && type->tp_version_tag == self->layout_version)) {
        return 1;
    }
    note_layout(self, type);
    return type == self->layout && type->tp_version_tag == self->layout_version;
}

static inline PyObject **
slot_at(PyObject *exchange, Py_ssize_t offset)
{
    return (PyObject **)((char *)exchange + offset);
}

/* exchange.<name> (a new reference), at `offset` when `direct` and the slot is set */
static PyObject *
get_slot(PyObject *exchange, int direct, Py_ssize_t offset, PyObject *name)
{
    PyObject *value = direct ? *slot_at(exchange, offset) : NULL;
    return value != NULL ? Py_NewRef(value) : PyObject_GetAttr(exchange, name);
}

/* exchange.<name> = value, at `offset` when `direct` */
static int
set_slot(PyObject *exchange, int direct, Py_ssize_t offset, PyObject *name, PyObject *value)
{
    if (!direct) {
        return PyObject_SetAttr(exchange, name, value);
    }
    Py_XSETREF(*slot_at(exchange, offset), Py_NewRef(value));
    return 0;
}


/* The entry `index`'s span fields: a slice of the pool's raw bytes, or its fields(). */
static PyObject *
pool_fields(Pool *pool, Py_ssize_t index)
{
    if (PyBytes_Check(pool->raw) && PyBytes_GET_SIZE(pool->raw) >= (index + 1) * ENTRY_FIELDS) {
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(pool->raw) + index * ENTRY_FIELDS,
                                         ENTRY_FIELDS);
    }
    PyObject *at = PyLong_FromSsize_t(index);
    if (at == NULL) {
        return NULL;
    }
    PyObject *call[2] = {(PyObject *)pool, at};
    PyObject *fields = PyObject_VectorcallMethod(begin_names.fields, call,
                                                 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(at);
    if (fields != NULL && !PyBytes_Check(fields)) {
        Py_DECREF(fields);
        PyErr_SetString(PyExc_TypeError, "IdPool.fields returns bytes");
        return NULL;
    }
    return fields;
}

/* The next entry's index (refilled when used up), or -1 with an error set. */
static Py_ssize_t
pool_take(Pool *pool)
{
    if (UNLIKELY(!PyList_Check(pool->lines) || pool->next >= PyList_GET_SIZE(pool->lines) ||
                 pool->next < 0)) {
        PyObject *call[1] = {(PyObject *)pool};
        PyObject *done = PyObject_VectorcallMethod(begin_names.refill, call,
                                                   1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (done == NULL) {
            return -1;
        }
        Py_DECREF(done);
        if (!PyList_Check(pool->lines) || pool->next >= PyList_GET_SIZE(pool->lines) ||
            pool->next < 0) {
            PyErr_SetString(PyExc_RuntimeError, "the id pool's refill left it empty");
            return -1;
        }
    }
    if (UNLIKELY(!PyBytes_Check(pool->sampled) || PyBytes_GET_SIZE(pool->sampled) <= pool->next)) {
        PyErr_SetString(PyExc_TypeError, "the id pool's sampled is bytes, one per line");
        return -1;
    }
    return pool->next++;
}

static PyObject *
begin_call(Begin *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (UNLIKELY(PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL)) {
        if (arity("begin", PyVectorcall_NARGS(nargsf), 1)) {
            PyErr_SetString(PyExc_TypeError, "begin() takes no keyword arguments");
        }
        return NULL;
    }
    if (UNLIKELY(self->pool == NULL)) { /* cleared by the garbage collector */
        PyErr_SetString(PyExc_RuntimeError, "begin() of a cleared Begin");
        return NULL;
    }
    PyObject *exchange = args[0];
    int direct = same_layout(self, exchange);
    PyObject *flag = get_slot(exchange, direct, self->headers_at, begin_names.trace_headers);
    if (UNLIKELY(flag == NULL)) {
        return NULL;
    }
    int came = LIKELY(flag == Py_False) ? 0 : PyObject_IsTrue(flag);
    Py_DECREF(flag);
    if (UNLIKELY(came < 0)) {
        return NULL;
    }
    if (came) { /* the caller sent trace context: the tracer's Python decides */
        PyObject *continued = PyObject_CallOneArg(self->continued, exchange);
        if (continued == NULL) {
            return NULL;
        }
        int yes = PyObject_IsTrue(continued);
        Py_DECREF(continued);
        if (yes < 0) {
            return NULL;
        }
        if (yes) {
            Py_RETURN_NONE;
        }
        direct = same_layout(self, exchange); /* the Python may have changed the class */
    }
    Pool *pool = self->pool;
    Py_ssize_t index = pool_take(pool);
    if (UNLIKELY(index < 0)) {
        return NULL;
    }
    /* Both read before the write, which may free what the slot held (and run Python) */
    PyObject *line = Py_NewRef(PyList_GET_ITEM(pool->lines, index));
    int sampled = PyBytes_AS_STRING(pool->sampled)[index];
    int failed = set_slot(exchange, direct, self->lines_at, begin_names.trace_lines, line);
    if (LIKELY(!sampled) || UNLIKELY(failed)) {
        Py_DECREF(line);
        return failed ? NULL : Py_NewRef(Py_None);
    }
    PyObject *fields = pool_fields(pool, index);
    PyObject *trace = fields == NULL ? NULL : make_trace(fields, line);
    Py_XDECREF(fields);
    Py_DECREF(line);
    if (trace == NULL) {
        return NULL;
    }
    if (direct) {
        direct = same_layout(self, exchange); /* what ran since may have been Python */
    }
    failed = set_slot(exchange, direct, self->trace_at, begin_names.trace, trace);
    Py_DECREF(trace);
    return failed ? NULL : Py_NewRef(Py_None);
}

static PyObject *
begin_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *pool, *continued;
    static char *keywords[] = {"pool", "continued", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O:Begin", keywords, &PoolType, &pool,
                                     &continued)) {
        return NULL;
    }
    if (!PyCallable_Check(continued)) {
        PyErr_SetString(PyExc_TypeError, "continued must be callable");
        return NULL;
    }
    Begin *self = (Begin *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)begin_call;
    self->pool = (Pool *)Py_NewRef(pool);
    self->continued = Py_NewRef(continued);
    return (PyObject *)self;
}

static int
begin_traverse(Begin *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pool);
    Py_VISIT(self->continued);
    Py_VISIT(self->layout);
    return 0;
}

static int
begin_clear(Begin *self)
{
    Py_CLEAR(self->pool);
    Py_CLEAR(self->continued);
    Py_CLEAR(self->layout);
    return 0;
}

static void
begin_dealloc(Begin *self)
{
    gc_dealloc((PyObject *)self, (inquiry)begin_clear);
}

static PyTypeObject BeginType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "potok.observability.tracing._encode.Begin",
    .tp_doc = "Begin(pool, continued): the tracer's begin(exchange) in C (tracer.py's\n"
              "Tracer._begin is the same in Python).",
    .tp_basicsize = sizeof(Begin),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = begin_new,
    .tp_dealloc = (destructor)begin_dealloc,
    .tp_traverse = (traverseproc)begin_traverse,
    .tp_clear = (inquiry)begin_clear,
    .tp_vectorcall_offset = offsetof(Begin, vectorcall),
    .tp_call = PyVectorcall_Call,
};


static PyMethodDef methods[] = {
    {"server_span", (PyCFunction)(void (*)(void))server_span, METH_FASTCALL, server_span_doc},
    {"attempt_span", (PyCFunction)(void (*)(void))attempt_span, METH_FASTCALL,
     attempt_span_doc},
    {"pool_entries", (PyCFunction)(void (*)(void))pool_entries, METH_FASTCALL,
     pool_entries_doc},
    {"new_trace", (PyCFunction)(void (*)(void))new_trace, METH_FASTCALL, new_trace_doc},
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL, bind_doc},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    if (intern_names() < 0 || PyType_Ready(&TraceType) < 0 ||
        PyType_Ready(&PoolType) < 0 || PyType_Ready(&BeginType) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Trace", (PyObject *)&TraceType) < 0 ||
        PyModule_AddObjectRef(module, "Pool", (PyObject *)&PoolType) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Begin", (PyObject *)&BeginType);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "potok.observability.tracing._encode",
    .m_doc = "The tracer's request-path encoders (see encode.py for the same in Python).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__encode(void)
{
    return PyModuleDef_Init(&module);
}
