/* A dense layer's product, row by row: every output row is summed in one order whatever rows share the call.
 *
 * matmul(rows, weights, out, n_inner, n_out)   out[i, c] = sum over j of rows[i, j] * weights[j, c]
 *
 * BLAS kernels (OpenBLAS in numpy's wheels) pick their blocking and their edge kernels by the number of rows,
 * so a row's product can differ in the last bits between a call of 1 row and a call of 207 (measured on an
 * AMD EPYC: a perceptron's forecast moved by up to 1.6e-7 mph). Here out[i, c] starts at 0 and adds
 * rows[i, j] * weights[j, c] for j = 0, 1, ..., one multiplication and one addition at a time (no fused
 * multiply-add: setup.py builds the extension without fast-math and with -ffp-contract=off), so the result
 * depends on row i alone. The compiler may still compute several columns c at once: each column's sum keeps
 * its order. All three arrays are C-ordered and of one type, float32 or float64 (the letter ``kind``: 'f' or
 * 'd'); the GIL is released while they are multiplied. Built by setup.py (``ml._row_matmul``).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Four rows at a time share each weight they read; every output element still starts at 0 and adds its
 * products in the order j = 0, 1, ..., the same in the four-row block and in the rows left over. */
#define ROW_PRODUCT(T, NAME)                                                                                        \
    static void NAME(const T *restrict x, const T *restrict w, T *restrict o, Py_ssize_t n_rows,                  \
                     Py_ssize_t n_inner, Py_ssize_t n_out) {                                                      \
        Py_ssize_t i = 0;                                                                                         \
        for (; i + 4 <= n_rows; i += 4) {                                                                         \
            T *restrict o0 = o + i * n_out, *restrict o1 = o0 + n_out, *restrict o2 = o1 + n_out,                 \
              *restrict o3 = o2 + n_out;                                                                          \
            const T *x0 = x + i * n_inner, *x1 = x0 + n_inner, *x2 = x1 + n_inner, *x3 = x2 + n_inner;            \
            memset(o0, 0, (size_t)(4 * n_out) * sizeof(T));                                                       \
            for (Py_ssize_t j = 0; j < n_inner; j++) {                                                            \
                const T a0 = x0[j], a1 = x1[j], a2 = x2[j], a3 = x3[j];                                           \
                const T *restrict wj = w + j * n_out;                                                             \
                for (Py_ssize_t c = 0; c < n_out; c++) {                                                          \
                    const T v = wj[c];                                                                            \
                    o0[c] += a0 * v;                                                                              \
                    o1[c] += a1 * v;                                                                              \
                    o2[c] += a2 * v;                                                                              \
                    o3[c] += a3 * v;                                                                              \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
        for (; i < n_rows; i++) {                                                                                 \
            const T *row = x + i * n_inner;                                                                       \
            T *restrict acc = o + i * n_out;                                                                      \
            memset(acc, 0, (size_t)n_out * sizeof(T));                                                            \
            for (Py_ssize_t j = 0; j < n_inner; j++) {                                                            \
                const T a = row[j];                                                                               \
                const T *restrict wj = w + j * n_out;                                                             \
                for (Py_ssize_t c = 0; c < n_out; c++) acc[c] += a * wj[c];                                       \
            }                                                                                                     \
        }                                                                                                         \
    }

ROW_PRODUCT(float, product_f)
ROW_PRODUCT(double, product_d)

static PyObject *matmul(PyObject *self, PyObject *args) {
    Py_buffer rows, weights, out;
    Py_ssize_t n_inner, n_out;
    int kind;
    if (!PyArg_ParseTuple(args, "y*y*w*nnC", &rows, &weights, &out, &n_inner, &n_out, &kind)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t item = kind == 'f' ? (Py_ssize_t)sizeof(float) : (Py_ssize_t)sizeof(double);
    if (kind != 'f' && kind != 'd') {
        PyErr_SetString(PyExc_ValueError, "kind is 'f' (float32) or 'd' (float64)");
        goto done;
    }
    if (n_inner < 1 || n_out < 1 || weights.len != item * n_inner * n_out || rows.len % (item * n_inner) != 0
        || out.len != rows.len / n_inner * n_out) {
        PyErr_Format(PyExc_ValueError, "rows (%zd bytes), weights (%zd) and out (%zd) do not fit %zd x %zd weights",
                     rows.len, weights.len, out.len, n_inner, n_out);
        goto done;
    }
    {
        Py_ssize_t n_rows = rows.len / (item * n_inner);
        Py_BEGIN_ALLOW_THREADS
        if (kind == 'f') product_f(rows.buf, weights.buf, out.buf, n_rows, n_inner, n_out);
        else product_d(rows.buf, weights.buf, out.buf, n_rows, n_inner, n_out);
        Py_END_ALLOW_THREADS
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&rows);
    PyBuffer_Release(&weights);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"matmul", matmul, METH_VARARGS, "out = rows @ weights, each row summed in one order (see the module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_row_matmul", "A dense product, row by row.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__row_matmul(void) { return PyModule_Create(&module); }
