/* Every tree of a fitted gradient-boosting model, for a block of rows, in one compiled pass.
 *
 * walk(rows, n_columns, feature, threshold, children, missing_left, value, roots, depths, out)
 *
 * The trees' nodes lie end to end in flat arrays (``ml.compiled_trees.FlatTrees``): a node's split feature,
 * threshold, two children (indices into the same arrays, left then right), which child a missing value
 * takes, and its value. A leaf is its own child on both sides, so a walk of ``depths[t]`` steps (tree t's
 * deepest leaf) from ``roots[t]`` ends at the leaf a row reaches whatever its path's length: the walk has no
 * exit test, and eight rows walk side by side, which keeps the processor busy while a row waits on memory.
 *
 * For every row, the value of the leaf each tree reaches is added to ``out[row]``, tree by tree in the trees'
 * order, so a row's sum is the same float64 sum scikit-learn's ``HistGradientBoostingRegressor._raw_predict``
 * computes: it starts from the baseline in ``out`` and adds one tree at a time. A row goes left when its value
 * is NaN and the node sends missing values left, or when it is at most the threshold, as in scikit-learn's
 * ``_predict_from_raw_data`` for numeric splits. The rows are C-ordered float64; the GIL is released while
 * the trees are walked. Built by setup.py (``ml._tree_walk``), without fast-math, so NaN compares as IEEE 754
 * says. The arrays are checked for size here and for shape (a tree over the rows' columns) by ``FlatTrees``.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define ROW_BLOCK 64 /* rows walked through one tree before the next tree: they stay in the first-level cache */
#define LANES 8      /* rows walked side by side (8 measured fastest of 4, 8, 16 and 32) */

static int sized(const Py_buffer *buffer, Py_ssize_t item, Py_ssize_t count, const char *name) {
    if (buffer->len != item * count) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, expected %zd", name, buffer->len, item * count);
        return 0;
    }
    return 1;
}

static inline int32_t step(const double *row, int32_t node, const int32_t *feature, const double *threshold,
                           const int32_t *children, const uint8_t *missing_left) {
    double x = row[feature[node]];
    int right = isnan(x) ? !missing_left[node] : !(x <= threshold[node]);
    return children[2 * node + right];
}

static PyObject *walk(PyObject *self, PyObject *args) {
    Py_buffer rows, feature, threshold, children, missing_left, value, roots, depths, out;
    Py_ssize_t n_columns;
    if (!PyArg_ParseTuple(args, "y*ny*y*y*y*y*y*y*w*", &rows, &n_columns, &feature, &threshold, &children,
                          &missing_left, &value, &roots, &depths, &out))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n_rows = out.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t n_nodes = feature.len / (Py_ssize_t)sizeof(int32_t);
    Py_ssize_t n_trees = roots.len / (Py_ssize_t)sizeof(int32_t);
    if (n_columns < 1 || !sized(&out, sizeof(double), n_rows, "out")
        || !sized(&rows, sizeof(double), n_rows * n_columns, "rows")
        || !sized(&feature, sizeof(int32_t), n_nodes, "feature")
        || !sized(&threshold, sizeof(double), n_nodes, "threshold")
        || !sized(&children, sizeof(int32_t), 2 * n_nodes, "children")
        || !sized(&missing_left, sizeof(uint8_t), n_nodes, "missing_left")
        || !sized(&value, sizeof(double), n_nodes, "value") || !sized(&depths, sizeof(int32_t), n_trees, "depths"))
        goto done;
    {
        const double *x = rows.buf, *th = threshold.buf, *v = value.buf;
        const int32_t *f = feature.buf, *c = children.buf, *root = roots.buf, *depth = depths.buf;
        const uint8_t *ml = missing_left.buf;
        double *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t start = 0; start < n_rows; start += ROW_BLOCK) {
            Py_ssize_t stop = start + ROW_BLOCK < n_rows ? start + ROW_BLOCK : n_rows;
            for (Py_ssize_t t = 0; t < n_trees; t++) {
                int32_t top = root[t], d = depth[t];
                Py_ssize_t i = start;
                for (; i + LANES <= stop; i += LANES) {
                    int32_t node[LANES];
                    for (int k = 0; k < LANES; k++) node[k] = top;
                    for (int32_t s = 0; s < d; s++)
                        for (int k = 0; k < LANES; k++) node[k] = step(x + (i + k) * n_columns, node[k], f, th, c, ml);
                    for (int k = 0; k < LANES; k++) o[i + k] += v[node[k]];
                }
                for (; i < stop; i++) {
                    int32_t node = top;
                    for (int32_t s = 0; s < d; s++) node = step(x + i * n_columns, node, f, th, c, ml);
                    o[i] += v[node];
                }
            }
        }
        Py_END_ALLOW_THREADS
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&rows);
    PyBuffer_Release(&feature);
    PyBuffer_Release(&threshold);
    PyBuffer_Release(&children);
    PyBuffer_Release(&missing_left);
    PyBuffer_Release(&value);
    PyBuffer_Release(&roots);
    PyBuffer_Release(&depths);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "Add the leaf value every tree reaches to out[row], tree by tree."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tree_walk", "Gradient-boosted trees walked in C.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__tree_walk(void) { return PyModule_Create(&module); }
