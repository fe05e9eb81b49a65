/* The safety layer's per-cycle arithmetic in one pass per stage: observation checks,
 * interlock bounds and the action shield (edgewarden/gateway/safety/{checker,interlocks,shield}.py).
 *
 * Plain CPython API and the buffer protocol: no numpy headers at build time. Each kernel
 * object is built once from the compiled spec's numpy arrays; it validates and holds their
 * buffers (type, 1-D, C-contiguous, writable where it writes, length) so a wrongly typed
 * or sized array is refused at construction with a clear error, never read past its end.
 * The arrays that come with each call (the snapshot, the proposal, ...) are validated
 * once per distinct object and their buffers kept until another object comes.
 *
 * Semantics are those of the numpy code beside it, rule for rule: same order, the first
 * offending index, the same state updates on early returns, IEEE comparisons that are
 * false for NaN, and numpy's maximum/minimum (NaN-propagating). Results are small ints
 * (0 = nothing to say); Python composes reason strings only when something is wrong.
 * Build with -ffp-contract=off (setup.py): a fused multiply-add would round
 * last ± rate·dt differently from numpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- buffers ----------------------------------------------------------------------- */

enum kind { F64, U8, BOOL, INTP, I64 };
static const char *const kind_name[] = {"float64", "uint8", "bool", "intp", "int64"};

/* one array a kernel holds: keyword name, element kind, writable, length (a dimension
 * index 0..2 shared with other arrays, or -N for exactly N elements) */
typedef struct {
    const char *name;
    int kind;
    int writable;
    int dim;
} Spec;

#define MAX_BUFS 20
#define MAX_ARGS 5

static int
format_ok(const Py_buffer *v, int kind)
{
    const char *f = v->format ? v->format : "B";
    const int little = (*(const char *)&(uint16_t){1}) == 1;
    if (*f == '@' || *f == '=' || (*f == '<' && little) || ((*f == '>' || *f == '!') && !little))
        f++;
    if (f[0] == '\0' || f[1] != '\0')
        return 0;
    switch (kind) {
    case F64: return f[0] == 'd' && v->itemsize == 8;
    case U8: return f[0] == 'B' && v->itemsize == 1;
    case BOOL: return f[0] == '?' && v->itemsize == 1;
    case INTP: return strchr("nlq", f[0]) != NULL && v->itemsize == (Py_ssize_t)sizeof(Py_ssize_t);
    case I64: return strchr("lq", f[0]) != NULL && v->itemsize == 8;
    }
    return 0;
}

/* Acquire ``obj``'s buffer as a 1-D C-contiguous array of ``kind``; length ``n`` unless n < 0. */
static int
acquire(PyObject *obj, Py_buffer *v, const char *name, int kind, int writable, Py_ssize_t n)
{
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, v, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "safety kernel: %s must be a 1-D C-contiguous %s%s array, got %.100s",
                     name, writable ? "writable " : "", kind_name[kind], Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (v->ndim != 1 || !format_ok(v, kind)) {
        PyErr_Format(PyExc_TypeError,
                     "safety kernel: %s must be a 1-D %s array, got %d-D of format '%s' (itemsize %zd)",
                     name, kind_name[kind], v->ndim, v->format ? v->format : "B", v->itemsize);
        PyBuffer_Release(v);
        return -1;
    }
    if (n >= 0 && v->shape[0] != n) {
        PyErr_Format(PyExc_ValueError, "safety kernel: %s must have %zd elements, got %zd",
                     name, n, v->shape[0]);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* An array passed with each call: re-validated only when a different object comes. */
typedef struct {
    PyObject *obj;
    Py_buffer v;
} Arg;

/* The arrays of one kernel, taken from the constructor's keyword arguments by ``specs``. */
typedef struct {
    Py_buffer b[MAX_BUFS];
    int held;
    Py_ssize_t dims[3];
    Arg arg[MAX_ARGS]; /* the arrays passed with each call */
} Held;

static void arg_release(Arg *a);

static void
held_release(Held *h)
{
    while (h->held > 0)
        PyBuffer_Release(&h->b[--h->held]);
    for (int k = 0; k < MAX_ARGS; k++)
        arg_release(&h->arg[k]);
}

/* every kernel object starts with its arrays; one dealloc serves all three types */
typedef struct {
    PyObject_HEAD
    Held h;
} Kernel;

static void
kernel_dealloc(Kernel *self)
{
    held_release(&self->h);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int held_acquire(Held *h, const Spec *specs, int count, PyObject *args, PyObject *kwds, const char *type);

/* a new kernel object holding the arrays ``specs`` names, or NULL with the error set */
static void *
kernel_alloc(PyTypeObject *type, const Spec *specs, int count, PyObject *args, PyObject *kwds)
{
    Kernel *self = (Kernel *)type->tp_alloc(type, 0);
    const char *name = strrchr(type->tp_name, '.') + 1;
    if (self != NULL && held_acquire(&self->h, specs, count, args, kwds, name) < 0)
        Py_CLEAR(self);
    return self;
}

static int
held_acquire(Held *h, const Spec *specs, int count, PyObject *args, PyObject *kwds, const char *type)
{
    h->dims[0] = h->dims[1] = h->dims[2] = -1;
    if (PyTuple_GET_SIZE(args) != 0 || kwds == NULL || PyDict_GET_SIZE(kwds) != count) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %d keyword arguments", type, count);
        return -1;
    }
    for (int k = 0; k < count; k++) {
        const Spec *s = &specs[k];
        PyObject *obj = PyDict_GetItemString(kwds, s->name);
        if (obj == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing keyword argument %s", type, s->name);
            return -1;
        }
        Py_ssize_t want = s->dim < 0 ? -s->dim : h->dims[s->dim];
        if (acquire(obj, &h->b[k], s->name, s->kind, s->writable, want) < 0)
            return -1;
        h->held++;
        if (s->dim >= 0)
            h->dims[s->dim] = h->b[k].shape[0];
    }
    return 0;
}

static inline int
arg_take(Arg *a, PyObject *obj, const char *name, int kind, int writable, Py_ssize_t n)
{
    if (obj == a->obj)
        return 0;
    Py_buffer v;
    if (acquire(obj, &v, name, kind, writable, n) < 0)
        return -1;
    if (a->obj != NULL) {
        PyBuffer_Release(&a->v);
        Py_DECREF(a->obj);
    }
    Py_INCREF(obj);
    a->obj = obj;
    a->v = v;
    return 0;
}

static void
arg_release(Arg *a)
{
    if (a->obj != NULL) {
        PyBuffer_Release(&a->v);
        Py_CLEAR(a->obj);
    }
}

#define F(h, k) ((double *)(h).b[k].buf)

static int
as_double(PyObject *o, double *out)
{
    *out = PyFloat_CheckExact(o) ? PyFloat_AS_DOUBLE(o) : PyFloat_AsDouble(o);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* numpy's maximum/minimum, to the bit: NaN if either is NaN, else the larger (smaller);
 * a tie (0.0 and -0.0) gives b */
static inline double
np_max(double a, double b)
{
    const double m = a > b ? a : b; /* one maxsd, no branch on the data */
    return isnan(a) ? a : m;
}

static inline double
np_min(double a, double b)
{
    const double m = a < b ? a : b;
    return isnan(a) ? a : m;
}

/* ---- observation checks ------------------------------------------------------------- */

enum { C_RANGE_LO, C_RANGE_HI, C_HARD_LO, C_HARD_HI, C_SOFT_LO, C_SOFT_HI, C_STALE_S, C_FREEZE_S,
       C_MAX_RATE, C_SLOTS, C_V, C_Q, C_TS, C_LAST_V, C_LAST_CHANGE, C_PREV_V, C_RATE, C_STATE, C_COUNT };

static const Spec checker_specs[C_COUNT] = {
    {"range_lo", F64, 0, 0}, {"range_hi", F64, 0, 0}, {"hard_lo", F64, 0, 0}, {"hard_hi", F64, 0, 0},
    {"soft_lo", F64, 0, 0}, {"soft_hi", F64, 0, 0}, {"stale_s", F64, 0, 0}, {"freeze_s", F64, 0, 0},
    {"max_rate", F64, 0, 0}, {"slots", INTP, 0, 0}, {"values", F64, 1, 0}, {"quality", U8, 1, 0},
    {"recv_mono", F64, 1, 0}, {"last_value", F64, 1, 0}, {"last_change", F64, 1, 0}, {"prev_v", F64, 1, 0},
    {"rate", F64, 1, 0},
    {"state", F64, 1, -2},
};

/* rule codes, as checker.py decodes them: rule + 16 * index */
enum { RULE_OK, RULE_QUALITY, RULE_BAD_VALUE, RULE_STALE, RULE_FROZEN, RULE_RATE, RULE_ESTOP, RULE_HARD,
       RULE_SOFT };

typedef struct {
    PyObject_HEAD
    Held h;
    Py_ssize_t n, estop;
} Checker;

enum { A_VALUES, A_QUALITY, A_RECV_MONO };

static PyObject *
checker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *estop_obj = kwds ? PyDict_GetItemString(kwds, "estop_index") : NULL;
    if (estop_obj == NULL) {
        PyErr_SetString(PyExc_TypeError, "Checker() missing keyword argument estop_index");
        return NULL;
    }
    Py_ssize_t estop = PyNumber_AsSsize_t(estop_obj, PyExc_OverflowError);
    if (estop == -1 && PyErr_Occurred())
        return NULL;
    PyObject *arrays = PyDict_Copy(kwds);
    if (arrays == NULL || PyDict_DelItemString(arrays, "estop_index") < 0) {
        Py_XDECREF(arrays);
        return NULL;
    }
    Checker *self = kernel_alloc(type, checker_specs, C_COUNT, args, arrays);
    Py_DECREF(arrays);
    if (self == NULL)
        return NULL;
    self->n = self->h.dims[0];
    if (estop < -1 || estop >= self->n) {
        PyErr_Format(PyExc_ValueError, "safety kernel: estop_index %zd outside [-1, %zd)", estop, self->n);
        Py_DECREF(self);
        return NULL;
    }
    self->estop = estop;
    return (PyObject *)self;
}

static inline Py_ssize_t
clip(Py_ssize_t i, Py_ssize_t len)
{
    return i < 0 ? 0 : i >= len ? len - 1 : i;
}

#define RETURN_RULE(rule, i) return PyLong_FromSsize_t((rule) + 16 * (i))

/* check(values, quality, recv_mono, now) -> 0, or rule + 16 * index of the first offender */
static PyObject *
checker_check(Checker *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "check(values, quality, recv_mono, now) takes 4 arguments");
        return NULL;
    }
    double now;
    Arg *a = self->h.arg;
    if (arg_take(&a[A_VALUES], args[0], "snapshot values", F64, 0, -1) < 0
        || arg_take(&a[A_QUALITY], args[1], "snapshot quality", U8, 0, -1) < 0
        || arg_take(&a[A_RECV_MONO], args[2], "snapshot recv_mono", F64, 0, -1) < 0
        || as_double(args[3], &now) < 0)
        return NULL;
    const Py_ssize_t n = self->n;
    const Py_ssize_t nv = a[A_VALUES].v.shape[0], nq = a[A_QUALITY].v.shape[0],
                     nt = a[A_RECV_MONO].v.shape[0];
    if (n > 0 && (nv == 0 || nq == 0 || nt == 0)) {
        PyErr_SetString(PyExc_IndexError, "cannot do a non-empty take from an empty axes.");
        return NULL;
    }
    const double *sv = a[A_VALUES].v.buf, *sts = a[A_RECV_MONO].v.buf;
    const uint8_t *sq = a[A_QUALITY].v.buf;
    Held *h = &self->h;
    const Py_ssize_t *slots = h->b[C_SLOTS].buf;
    double *v = F(*h, C_V), *ts = F(*h, C_TS), *last_v = F(*h, C_LAST_V);
    double *last_change = F(*h, C_LAST_CHANGE), *prev_v = F(*h, C_PREV_V), *rate = F(*h, C_RATE);
    double *state = F(*h, C_STATE);
    uint8_t *q = h->b[C_Q].buf;
    Py_ssize_t first_q = -1, first_range = -1;
    const double *rlo = F(*h, C_RANGE_LO), *rhi = F(*h, C_RANGE_HI);

    /* gather; frozen-value bookkeeping (before any return); quality and valid range */
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_ssize_t s = slots[i];
        const double x = sv[clip(s, nv)], t = sts[clip(s, nt)];
        v[i] = x;
        q[i] = sq[clip(s, nq)];
        ts[i] = t;
        if (x != last_v[i]) {
            last_change[i] = now;
            last_v[i] = x;
        }
        if (q[i] != 0 && first_q < 0)
            first_q = i;
        if (!(x >= rlo[i] && x <= rhi[i]) && first_range < 0)
            first_range = i;
    }
    if (first_q >= 0)
        RETURN_RULE(RULE_QUALITY, first_q);
    if (first_range >= 0)
        RETURN_RULE(RULE_BAD_VALUE, first_range);
    /* stale: no fresh sample from the link (received) for stale_s; frozen: the value has
     * not changed for freeze_s (a separate, optional check) */
    const double *stale_s = F(*h, C_STALE_S), *freeze_s = F(*h, C_FREEZE_S);
    for (Py_ssize_t i = 0; i < n; i++)
        if (now - ts[i] > stale_s[i])
            RETURN_RULE(RULE_STALE, i);
    for (Py_ssize_t i = 0; i < n; i++)
        if (now - last_change[i] > freeze_s[i])
            RETURN_RULE(RULE_FROZEN, i);
    /* rate of change against the previous good reading; it becomes this one */
    const double dt = now - state[0];
    const double *max_rate = F(*h, C_MAX_RATE);
    Py_ssize_t first_rate = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        rate[i] = fabs(v[i] - prev_v[i]);
        prev_v[i] = v[i];
        if (dt > 0 && first_rate < 0 && rate[i] > max_rate[i] * dt)
            first_rate = i;
    }
    state[0] = now;
    state[1] = dt;
    if (first_rate >= 0)
        RETURN_RULE(RULE_RATE, first_rate);
    if (self->estop >= 0 && v[self->estop] != 0.0)
        RETURN_RULE(RULE_ESTOP, self->estop);
    const double *hlo = F(*h, C_HARD_LO), *hhi = F(*h, C_HARD_HI);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(v[i] >= hlo[i] && v[i] <= hhi[i]))
            RETURN_RULE(RULE_HARD, i);
    const double *slo = F(*h, C_SOFT_LO), *shi = F(*h, C_SOFT_HI);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(v[i] >= slo[i] && v[i] <= shi[i]))
            RETURN_RULE(RULE_SOFT, i);
    return PyLong_FromLong(RULE_OK);
}

/* ---- interlocks --------------------------------------------------------------------- */

enum { I_BASE_LO, I_BASE_HI, I_LO, I_HI, I_ACTIVE, I_ACTION, I_UPPER, I_LIMIT,
       I_SLOT, I_OP, I_VALUE, I_OWNER, I_COUNT };

static const Spec interlock_specs[I_COUNT] = {
    {"base_lo", F64, 0, 0}, {"base_hi", F64, 0, 0}, {"lo", F64, 1, 0}, {"hi", F64, 1, 0},
    {"active", BOOL, 1, 1}, {"action", INTP, 0, 1}, {"upper", BOOL, 0, 1}, {"limit", F64, 0, 1},
    {"clause_slot", INTP, 0, 2}, {"clause_op", U8, 0, 2}, {"clause_value", F64, 0, 2},
    {"clause_owner", INTP, 0, 2},
};

typedef struct {
    PyObject_HEAD
    Held h;
    Py_ssize_t n_act, n_il, n_clause, min_monitored;
} InterlockKernel;

static int
check_indices(const Py_buffer *b, const char *name, Py_ssize_t bound, Py_ssize_t *max_seen)
{
    const Py_ssize_t *x = b->buf;
    for (Py_ssize_t i = 0; i < b->shape[0]; i++) {
        if (x[i] < 0 || (bound >= 0 && x[i] >= bound)) {
            if (bound >= 0)
                PyErr_Format(PyExc_ValueError, "safety kernel: %s[%zd] = %zd is outside [0, %zd)", name, i,
                             x[i], bound);
            else
                PyErr_Format(PyExc_ValueError, "safety kernel: %s[%zd] = %zd is negative", name, i, x[i]);
            return -1;
        }
        if (max_seen != NULL && x[i] + 1 > *max_seen)
            *max_seen = x[i] + 1;
    }
    return 0;
}

static PyObject *
interlocks_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    InterlockKernel *self = kernel_alloc(type, interlock_specs, I_COUNT, args, kwds);
    if (self == NULL)
        return NULL;
    Held *h = &self->h;
    self->n_act = h->dims[0];
    self->n_il = h->dims[1];
    self->n_clause = h->dims[2];
    self->min_monitored = 0;
    const uint8_t *op = h->b[I_OP].buf;
    for (Py_ssize_t c = 0; c < self->n_clause; c++)
        if (op[c] > 3) {
            PyErr_Format(PyExc_ValueError, "safety kernel: clause_op[%zd] = %d is not 0..3", c, op[c]);
            Py_DECREF(self);
            return NULL;
        }
    if (check_indices(&h->b[I_ACTION], "action", self->n_act, NULL) < 0
        || check_indices(&h->b[I_OWNER], "clause_owner", self->n_il, NULL) < 0
        || check_indices(&h->b[I_SLOT], "clause_slot", -1, &self->min_monitored) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* bounds(monitored): lo/hi = base, tightened by every interlock whose clauses all hold */
static PyObject *
interlocks_bounds(InterlockKernel *self, PyObject *monitored)
{
    Arg *m = &self->h.arg[0];
    if (arg_take(m, monitored, "monitored values", F64, 0, -1) < 0)
        return NULL;
    if (m->v.shape[0] < self->min_monitored) {
        PyErr_Format(PyExc_IndexError, "safety kernel: interlocks read monitored value %zd of %zd",
                     self->min_monitored - 1, m->v.shape[0]);
        return NULL;
    }
    Held *h = &self->h;
    double *lo = F(*h, I_LO), *hi = F(*h, I_HI);
    memcpy(lo, h->b[I_BASE_LO].buf, self->n_act * sizeof(double));
    memcpy(hi, h->b[I_BASE_HI].buf, self->n_act * sizeof(double));
    const double *x = m->v.buf, *value = F(*h, I_VALUE), *limit = F(*h, I_LIMIT);
    const Py_ssize_t *slot = h->b[I_SLOT].buf, *owner = h->b[I_OWNER].buf, *action = h->b[I_ACTION].buf;
    const uint8_t *op = h->b[I_OP].buf;
    const _Bool *upper = h->b[I_UPPER].buf;
    _Bool *active = h->b[I_ACTIVE].buf;
    for (Py_ssize_t k = 0; k < self->n_il; k++)
        active[k] = 1;
    for (Py_ssize_t c = 0; c < self->n_clause; c++) {
        const double xc = x[slot[c]], b = value[c];
        const int holds = op[c] == 0 ? xc < b : op[c] == 1 ? xc <= b : op[c] == 2 ? xc > b : xc >= b;
        if (!holds)
            active[owner[c]] = 0;
    }
    for (Py_ssize_t k = 0; k < self->n_il; k++) {
        if (!active[k])
            continue;
        const Py_ssize_t j = action[k];
        if (upper[k]) {
            if (limit[k] < hi[j])
                hi[j] = limit[k];
        }
        else if (limit[k] > lo[j])
            lo[j] = limit[k];
    }
    Py_RETURN_NONE;
}

/* ---- action shield ------------------------------------------------------------------ */

enum { S_RATE, S_INTERVENTIONS, S_LOW, S_HIGH, S_COUNT };

static const Spec shield_specs[S_COUNT] = {
    {"rate", F64, 0, 0}, {"interventions", I64, 1, 0}, {"low", F64, 1, 0}, {"high", F64, 1, 0},
};

typedef struct {
    PyObject_HEAD
    Held h;
    Py_ssize_t n;
} ShieldKernel;

enum { A_PROPOSED, A_LAST, A_OUT, A_LO, A_HI };

static PyObject *
shield_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ShieldKernel *self = kernel_alloc(type, shield_specs, S_COUNT, args, kwds);
    if (self == NULL)
        return NULL;
    self->n = self->h.dims[0];
    return (PyObject *)self;
}

/* apply(proposed, last, dt, out, lo, hi) -> 0 (unchanged), clipped << 32 | rate_limited,
 * or, refused with ``out`` untouched, -(1 + 2 * index + (0 non-finite | 1 conflict)) */
static PyObject *
shield_apply(ShieldKernel *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "apply(proposed, last, dt, out, lo, hi) takes 6 arguments");
        return NULL;
    }
    const Py_ssize_t n = self->n;
    double dt;
    Arg *a = self->h.arg;
    if (arg_take(&a[A_PROPOSED], args[0], "proposed", F64, 0, n) < 0
        || arg_take(&a[A_LAST], args[1], "last", F64, 0, n) < 0 || as_double(args[2], &dt) < 0
        || arg_take(&a[A_OUT], args[3], "out", F64, 1, n) < 0
        || arg_take(&a[A_LO], args[4], "lo", F64, 0, n) < 0 || arg_take(&a[A_HI], args[5], "hi", F64, 0, n) < 0)
        return NULL;
    const double *p = a[A_PROPOSED].v.buf, *last = a[A_LAST].v.buf;
    const double *lo = a[A_LO].v.buf, *hi = a[A_HI].v.buf, *rate = F(self->h, S_RATE);
    double *out = a[A_OUT].v.buf, *low = F(self->h, S_LOW), *high = F(self->h, S_HIGH);
    int64_t *interventions = self->h.b[S_INTERVENTIONS].buf;
    Py_ssize_t first_nonfinite = -1, first_conflict = -1;
    /* non-finite proposals first (any index), then the rate window ∩ bounds per action */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!isfinite(p[i]) && first_nonfinite < 0)
            first_nonfinite = i;
        const double step = isfinite(rate[i]) ? rate[i] * dt : INFINITY; /* no limit, whatever dt */
        low[i] = np_max(last[i] - step, lo[i]);
        high[i] = np_min(last[i] + step, hi[i]);
        if (low[i] > high[i] && first_conflict < 0)
            first_conflict = i;
    }
    if (first_nonfinite >= 0)
        return PyLong_FromSsize_t(-(1 + 2 * first_nonfinite));
    if (first_conflict >= 0)
        return PyLong_FromSsize_t(-(2 + 2 * first_conflict));
    /* clip to the bounds, then to the rate window; count what each step changed */
    long long clipped = 0, rate_limited = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const double bounded = np_min(np_max(p[i], lo[i]), hi[i]);
        const double y = np_min(np_max(bounded, low[i]), high[i]);
        clipped += bounded != p[i];
        rate_limited += y != bounded;
        interventions[i] += y != p[i];
        out[i] = y;
    }
    return PyLong_FromLongLong((clipped << 32) | rate_limited);
}

/* ---- module ------------------------------------------------------------------------- */

static PyMethodDef checker_methods[] = {
    {"check", (PyCFunction)(void (*)(void))checker_check, METH_FASTCALL,
     "check(values, quality, recv_mono, now) -> 0 or rule + 16 * index"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef interlocks_methods[] = {
    {"bounds", (PyCFunction)interlocks_bounds, METH_O, "bounds(monitored) -> None (lo, hi updated)"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef shield_methods[] = {
    {"apply", (PyCFunction)(void (*)(void))shield_apply, METH_FASTCALL,
     "apply(proposed, last, dt, out, lo, hi) -> 0, clipped << 32 | rate_limited, or -(1 + 2 * index + conflict)"},
    {NULL, NULL, 0, NULL},
};

#define KERNEL_TYPE(cname, pyname, doc, methods, newfunc)                                   \
    static PyTypeObject cname##Type = {                                                      \
        PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgewarden.gateway.safety._kernel." pyname,          \
        .tp_basicsize = sizeof(cname),                                                       \
        .tp_flags = Py_TPFLAGS_DEFAULT,                                                      \
        .tp_doc = doc,                                                                       \
        .tp_methods = methods,                                                               \
        .tp_new = newfunc,                                                                   \
        .tp_dealloc = (destructor)kernel_dealloc,                                            \
    }

KERNEL_TYPE(Checker, "Checker", "Observation checks over the compiled spec's arrays (keywords only).",
            checker_methods, checker_new);
KERNEL_TYPE(InterlockKernel, "Interlocks", "Interlock bounds over the compiled spec's arrays (keywords only).",
            interlocks_methods, interlocks_new);
KERNEL_TYPE(ShieldKernel, "Shield", "The action shield over the compiled spec's arrays (keywords only).",
            shield_methods, shield_new);

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_kernel",
    "The safety layer's compiled per-cycle kernels (see edgewarden/gateway/safety/_kernel.c).", -1, NULL,
};

PyMODINIT_FUNC
PyInit__kernel(void)
{
    PyTypeObject *types[] = {&CheckerType, &InterlockKernelType, &ShieldKernelType};
    const char *names[] = {"Checker", "Interlocks", "Shield"};
    PyObject *m = PyModule_Create(&kernel_module);
    if (m == NULL)
        return NULL;
    for (int k = 0; k < 3; k++) {
        if (PyType_Ready(types[k]) < 0 || PyModule_AddObjectRef(m, names[k], (PyObject *)types[k]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
