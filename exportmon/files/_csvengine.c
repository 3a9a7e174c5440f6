/* The compiled CSV rewrite engine (see exportmon/files/csv_fast.py).
 *
 * One pass over UTF-8 bytes: a state machine that reads what Python's
 * csv.reader(strict=True) reads (RFC 4180 input: ',' between values, '"' quotes,
 * lines ended by \n, \r\n or \r) and writes each record in the output dialect with
 * the rules of exportmon/files/csv_rewrite.py, the reference. Input comes in blocks
 * of any size (a block may end anywhere: inside a quoted value, between \r and \n,
 * inside a multi-byte character); the state carries over, so memory is a block plus
 * the value being read. The GIL is released while a block is worked on, unless a
 * value hook is set (a Python call per value).
 *
 * Most values take the fast path (fast_fields, SSE2): 64 bytes at a time are
 * classified into one bit per byte that is not plain text (separators, quotes, line
 * endings, the output's special characters), so a value's end is a count of trailing
 * zeros and a plain value is copied without a look at its bytes; anything unusual (a
 * value hook, column work, a value running over the block's end) goes back to the
 * byte-at-a-time state machine below, which stays the whole definition.
 *
 * Errors (invalid UTF-8, unterminated quote, text after a closing quote, an
 * over-long line or value) raise Error; the caller finds the line and writes the
 * message with the reference engine, so both report a file alike.
 *
 * Built against the Python Limited API (abi3).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define HAVE_SSE2 1
#endif

/* The first byte at or after p equal to a, b, c or d (end if none). */
static inline const unsigned char *scan4(const unsigned char *p, const unsigned char *end,
                                         unsigned char a, unsigned char b, unsigned char c,
                                         unsigned char d) {
#ifdef HAVE_SSE2
    const __m128i va = _mm_set1_epi8((char)a), vb = _mm_set1_epi8((char)b),
                  vc = _mm_set1_epi8((char)c), vd = _mm_set1_epi8((char)d);
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)p);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, va), _mm_cmpeq_epi8(x, vb)),
                                   _mm_or_si128(_mm_cmpeq_epi8(x, vc), _mm_cmpeq_epi8(x, vd)));
        int mask = _mm_movemask_epi8(hit);
        if (mask) return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && *p != a && *p != b && *p != c && *p != d) p++;
    return p;
}

enum { START_RECORD, START_FIELD, IN_FIELD, IN_QUOTED, QUOTE_IN_QUOTED, EAT_CRNL };
enum { Q_MINIMAL, Q_ALL, Q_NONNUMERIC, Q_NONE, Q_GEM };
enum { E_NONE, E_UTF8, E_QUOTE, E_EOF, E_LINE, E_FIELD, E_NUL, E_UNWRITABLE, E_PYTHON };

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *data = realloc(b->data, (size_t)cap);
    if (data == NULL) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int buf_add(Buf *b, const char *p, Py_ssize_t n) {
    if (n <= 0) return 0;
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, p, (size_t)n);
    b->len += n;
    return 0;
}

static inline int buf_byte(Buf *b, char c) {
    if (b->len >= b->cap && buf_reserve(b, 1) < 0) return -1;
    b->data[b->len++] = c;
    return 0;
}

static void buf_free(Buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

typedef struct {
    PyObject_HEAD
    /* the output dialect */
    Buf col_sep, row_sep, quote, doubled_quote, repl, repl_crlf;
    int quoting, has_repl, strip_guard, nul_error, quote_ascii;
    unsigned char special[256];  /* ASCII bytes that make a value quoted */
    unsigned char special_list[8]; /* the same, but the quote character, when few */
    int n_special_list;            /* -1: too many for the list */
    Buf wide_special;            /* non-ASCII special characters, each NUL-terminated */
    int n_wide_special;
    Py_ssize_t field_limit, line_limit;
    PyObject *hook, *is_number, *header_hook;
    /* reading */
    int state, pending_cr, line_has_chars, header_pending;
    Py_ssize_t since_break, position;
    unsigned char utf8_carry[4];
    int utf8_carry_len;
    Buf field;
    /* the record being read */
    Py_ssize_t n_fields;
    Py_ssize_t n_written;   /* values written of the current record */
    int last_empty_bare;    /* the last value written was empty and unquoted */
    /* column selection: -1 in select is an empty column */
    Py_ssize_t *select, n_select, *offsets, *lengths, n_slots;
    int selecting, capturing;
    Buf record, replaced;
    /* the fast path (fast_fields): no hook, no column work, at most four ASCII
       specials besides \r, \n and the quote character */
    int fast, fast_ready;
    unsigned char fast_special[4]; /* padded with \n, which never reaches a check */
    unsigned char fast_quote;      /* \n if the quote character is not ASCII */
    /* results */
    Buf out;
    long long records;
    int error;
    PyThreadState *released;
} Engine;

static PyObject *EngineError;

static void fast_update(Engine *e);

/* --- UTF-8 validation (Python's strict decoder rules) ----------------------------- */

/* Length of the valid sequence at p (1-4), 0 if it is a valid but incomplete prefix
   of n bytes, -1 if invalid. */
static int utf8_sequence(const unsigned char *p, Py_ssize_t n) {
    unsigned char c = p[0];
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c < 0xC2) return -1;
    if (c < 0xE0) need = 1;
    else if (c < 0xF0) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        else if (c == 0xED) hi = 0x9F;
    } else if (c < 0xF5) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;
    } else return -1;
    for (int i = 1; i <= need; i++) {
        if (i >= n) return 0;
        unsigned char d = p[i];
        if (i == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return -1;
    }
    return need + 1;
}

/* Validates data, keeping an incomplete sequence at the end for the next block. */
static int validate_utf8(Engine *e, const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t i = 0;
    if (e->utf8_carry_len) {
        unsigned char tmp[8];
        int have = e->utf8_carry_len;
        memcpy(tmp, e->utf8_carry, (size_t)have);
        int take = 0;
        while (have < 4 && take < n) tmp[have++] = p[take++];
        int len = utf8_sequence(tmp, have);
        if (len < 0) return -1;
        if (len == 0) {  /* still incomplete: the block was tiny */
            memcpy(e->utf8_carry, tmp, (size_t)have);
            e->utf8_carry_len = have;
            return 0;
        }
        i = len - e->utf8_carry_len;
        e->utf8_carry_len = 0;
    }
    while (i < n) {
        /* ASCII, sixteen (or eight) bytes at a time */
#ifdef HAVE_SSE2
        while (i + 32 <= n) {
            __m128i x = _mm_or_si128(_mm_loadu_si128((const __m128i *)(p + i)),
                                     _mm_loadu_si128((const __m128i *)(p + i + 16)));
            if (_mm_movemask_epi8(x)) break;
            i += 32;
        }
        while (i + 16 <= n) {
            int mask = _mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(p + i)));
            if (mask) {
                i += __builtin_ctz((unsigned)mask);
                break;
            }
            i += 16;
        }
#else
        while (i + 8 <= n) {
            uint64_t word;
            memcpy(&word, p + i, 8);
            if (word & 0x8080808080808080ULL) break;
            i += 8;
        }
#endif
        while (i < n && p[i] < 0x80) i++;
        if (i >= n) break;
        /* the common two-byte sequence (U+0080 to U+07FF) */
        if (p[i] >= 0xC2 && p[i] < 0xE0 && i + 1 < n && (p[i + 1] & 0xC0) == 0x80) {
            i += 2;
            continue;
        }
        int len = utf8_sequence(p + i, n - i);
        if (len < 0) return -1;
        if (len == 0) {
            e->utf8_carry_len = (int)(n - i);
            memcpy(e->utf8_carry, p + i, (size_t)(n - i));
            return 0;
        }
        i += len;
    }
    return 0;
}

/* --- the GIL, taken back for the few Python calls of a block without a hook ------- */

static inline void gil_take(Engine *e) {
    if (e->released) {
        PyEval_RestoreThread(e->released);
        e->released = NULL;
    }
}

static inline void gil_drop(Engine *e, int allowed) {
    if (allowed && !e->released) e->released = PyEval_SaveThread();
}

/* --- writing values --------------------------------------------------------------- */

static int is_ascii_number(const unsigned char *c, Py_ssize_t n) {
    Py_ssize_t i = 0;
    int digits = 0;
    if (i < n && (c[i] == '+' || c[i] == '-')) i++;
    while (i < n && c[i] >= '0' && c[i] <= '9') i++, digits++;
    if (i < n && c[i] == '.') {
        i++;
        while (i < n && c[i] >= '0' && c[i] <= '9') i++, digits++;
    }
    if (!digits) return 0;
    if (i < n && (c[i] == 'e' || c[i] == 'E')) {
        i++;
        if (i < n && (c[i] == '+' || c[i] == '-')) i++;
        int exp = 0;
        while (i < n && c[i] >= '0' && c[i] <= '9') i++, exp++;
        if (!exp) return 0;
    }
    return i == n;
}

/* 1 number, 0 not, -1 Python error. Non-ASCII digits (\d is Unicode) ask Python. */
static int is_number(Engine *e, const unsigned char *c, Py_ssize_t n, int wide, int gil_ok) {
    if (!wide) return is_ascii_number(c, n);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char b = c[i];
        if (b < 0x80 && !((b >= '0' && b <= '9') || b == '+' || b == '-' || b == '.' ||
                          b == 'e' || b == 'E'))
            return 0;
    }
    gil_take(e);
    PyObject *text = PyUnicode_DecodeUTF8((const char *)c, n, "strict");
    PyObject *match = text ? PyObject_CallFunctionObjArgs(e->is_number, text, NULL) : NULL;
    Py_XDECREF(text);
    int result = match ? PyObject_IsTrue(match) : -1;
    Py_XDECREF(match);
    gil_drop(e, gil_ok);
    return result;
}

static int holds_wide_special(Engine *e, const char *c, Py_ssize_t n, int skip_quote) {
    const char *s = e->wide_special.data;
    for (int k = 0; k < e->n_wide_special; k++) {
        size_t len = strlen(s);
        int is_quote = !e->quote_ascii && (Py_ssize_t)len == e->quote.len &&
                       memcmp(s, e->quote.data, len) == 0;
        if (!(skip_quote && is_quote)) {
            for (Py_ssize_t i = 0; i + (Py_ssize_t)len <= n; i++)
                if (memcmp(c + i, s, len) == 0) return 1;
        }
        s += len + 1;
    }
    return 0;
}

static int write_quoted(Engine *e, const char *c, Py_ssize_t n) {
    Buf *out = &e->out;
    if (buf_reserve(out, 2 * n + 2 * e->quote.len) < 0) return -1;
    memcpy(out->data + out->len, e->quote.data, (size_t)e->quote.len);
    out->len += e->quote.len;
    if (e->quote_ascii) {
        char q = e->quote.data[0];
        const char *end = c + n;
        while (c < end) {
            const char *hit = memchr(c, q, (size_t)(end - c));
            if (hit == NULL) {
                memcpy(out->data + out->len, c, (size_t)(end - c));
                out->len += end - c;
                break;
            }
            memcpy(out->data + out->len, c, (size_t)(hit - c + 1));
            out->len += hit - c + 1;
            out->data[out->len++] = q;
            c = hit + 1;
        }
    } else {
        Py_ssize_t q = e->quote.len;
        for (Py_ssize_t i = 0; i < n;) {
            if (i + q <= n && memcmp(c + i, e->quote.data, (size_t)q) == 0) {
                memcpy(out->data + out->len, e->doubled_quote.data, (size_t)(2 * q));
                out->len += 2 * q;
                i += q;
            } else {
                out->data[out->len++] = c[i++];
            }
        }
    }
    memcpy(out->data + out->len, e->quote.data, (size_t)e->quote.len);
    out->len += e->quote.len;
    return 0;
}

/* Writes one value (newlines already replaced): separator, then quoted as the
   quoting rule says. */
static int write_value(Engine *e, const char *c, Py_ssize_t n, int gil_ok) {
    if (e->n_written++) {
        int rc = e->col_sep.len == 1 ? buf_byte(&e->out, e->col_sep.data[0])
                                     : buf_add(&e->out, e->col_sep.data, e->col_sep.len);
        if (rc < 0) return -1;
    }
    const unsigned char *u = (const unsigned char *)c;
    int special = 0, wide = 0, unquotable = 0;
    Py_ssize_t i = 0;
#ifdef HAVE_SSE2
    if (n >= 16 && e->n_special_list >= 0) {
        __m128i any = _mm_setzero_si128(), quotes = _mm_setzero_si128(), high = any;
        const __m128i vq = _mm_set1_epi8(e->quote_ascii ? e->quote.data[0] : '\n');
        for (; i + 16 <= n; i += 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)(u + i));
            high = _mm_or_si128(high, x);
            quotes = _mm_or_si128(quotes, _mm_cmpeq_epi8(x, vq));
            for (int k = 0; k < e->n_special_list; k++)
                any = _mm_or_si128(any, _mm_cmpeq_epi8(x, _mm_set1_epi8((char)e->special_list[k])));
        }
        if (_mm_movemask_epi8(any)) special |= 3;
        if (_mm_movemask_epi8(quotes)) special |= 1;
        wide = _mm_movemask_epi8(high) != 0;
    }
#endif
    for (; i < n; i++) special |= e->special[u[i]];
    wide |= special >> 2; /* bit 4: a byte of a multi-byte character */
    special &= 3;
    /* special: bit 1 any special, bit 2 a special other than the quote character */
    if (wide && e->n_wide_special) {
        if (holds_wide_special(e, c, n, 1)) special |= 3;
        else if (!(special & 1) && holds_wide_special(e, c, n, 0)) special |= 1;
    }
    unquotable = special & 2;
    int quoted;
    switch (e->quoting) {
    case Q_MINIMAL: quoted = special != 0; break;
    case Q_GEM: quoted = special != 0 || n == 0; break;
    case Q_ALL: quoted = 1; break;
    case Q_NONNUMERIC: {
        if (special) quoted = 1;
        else {
            int number = is_number(e, u, n, wide, gil_ok);
            if (number < 0) return -1;
            quoted = !number;
        }
        break;
    }
    default:
        if (unquotable) {
            e->error = E_UNWRITABLE;
            return -1;
        }
        quoted = 0;
    }
    e->last_empty_bare = !quoted && n == 0;
    if (quoted) return write_quoted(e, c, n);
    return buf_add(&e->out, c, n);
}

/* replace_newlines: \r\n and \n in the value replaced (as str.replace("\r\n", r) then
   .replace("\n", r) does: a \r\n becomes r with its own \n replaced). */
static int write_replaced(Engine *e, const char *c, Py_ssize_t n, Buf *tmp, int gil_ok) {
    if (!e->has_repl || memchr(c, '\n', (size_t)n) == NULL) return write_value(e, c, n, gil_ok);
    tmp->len = 0;
    const char *end = c + n;
    while (c < end) {
        /* the text up to the next \n (less a \r before it) as it is, then the replacement */
        const char *lf = memchr(c, '\n', (size_t)(end - c));
        if (lf == NULL) {
            if (buf_add(tmp, c, end - c) < 0) return -1;
            break;
        }
        int crlf = lf > c && lf[-1] == '\r';
        if (buf_add(tmp, c, lf - crlf - c) < 0) return -1;
        if (crlf ? buf_add(tmp, e->repl_crlf.data, e->repl_crlf.len) < 0
                 : buf_add(tmp, e->repl.data, e->repl.len) < 0)
            return -1;
        c = lf + 1;
    }
    return write_value(e, tmp->data, tmp->len, gil_ok);
}

/* A value read from the input (or a header name) through strip_formula_guard, the
   value hook and newline replacement to the output. */
static int emit(Engine *e, const char *c, Py_ssize_t n, int gil_ok) {
    if (e->strip_guard && n >= 2 && (c[0] == '\t' || c[0] == '\'') &&
        (c[1] == '=' || c[1] == '+' || c[1] == '-' || c[1] == '@')) {
        c++;
        n--;
    }
    if (e->hook == NULL) return write_replaced(e, c, n, &e->replaced, gil_ok);
    gil_take(e);
    PyObject *value = PyUnicode_DecodeUTF8(c, n, "strict");
    if (value == NULL) return -1;
    PyObject *result = PyObject_CallFunctionObjArgs(e->hook, value, NULL);
    Py_DECREF(value);
    if (result == NULL) {
        e->error = E_PYTHON;
        return -1;
    }
    int rc;
    if (result == Py_None) {
        rc = write_replaced(e, "", 0, &e->replaced, gil_ok);
    } else {
        PyObject *text = PyUnicode_Check(result) ? (Py_INCREF(result), result) : PyObject_Str(result);
        Py_ssize_t len;
        const char *utf8 = text ? PyUnicode_AsUTF8AndSize(text, &len) : NULL;
        rc = utf8 ? write_replaced(e, utf8, len, &e->replaced, gil_ok) : -1;
        Py_XDECREF(text);
    }
    Py_DECREF(result);
    return rc;
}

static int end_record_output(Engine *e) {
    if (e->quoting == Q_MINIMAL && e->n_written == 1 && e->last_empty_bare &&
        buf_add(&e->out, e->doubled_quote.data, e->doubled_quote.len) < 0)
        return -1;
    e->n_written = 0;
    return buf_add(&e->out, e->row_sep.data, e->row_sep.len);
}

/* --- records and the header ------------------------------------------------------- */

static int ensure_slots(Engine *e, Py_ssize_t count) {
    if (count <= e->n_slots) return 0;
    Py_ssize_t n = e->n_slots ? e->n_slots : 16;
    while (n < count) n *= 2;
    Py_ssize_t *o = realloc(e->offsets, (size_t)n * sizeof(Py_ssize_t));
    if (o == NULL) return -1;
    e->offsets = o;
    Py_ssize_t *l = realloc(e->lengths, (size_t)n * sizeof(Py_ssize_t));
    if (l == NULL) return -1;
    e->lengths = l;
    e->n_slots = n;
    return 0;
}

static int check_field_limit(Engine *e) {
    if (e->field.len <= e->field_limit) return 0;
    Py_ssize_t chars = 0;
    for (Py_ssize_t i = 0; i < e->field.len; i++)
        chars += ((unsigned char)e->field.data[i] & 0xC0) != 0x80;
    if (chars > e->field_limit) {
        e->error = E_FIELD;
        return -1;
    }
    return 0;
}

/* The value c[0:n] ends a field (c is the field buffer, or the input itself when the
   whole value lies in one block and needs no unescaping). */
static int save_value(Engine *e, const char *c, Py_ssize_t n, int gil_ok) {
    Py_ssize_t index = e->n_fields++;
    if (!e->capturing && !e->selecting) return emit(e, c, n, gil_ok);
    if (e->capturing || index < e->n_slots) {
        if (ensure_slots(e, index + 1) < 0) return -1;
        e->offsets[index] = e->record.len;
        e->lengths[index] = n;
        return buf_add(&e->record, c, n);
    }
    return 0;
}

static int save_field(Engine *e, int gil_ok) {
    if (check_field_limit(e) < 0) return -1;
    int rc = save_value(e, e->field.data, e->field.len, gil_ok);
    e->field.len = 0;
    return rc;
}

/* The header: handed to header_hook, which returns (select, names): the input column
   of each output column (-1: an empty one) or None for all, and the header to write. */
static int capture_header(Engine *e, int gil_ok) {
    gil_take(e);
    int rc = -1;
    PyObject *names = PyList_New(e->n_fields);
    if (names == NULL) return -1;
    for (Py_ssize_t i = 0; i < e->n_fields; i++) {
        PyObject *name = PyUnicode_DecodeUTF8(e->record.data + e->offsets[i], e->lengths[i], "strict");
        if (name == NULL) goto done;
        PyList_SetItem(names, i, name);
    }
    PyObject *plan = PyObject_CallFunctionObjArgs(e->header_hook, names, NULL);
    if (plan == NULL) {
        e->error = E_PYTHON;
        goto done;
    }
    PyObject *select = PyTuple_GetItem(plan, 0), *header = PyTuple_GetItem(plan, 1);
    if (select == NULL || header == NULL) goto plan_done;
    e->capturing = 0;
    e->record.len = 0;
    if (select != Py_None) {
        Py_ssize_t n = PySequence_Size(select);
        if (n < 0) goto plan_done;
        e->select = malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
        if (e->select == NULL) goto plan_done;
        e->n_select = n;
        Py_ssize_t top = -1;
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *item = PySequence_GetItem(select, j);
            if (item == NULL) goto plan_done;
            e->select[j] = PyLong_AsSsize_t(item);
            Py_DECREF(item);
            if (e->select[j] == -1 && PyErr_Occurred()) goto plan_done;
            if (e->select[j] > top) top = e->select[j];
        }
        e->n_slots = 0;  /* fields past the last selected one are not kept */
        if (ensure_slots(e, top + 1) < 0) goto plan_done;
        e->n_slots = top + 1;
        e->selecting = 1;
    }
    Py_ssize_t count = PySequence_Size(header);
    if (count < 0) goto plan_done;
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *item = PySequence_GetItem(header, j);
        if (item == NULL) goto plan_done;
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(item, &len);
        int failed = utf8 == NULL || emit(e, utf8, len, 0) < 0;
        Py_DECREF(item);
        if (failed) goto plan_done;
    }
    rc = 0;
    fast_update(e);
plan_done:
    Py_DECREF(plan);
done:
    Py_DECREF(names);
    if (rc == 0) gil_drop(e, gil_ok);
    return rc;
}

static int end_record(Engine *e, int gil_ok) {
    e->records++;
    if (e->header_pending) {
        e->header_pending = 0;
        if (capture_header(e, gil_ok) < 0) return -1;
    } else if (e->selecting && e->n_fields) {
        for (Py_ssize_t j = 0; j < e->n_select; j++) {
            Py_ssize_t index = e->select[j];
            int rc;
            if (index >= 0 && index < e->n_fields)
                rc = emit(e, e->record.data + e->offsets[index], e->lengths[index], gil_ok);
            else
                rc = emit(e, "", 0, gil_ok);
            if (rc < 0) return -1;
        }
    }
    e->n_fields = 0;
    e->record.len = 0;
    return end_record_output(e);
}

/* --- the fast path ------------------------------------------------------------------ */

/* Whether fast_fields may read the records from here on. */
static void fast_update(Engine *e) {
#ifdef HAVE_SSE2
    e->fast = e->fast_ready && e->hook == NULL && !e->capturing && !e->selecting;
#else
    e->fast = 0;
#endif
}

#ifdef HAVE_SSE2
#define ALWAYS_INLINE inline __attribute__((always_inline))

typedef struct {
    __m128i comma, dquote, cr, lf, nul, quote, other[4], low, top;
} Vectors;

/* The first stop byte at or after p: ',' (or '"' in a quoted value), \r, \n, and NUL
   where it is an error. The classes of the bytes before it are ORed into *bits as
   write_value finds them (1: a special, 2: a special other than the quote character,
   4: a byte of a multi-byte character). NULL if no stop comes before end. */
static ALWAYS_INLINE const unsigned char *fast_scan(const Engine *e, const Vectors *v,
                                                    int quoted, const unsigned char *p,
                                                    const unsigned char *end, int *bits) {
    const __m128i first = quoted ? v->dquote : v->comma;
    unsigned any = 0, other = 0, high = 0;
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)p);
        unsigned stop = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, first), _mm_cmpeq_epi8(x, v->cr)),
                         _mm_or_si128(_mm_cmpeq_epi8(x, v->lf), _mm_cmpeq_epi8(x, v->nul))));
        __m128i o = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(x, v->other[0]), _mm_cmpeq_epi8(x, v->other[1])),
            _mm_or_si128(_mm_cmpeq_epi8(x, v->other[2]), _mm_cmpeq_epi8(x, v->other[3])));
        unsigned om = (unsigned)_mm_movemask_epi8(o);
        unsigned am = om | (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, v->quote));
        unsigned hm = (unsigned)_mm_movemask_epi8(x);
        if (stop) {
            unsigned below = (stop & (0u - stop)) - 1;
            any |= am & below;
            other |= om & below;
            high |= hm & below;
            *bits |= (any != 0) | (other != 0) << 1 | (high != 0) << 2;
            return p + __builtin_ctz(stop);
        }
        any |= am;
        other |= om;
        high |= hm;
        p += 16;
    }
    int b = (any != 0) | (other != 0) << 1 | (high != 0) << 2;
    const unsigned char f = quoted ? '"' : ',', nul = e->nul_error ? 0 : '\n';
    for (; p < end; p++) {
        unsigned char c = *p;
        if (c == f || c == '\r' || c == '\n' || c == nul) {
            *bits |= b;
            return p;
        }
        b |= e->special[c];
    }
    return NULL;
}

/* One bit for each of the 64 bytes at w that is not plain text: ',', '"', a byte up to
   \r (so \r, \n and NUL), the quote character, another special, and with `high` a byte
   of a multi-byte character. A value of plain bytes only needs no look at its bytes. */
static ALWAYS_INLINE uint64_t fast_window(const Vectors *v, const unsigned char *w, int high) {
    uint64_t mask = 0;
    for (int i = 0; i < 4; i++) {
        __m128i x = _mm_loadu_si128((const __m128i *)(w + 16 * i));
        __m128i low = high ? _mm_cmplt_epi8(x, v->top)
                           : _mm_cmpeq_epi8(_mm_min_epu8(x, v->low), x);
        __m128i hit = _mm_or_si128(
            _mm_or_si128(low, _mm_or_si128(_mm_cmpeq_epi8(x, v->comma),
                                           _mm_cmpeq_epi8(x, v->dquote))),
            _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(x, v->quote), _mm_cmpeq_epi8(x, v->other[0])),
                _mm_or_si128(_mm_cmpeq_epi8(x, v->other[1]),
                             _mm_or_si128(_mm_cmpeq_epi8(x, v->other[2]),
                                          _mm_cmpeq_epi8(x, v->other[3])))));
        mask |= (uint64_t)(unsigned)_mm_movemask_epi8(hit) << (16 * i);
    }
    return mask;
}

/* The first byte at or after s that is not plain text (see fast_window), with the
   windows *w (64 bytes, *plain their bits) moved on as needed; NULL when s reaches the
   last 64 bytes of the block before one. */
static ALWAYS_INLINE const unsigned char *fast_hit(const Vectors *v, const unsigned char **w,
                                                   uint64_t *plain, const unsigned char *s,
                                                   const unsigned char *end, int high) {
    for (;;) {
        if (s >= *w && s - *w < 64) {
            uint64_t rest = *plain >> (s - *w);
            if (rest) return s + __builtin_ctzll(rest);
            s = *w + 64;
        }
        if (end - s < 64) return NULL;
        *w = s;
        *plain = fast_window(v, s, high);
    }
}

/* Copies n bytes; the input has 32 bytes from c, the output room for 32 more. */
static ALWAYS_INLINE void fast_copy(char *to, const unsigned char *c, Py_ssize_t n) {
    if (n <= 16) {
        _mm_storeu_si128((__m128i *)to, _mm_loadu_si128((const __m128i *)c));
    } else if (n <= 32) {
        _mm_storeu_si128((__m128i *)to, _mm_loadu_si128((const __m128i *)c));
        _mm_storeu_si128((__m128i *)(to + 16), _mm_loadu_si128((const __m128i *)(c + 16)));
    } else {
        memcpy(to, c, (size_t)n);
    }
}

/* Reads records from p (at the start of a value) as parse does, as long as they are
   simple: each value unquoted, or quoted without a doubled quote or a line break
   inside, and ended by ',' or a line ending within the block; and writes them as
   save_value and end_record do. Returns where it stopped, in the state parse goes on
   from; NULL on an error.

   The output position and the record's counters live in local variables (writes
   through a char pointer would make the compiler reload every field of e); they go
   back to e (SYNC) before any call that uses them, and are read again (LOAD) after. */
static ALWAYS_INLINE const unsigned char *fast_body(Engine *e, const unsigned char *p,
                                                   const unsigned char *end, int gil_ok,
                                                   const int quoting, const int short_marks) {
    Vectors v;
    v.comma = _mm_set1_epi8(',');
    v.dquote = _mm_set1_epi8('"');
    v.cr = _mm_set1_epi8('\r');
    v.lf = _mm_set1_epi8('\n');
    v.nul = _mm_set1_epi8(e->nul_error ? 0 : '\n');
    v.quote = _mm_set1_epi8((char)e->fast_quote);
    v.low = _mm_set1_epi8('\r');
    v.top = _mm_set1_epi8('\r' + 1);
    for (int k = 0; k < 4; k++) v.other[k] = _mm_set1_epi8((char)e->fast_special[k]);
    /* high bytes matter to a value with non-ASCII specials, or to a number */
    const int high = e->n_wide_special || e->quoting == Q_NONNUMERIC;
    const int strip_guard = e->strip_guard, nul_error = e->nul_error;
    const int wide_specials = e->n_wide_special != 0, has_repl = e->has_repl;
    const Py_ssize_t field_limit = e->field_limit;
    const int windows = 1;
    const char *col_sep = e->col_sep.data, *row_sep = e->row_sep.data, *quote = e->quote.data;
    /* short_marks: the column separator and the quote character are one byte each */
    const Py_ssize_t col_len = short_marks ? 1 : e->col_sep.len, row_len = e->row_sep.len,
                     quote_len = short_marks ? 1 : e->quote.len;
    const char col0 = col_sep[0], quote0 = quote[0];
    /* room for a separator, two quote characters and 32 bytes of a copy */
    const Py_ssize_t slack = col_len + 2 * quote_len + 32 + row_len;
    Buf *out = &e->out;
    char *o, *lim;
    Py_ssize_t n_written;
    int empty_bare;
    long long records = 0;
#define LOAD()                                   \
    do {                                         \
        o = out->data + out->len;                \
        lim = out->data + out->cap;              \
        n_written = e->n_written;                \
        empty_bare = e->last_empty_bare;         \
    } while (0)
#define SYNC()                                   \
    do {                                         \
        out->len = o - out->data;                \
        e->n_written = n_written;                \
        e->last_empty_bare = empty_bare;         \
    } while (0)
#define ROOM(n)                                                     \
    do {                                                            \
        if (lim - o < (n) + slack) {                                \
            SYNC();                                                 \
            if (buf_reserve(out, (n) + slack) < 0) goto failed;     \
            LOAD();                                                 \
        }                                                           \
    } while (0)
#define PUT(text, len)                                              \
    do {                                                            \
        if ((len) == 1) *o++ = *(text);                             \
        else {                                                      \
            memcpy(o, (text), (size_t)(len));                       \
            o += (len);                                             \
        }                                                           \
    } while (0)
/* a value: its bytes at c, n of them, with the classes of fast_scan; room bytes can be
   read from c */
#define VALUE(c, n, bits, room)                                                               \
    do {                                                                                  \
        const unsigned char *c_ = (c);                                                    \
        Py_ssize_t n_ = (n);                                                              \
        int bits_ = (bits), quoted_;                                                      \
        if (((bits_ & 4) && wide_specials) || ((bits_ & 8) && has_repl) ||                 \
            (strip_guard && n_ >= 2 && (c_[0] == '\t' || c_[0] == '\'') &&                \
             (c_[1] == '=' || c_[1] == '+' || c_[1] == '-' || c_[1] == '@'))) {           \
            SYNC();                                                                       \
            if (save_value(e, (const char *)c_, n_, gil_ok) < 0) goto failed;             \
            LOAD();                                                                       \
            break;                                                                        \
        }                                                                                 \
        ROOM(n_);                                                                         \
        if (n_written++) {                                                                \
            if (col_len == 1) *o++ = col0;                                                \
            else PUT(col_sep, col_len);                                                   \
        }                                                                                 \
        switch (quoting) {                                                                \
        case Q_MINIMAL: quoted_ = bits_ & 1; break;                                       \
        case Q_GEM: quoted_ = (bits_ & 1) || n_ == 0; break;                              \
        case Q_ALL: quoted_ = 1; break;                                                   \
        case Q_NONNUMERIC:                                                                \
            if (bits_ & 1) quoted_ = 1;                                                   \
            else if (!(bits_ & 4)) quoted_ = !is_ascii_number(c_, n_);                    \
            else {                                                                        \
                SYNC();                                                                   \
                int number_ = is_number(e, c_, n_, 1, gil_ok);                            \
                if (number_ < 0) goto failed;                                             \
                LOAD();                                                                   \
                quoted_ = !number_;                                                       \
            }                                                                             \
            break;                                                                        \
        default:                                                                          \
            if (bits_ & 2) {                                                              \
                e->error = E_UNWRITABLE;                                                  \
                goto failed;                                                              \
            }                                                                             \
            quoted_ = 0;                                                                  \
        }                                                                                 \
        empty_bare = !quoted_ && n_ == 0;                                                 \
        if (quoted_ && (bits_ & 1)) { /* the quote character may be in it */              \
            SYNC();                                                                       \
            if (write_quoted(e, (const char *)c_, n_) < 0) goto failed;                   \
            LOAD();                                                                       \
            break;                                                                        \
        }                                                                                 \
        if (quoted_) {                                                                    \
            if (quote_len == 1) *o++ = quote0;                                            \
            else PUT(quote, quote_len);                                                   \
        }                                                                                 \
        if ((room) >= 32) fast_copy(o, c_, n_);                                           \
        else memcpy(o, c_, (size_t)n_);                                                   \
        o += n_;                                                                          \
        if (quoted_) {                                                                    \
            if (quote_len == 1) *o++ = quote0;                                            \
            else PUT(quote, quote_len);                                                   \
        }                                                                                 \
    } while (0)

    LOAD();
    int state = e->state, line = e->line_has_chars;
    const unsigned char *w = p + 64; /* the window of `plain`: none yet */
    uint64_t plain = 0;
    while (p < end) {
        const unsigned char *value = p, *next;
        unsigned char c = *p;
        if (windows) {
            /* through the windows: from one byte that is not plain text to the next */
            const unsigned char *s = p, *q;
            int bits = 0;
            if (c == '"') {
                for (s++;; s = q + 1) {
                    q = fast_hit(&v, &w, &plain, s, end, high);
                    if (q == NULL || *q == '"' || (*q == 0 && nul_error)) break;
                    /* \r and \n: in the value (bit 8: newline replacement may apply) */
                    bits |= e->special[*q] | (*q == '\n') << 3;
                }
                /* the closing quote, then ',', \n or \r\n (a doubled quote: below) */
                if (q != NULL && *q == '"' && end - q > 2 &&
                    (q[1] == ',' || q[1] == '\n' || (q[1] == '\r' && q[2] == '\n')) &&
                    q - p - 1 <= field_limit) {
                    VALUE(p + 1, q - p - 1, bits, end - p - 1);
                    next = q + 1;
                    goto value_done;
                }
            } else if (c != ',' && c > '\r') {
                for (;; s = q + 1) {
                    q = fast_hit(&v, &w, &plain, s, end, high);
                    if (q == NULL || *q == ',' || *q == '\r' || *q == '\n' ||
                        (*q == 0 && nul_error))
                        break;
                    bits |= e->special[*q];
                }
                if (q != NULL && q - p <= field_limit) {
                    VALUE(p, q - p, bits, end - p);
                    next = q;
                    goto value_done;
                }
            }
        }
        int bits = 0;
        if (c == '"') {
            Buf *field = &e->field; /* empty between values */
            value = p + 1;
            next = fast_scan(e, &v, 1, value, end, &bits);
            while (next != NULL && *next == '"' && end - next > 2 && next[1] == '"' &&
                   field->len + (next - value) <= field_limit) {
                /* a doubled quote: the value is put together in e->field */
                if (buf_add(field, (const char *)value, next + 1 - value) < 0) goto failed;
                bits |= e->special['"'];
                value = next + 2;
                next = fast_scan(e, &v, 1, value, end, &bits);
            }
            /* the closing quote, then ',', \n or \r\n */
            if (next == NULL || *next != '"' || field->len + (next - value) > field_limit ||
                end - next < 2 ||
                !(next[1] == ',' || next[1] == '\n' ||
                  (next[1] == '\r' && end - next > 2 && next[2] == '\n'))) {
                /* parse reads it: a quoted value goes on */
                field->len = 0;
                p++;
                state = IN_QUOTED;
                line = 1;
                break;
            }
            if (field->len) {
                if (buf_add(field, (const char *)value, next - value) < 0) goto failed;
                VALUE((const unsigned char *)field->data, field->len, bits, 0);
                field->len = 0;
            } else {
                VALUE(value, next - value, bits, end - value);
            }
            next++;
        } else if (c == ',' ||
                   (state == START_FIELD &&
                    (c == '\n' || (c == '\r' && end - p > 1 && p[1] == '\n')))) {
            /* an empty value (the last of its record if a line ending follows) */
            next = p;
            VALUE(p, 0, 0, end - p);
        } else if (c == '\r' || c == '\n' || (c == 0 && nul_error)) {
            break; /* an empty line, a lone \r or NUL: parse's work */
        } else {
            next = fast_scan(e, &v, 0, p, end, &bits);
            if (next == NULL || next - p > field_limit) break;
            VALUE(p, next - p, bits, end - p);
        }
    value_done:
        line = 1;
        if (*next == ',') {
            p = next + 1;
            state = START_FIELD;
            continue;
        }
        if (*next == '\n') {
            p = next + 1;
        } else if (*next == '\r' && end - next > 1 && next[1] == '\n') {
            p = next + 2;
        } else { /* a lone \r, or NUL: the value is saved, parse reads the rest */
            p = next;
            state = EAT_CRNL;
            break;
        }
        /* the end of the record: end_record (no header or columns) and its output */
        records++;
        ROOM(0);
        if (quoting == Q_MINIMAL && n_written == 1 && empty_bare) {
            PUT(quote, quote_len);
            PUT(quote, quote_len);
        }
        n_written = 0;
        PUT(row_sep, row_len);
        state = START_RECORD;
        line = 0;
    }
    SYNC();
    e->records += records;
    e->n_fields = 0;
    e->state = state;
    e->line_has_chars = line;
    return p;
failed:
    e->records += records;
    return NULL;
#undef LOAD
#undef SYNC
#undef ROOM
#undef PUT
#undef VALUE
}

/* fast_body made for the common dialects (the quoting rule a constant there); not
   inlined into parse, so that each keeps its registers to itself. */
static __attribute__((noinline)) const unsigned char *fast_fields(Engine *e, const unsigned char *p,
                                                                  const unsigned char *end,
                                                                  int gil_ok) {
    if (e->col_sep.len == 1 && e->quote.len == 1) {
        if (e->quoting == Q_MINIMAL) return fast_body(e, p, end, gil_ok, Q_MINIMAL, 1);
        if (e->quoting == Q_GEM) return fast_body(e, p, end, gil_ok, Q_GEM, 1);
    }
    return fast_body(e, p, end, gil_ok, e->quoting, 0);
}
#endif

/* --- the state machine (csv.reader's, strict, excel dialect) ---------------------- */

/* The end of a line as csv.reader sees it: after \n, after \r\n, after a \r that
   no \n follows, and after a last line without a line ending. */
static int eol(Engine *e, int gil_ok) {
    e->line_has_chars = 0;
    switch (e->state) {
    case START_RECORD:
        return 0;
    case START_FIELD:
    case IN_FIELD:
    case QUOTE_IN_QUOTED:
        if (save_field(e, gil_ok) < 0) return -1;
        /* fall through */
    case EAT_CRNL:
        e->state = START_RECORD;
        return end_record(e, gil_ok);
    default: /* IN_QUOTED: the value goes on on the next line */
        return 0;
    }
}

static int newline_char(Engine *e, unsigned char c, int gil_ok) {
    e->line_has_chars = 1;
    switch (e->state) {
    case START_RECORD:
        e->state = EAT_CRNL;
        break;
    case START_FIELD:
    case IN_FIELD:
    case QUOTE_IN_QUOTED:
        if (save_field(e, gil_ok) < 0) return -1;
        e->state = EAT_CRNL;
        break;
    case IN_QUOTED:
        if (buf_byte(&e->field, (char)c) < 0) return -1;
        break;
    default: /* EAT_CRNL */
        break;
    }
    return 0;
}

static int parse(Engine *e, const unsigned char *p, Py_ssize_t n, int gil_ok) {
    const unsigned char *end = p + n;
    const unsigned char nul = e->nul_error ? 0 : '\n';  /* a 4th stop byte, or \n again */
    while (p < end) {
        unsigned char c = *p;
        if (e->pending_cr) {
            e->pending_cr = 0;
            if (c != '\n' && eol(e, gil_ok) < 0) return -1;
        }
        if (c == '\n' || c == '\r') {
            if (newline_char(e, c, gil_ok) < 0) return -1;
            p++;
            if (c == '\n') {
                if (eol(e, gil_ok) < 0) return -1;
            } else {
                e->pending_cr = 1;
            }
            continue;
        }
        if (c == 0 && e->nul_error) {
            e->error = E_NUL;
            return -1;
        }
        e->line_has_chars = 1;
        switch (e->state) {
        case START_RECORD:
        case START_FIELD:
#ifdef HAVE_SSE2
            if (e->fast) {
                const unsigned char *q = fast_fields(e, p, end, gil_ok);
                if (q == NULL) return -1;
                if (q != p) {
                    p = q;
                    continue;
                }
            }
#endif
            if (c == '"') {
                e->state = IN_QUOTED;
                p++;
                continue;
            }
            if (c == ',') {
                if (save_field(e, gil_ok) < 0) return -1;
                e->state = START_FIELD;
                p++;
                continue;
            }
            e->state = IN_FIELD;
            /* fall through */
        case IN_FIELD: {
            const unsigned char *run = p;
            p = scan4(p, end, ',', '\r', '\n', nul);
            if (p < end && e->field.len == 0 && p - run <= e->field_limit) {
                /* the whole value is here: no copy */
                if (save_value(e, (const char *)run, p - run, gil_ok) < 0) return -1;
                if (*p == ',') {
                    e->state = START_FIELD;
                    p++;
                } else {
                    e->state = EAT_CRNL;  /* the field is saved; the newline comes next */
                }
                continue;
            }
            if (buf_add(&e->field, (const char *)run, p - run) < 0) return -1;
            if (p < end && *p == ',') {
                if (save_field(e, gil_ok) < 0) return -1;
                e->state = START_FIELD;
                p++;
            }
            continue;
        }
        case IN_QUOTED: {
            const unsigned char *run = p;
            p = scan4(p, end, '"', '\r', '\n', nul);
            if (buf_add(&e->field, (const char *)run, p - run) < 0) return -1;
            if (p < end && *p == '"') {
                e->state = QUOTE_IN_QUOTED;
                p++;
            }
            continue;
        }
        case QUOTE_IN_QUOTED:
            if (c == '"') {
                if (buf_byte(&e->field, '"') < 0) return -1;
                e->state = IN_QUOTED;
            } else if (c == ',') {
                if (save_field(e, gil_ok) < 0) return -1;
                e->state = START_FIELD;
            } else {
                e->error = E_QUOTE;
                return -1;
            }
            p++;
            continue;
        default: /* EAT_CRNL: only a \n can follow a \r here, handled above */
            e->error = E_QUOTE;
            return -1;
        }
    }
    return 0;
}

/* --- the Python type -------------------------------------------------------------- */

static int raise_error(Engine *e) {
    static const char *kinds[] = {"", "utf8", "quote", "eof", "line", "field", "nul",
                                  "unwritable", "python"};
    if (PyErr_Occurred()) {
        /* the hook's or the header plan's exception goes to the caller as it is */
        e->error = E_PYTHON;
        return -1;
    }
    if (e->error == E_NONE || e->error == E_PYTHON) {
        e->error = E_PYTHON;
        PyErr_NoMemory();
        return -1;
    }
    PyErr_SetString(EngineError, kinds[e->error]);
    return -1;
}

static PyObject *take_output(Engine *e) {
    PyObject *bytes = PyBytes_FromStringAndSize(e->out.data ? e->out.data : "", e->out.len);
    e->out.len = 0;
    if (e->out.cap > 4 * 1024 * 1024 && e->out.cap > 4 * e->field.cap) {
        buf_free(&e->out);  /* one huge block does not keep its memory */
    }
    return bytes;
}

#define CHECK_EVERY 8192

/* Bytes since the last line break, checked where the reference checks them: at every
   multiple of 8 KiB into the file (it reads in chunks of that size) and at the end. */
static int check_lines(Engine *e, const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t start = e->position, pos = start, since = e->since_break;
    Py_ssize_t checkpoint = (start / CHECK_EVERY + 1) * CHECK_EVERY;
    for (;; checkpoint += CHECK_EVERY) {
        Py_ssize_t stop = checkpoint < start + n ? checkpoint : start + n;
        Py_ssize_t i = stop - start - 1, low = pos - start;
        while (i >= low && p[i] != '\n' && p[i] != '\r') i--;
        since = i < low ? since + (stop - pos) : stop - start - i - 1;
        pos = stop;
        if (since > e->line_limit && stop == checkpoint) {
            e->error = E_LINE;
            return -1;
        }
        if (stop == start + n) break;
    }
    e->since_break = since;
    e->position = start + n;
    return 0;
}

static PyObject *Engine_feed(Engine *e, PyObject *args) {
    PyObject *arg;
    char *data;
    Py_ssize_t n, size = -1;
    if (!PyArg_ParseTuple(args, "O|n:feed", &arg, &size)) return NULL;
    if (e->error) {
        PyErr_SetString(EngineError, "the engine already failed");
        return NULL;
    }
    if (PyByteArray_Check(arg)) {
        /* a buffer the caller reads into again and again: no new object per block */
        data = PyByteArray_AsString(arg);
        n = PyByteArray_Size(arg);
    } else if (PyBytes_AsStringAndSize(arg, &data, &n) < 0) {
        return NULL;
    }
    if (size >= 0) {
        if (size > n) {
            PyErr_SetString(PyExc_ValueError, "feed: size beyond the block");
            return NULL;
        }
        n = size;
    }
    Py_INCREF(arg);
    const unsigned char *p = (const unsigned char *)data;
    int gil_ok = e->hook == NULL;
    int rc;
    gil_drop(e, gil_ok);
    rc = validate_utf8(e, p, n);
    if (rc < 0) e->error = E_UTF8;
    else rc = parse(e, p, n, gil_ok);
    if (rc == 0) rc = check_lines(e, p, n);
    if (rc == 0 && e->state == IN_QUOTED) rc = check_field_limit(e);
    gil_take(e);
    Py_DECREF(arg);
    if (rc < 0) return raise_error(e), NULL;
    return take_output(e);
}

static PyObject *Engine_finish(Engine *e, PyObject *unused) {
    int rc = 0;
    if (e->error) {
        PyErr_SetString(EngineError, "the engine already failed");
        return NULL;
    }
    if (e->utf8_carry_len) {
        e->error = E_UTF8;
        rc = -1;
    }
    if (rc == 0 && e->since_break > e->line_limit) {
        e->error = E_LINE;
        rc = -1;
    }
    if (rc == 0 && (e->pending_cr || e->line_has_chars)) {
        e->pending_cr = 0;
        rc = eol(e, 0);
    }
    if (rc == 0 && e->state == IN_QUOTED) {
        e->error = check_field_limit(e) < 0 ? E_FIELD : E_EOF;
        rc = -1;
    }
    if (rc < 0) return raise_error(e), NULL;
    return take_output(e);
}

static PyObject *Engine_skip(Engine *e, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    e->position += n;
    Py_RETURN_NONE;
}

static PyObject *Engine_records(Engine *e, void *closure) {
    return PyLong_FromLongLong(e->records);
}

static int set_text(Buf *b, PyObject *text) {
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
    if (utf8 == NULL) return -1;
    b->len = 0;
    if (buf_reserve(b, len + 1) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return buf_add(b, utf8, len);
}

/* Marks the characters of text as special (bit 1; bit 2 unless it is the quote). */
static int add_special(Engine *e, PyObject *text, int is_quote) {
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
    if (utf8 == NULL) return -1;
    for (Py_ssize_t i = 0; i < len;) {
        unsigned char c = (unsigned char)utf8[i];
        int seq = utf8_sequence((const unsigned char *)utf8 + i, len - i);
        if (seq <= 0) seq = 1;
        if (c < 0x80) {
            e->special[c] |= is_quote ? 1 : 3;
        } else if (!is_quote || !e->quote_ascii) {
            if (buf_add(&e->wide_special, utf8 + i, seq) < 0 || buf_byte(&e->wide_special, 0) < 0)
                return PyErr_NoMemory(), -1;
            e->n_wide_special++;
        }
        i += seq;
    }
    return 0;
}

static int Engine_init(Engine *e, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"col_sep", "row_sep", "quote_char", "quoting", "replace_newlines",
                            "value_hook", "is_number", "header_hook", "strip_formula_guard",
                            "field_limit", "line_limit", "nul_error", NULL};
    PyObject *col_sep, *row_sep, *quote, *repl, *hook, *number, *header;
    int quoting, strip, nul_error;
    Py_ssize_t field_limit, line_limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UUUiOOOOpnnp", names, &col_sep, &row_sep,
                                     &quote, &quoting, &repl, &hook, &number, &header, &strip,
                                     &field_limit, &line_limit, &nul_error))
        return -1;
    if (set_text(&e->col_sep, col_sep) < 0 || set_text(&e->row_sep, row_sep) < 0 ||
        set_text(&e->quote, quote) < 0)
        return -1;
    e->quote_ascii = e->quote.len == 1;
    e->doubled_quote.len = 0;
    if (buf_add(&e->doubled_quote, e->quote.data, e->quote.len) < 0 ||
        buf_add(&e->doubled_quote, e->quote.data, e->quote.len) < 0)
        return PyErr_NoMemory(), -1;
    e->quoting = quoting;
    e->has_repl = repl != Py_None;
    if (e->has_repl) {
        if (set_text(&e->repl, repl) < 0) return -1;
        /* \r\n becomes the replacement with each of its \n replaced too */
        e->repl_crlf.len = 0;
        for (Py_ssize_t i = 0; i < e->repl.len; i++) {
            int rc = e->repl.data[i] == '\n' ? buf_add(&e->repl_crlf, e->repl.data, e->repl.len)
                                             : buf_byte(&e->repl_crlf, e->repl.data[i]);
            if (rc < 0) return PyErr_NoMemory(), -1;
        }
    }
    memset(e->special, 0, sizeof e->special);
    memset(e->special + 128, 4, 128);
    e->special['\r'] = e->special['\n'] = 3;
    if (add_special(e, quote, 1) < 0 || add_special(e, col_sep, 0) < 0) return -1;
    if (quoting != Q_GEM && add_special(e, row_sep, 0) < 0) return -1;
    e->n_special_list = 0;
    for (int c = 0; c < 128; c++) {
        if (e->special[c] & 2) {
            if (e->n_special_list == (int)sizeof e->special_list) {
                e->n_special_list = -1;
                break;
            }
            e->special_list[e->n_special_list++] = (unsigned char)c;
        }
    }
    int n_fast = 0;
    memset(e->fast_special, '\n', sizeof e->fast_special);
    for (int k = 0; k < e->n_special_list; k++) {
        unsigned char c = e->special_list[k];
        if (c == '\r' || c == '\n') continue;
        if (n_fast == (int)sizeof e->fast_special) {
            n_fast = -1;
            break;
        }
        e->fast_special[n_fast++] = c;
    }
    e->fast_quote = e->quote_ascii ? (unsigned char)e->quote.data[0] : '\n';
    e->fast_ready = e->n_special_list >= 0 && n_fast >= 0;
    if (e->hook || e->is_number || e->header_hook) {
        PyErr_SetString(PyExc_TypeError, "an Engine is initialised once");
        return -1;
    }
    if (hook != Py_None) e->hook = (Py_INCREF(hook), hook);
    e->is_number = (Py_INCREF(number), number);
    if (header != Py_None) e->header_hook = (Py_INCREF(header), header);
    e->header_pending = e->capturing = e->header_hook != NULL;
    e->strip_guard = strip;
    e->field_limit = field_limit;
    e->line_limit = line_limit;
    e->nul_error = nul_error;
    e->state = START_RECORD;
    fast_update(e);
    return 0;
}

static void Engine_dealloc(Engine *e) {
    buf_free(&e->col_sep);
    buf_free(&e->row_sep);
    buf_free(&e->quote);
    buf_free(&e->doubled_quote);
    buf_free(&e->repl);
    buf_free(&e->repl_crlf);
    buf_free(&e->wide_special);
    buf_free(&e->field);
    buf_free(&e->record);
    buf_free(&e->replaced);
    buf_free(&e->out);
    free(e->select);
    free(e->offsets);
    free(e->lengths);
    Py_XDECREF(e->hook);
    Py_XDECREF(e->is_number);
    Py_XDECREF(e->header_hook);
    PyTypeObject *type = Py_TYPE(e);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(e);
    Py_DECREF(type);
}

static PyMethodDef Engine_methods[] = {
    {"feed", (PyCFunction)Engine_feed, METH_VARARGS,
     "feed(block[, size]) -> bytes: the output for the records completed by this block "
     "(bytes or bytearray; its first size bytes if given)."},
    {"finish", (PyCFunction)Engine_finish, METH_NOARGS,
     "finish() -> bytes: the output of the last record; raises Error for a malformed end."},
    {"skip", (PyCFunction)Engine_skip, METH_O,
     "skip(n): n bytes of the file (a byte-order mark) are not fed but count for "
     "the line limit."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"records", (getter)Engine_records, NULL, "records read so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Engine_slots[] = {
    {Py_tp_doc, "Engine(col_sep, row_sep, quote_char, quoting, replace_newlines, value_hook, "
                "is_number, header_hook, strip_formula_guard, field_limit, line_limit, "
                "nul_error): rewrites CSV blocks."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, Engine_init},
    {Py_tp_dealloc, Engine_dealloc},
    {Py_tp_methods, Engine_methods},
    {Py_tp_getset, Engine_getset},
    {0, NULL},
};

static PyType_Spec Engine_spec = {
    "exportmon.files._csvengine.Engine", sizeof(Engine), 0, Py_TPFLAGS_DEFAULT, Engine_slots,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_csvengine", "The compiled CSV rewrite engine.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__csvengine(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *type = PyType_FromSpec(&Engine_spec);
    if (type == NULL || PyModule_AddObject(m, "Engine", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
    EngineError = PyErr_NewException("exportmon.files._csvengine.Error", NULL, NULL);
    if (EngineError == NULL || PyModule_AddObject(m, "Error", EngineError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(EngineError);
    if (PyModule_AddIntConstant(m, "MINIMAL", Q_MINIMAL) < 0 ||
        PyModule_AddIntConstant(m, "ALL", Q_ALL) < 0 ||
        PyModule_AddIntConstant(m, "NONNUMERIC", Q_NONNUMERIC) < 0 ||
        PyModule_AddIntConstant(m, "NONE", Q_NONE) < 0 ||
        PyModule_AddIntConstant(m, "GEM", Q_GEM) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
