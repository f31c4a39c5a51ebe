/* tinyflow RNNPool kernel: one r x c patch of int8 stem outputs pooled into 4*h2 int8 values, computed in float32
 * on the FPU (Saha et al. 2020; tinyflow.nn.rnnpool). Portable C99, no libm.
 *
 * RNN1 reads every row (c steps) and every column (r steps) of the patch; its final states are the row and column
 * summaries. RNN2 reads the row summaries forwards and backwards, then the column summaries forwards and
 * backwards; its four final states, [rows->, rows<-, cols->, cols<-], are quantized (x / scale, round half to
 * even, + zero point, saturate) into the pooled output. Only +, -, *, / in float32, in the order of the NumPy
 * oracle (tinyflow/firmware/rnnpool_float.py); compiled as ISO C (-std=c99) GCC fuses no multiply-add, so the
 * results are the oracle's bit for bit. exp: Cody-Waite reduction, degree-6 polynomial, 2^k from its bits.
 */
#ifndef TF_RNNPOOL_H
#define TF_RNNPOOL_H

#include <stdint.h>
#include <string.h>

#define TF_FASTGRNN 0
#define TF_GRU 1

/* one RNN cell: W (g*h x in) and U (g*h x h) row-major; FastGRNN: b1 = b_z, b2 = b_h, zeta, nu; GRU: b1 = b_i,
 * b2 = b_h (PyTorch's gate order r, z, n) */
typedef struct {
    int32_t cell, in, hid;
    const float *w, *u, *b1, *b2;
    float zeta, nu;
} tf_rnn_cell;

static inline int32_t tf_imin(int32_t a, int32_t b) { return a < b ? a : b; }
static inline int32_t tf_imax(int32_t a, int32_t b) { return a > b ? a : b; }

static inline float tf_expf(float x) {
    if (x < -87.0f) x = -87.0f;
    if (x > 88.0f) x = 88.0f;
    const float t = x * 0x1.715476p+0f + 0.5f;
    int32_t k = (int32_t)t; /* floor(t): truncate, then step down for a negative non-integer */
    if ((float)k > t) k -= 1;
    const float kf = (float)k;
    const float r = (x - kf * 0x1.63p-1f) - kf * -0x1.bd0106p-13f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const uint32_t bits = (uint32_t)(k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float tf_sigmoidf(float x) { return 1.0f / (1.0f + tf_expf(-x)); }

static inline float tf_tanhf(float x) { return 2.0f * tf_sigmoidf(2.0f * x) - 1.0f; }

/* y[j] = sum_k m[j][k] * x[k], summed from 0 in k order */
static inline void tf_matvec(const float *m, const float *x, float *y, int32_t rows, int32_t cols) {
    for (int32_t j = 0; j < rows; j++) {
        const float *row = m + j * cols;
        float acc = 0.0f;
        for (int32_t k = 0; k < cols; k++) acc += row[k] * x[k];
        y[j] = acc;
    }
}

/* one step of the cell on input x: h updated in place; xw, hu: g*h floats of scratch each */
static void tf_rnn_step(const tf_rnn_cell *c, const float *x, float *h, float *xw, float *hu) {
    const int32_t n = c->hid;
    tf_matvec(c->w, x, xw, (c->cell == TF_GRU ? 3 : 1) * n, c->in);
    tf_matvec(c->u, h, hu, (c->cell == TF_GRU ? 3 : 1) * n, n);
    if (c->cell == TF_FASTGRNN) {
        for (int32_t j = 0; j < n; j++) {
            const float pre = xw[j] + hu[j];
            const float z = tf_sigmoidf(pre + c->b1[j]);
            const float ht = tf_tanhf(pre + c->b2[j]);
            h[j] = (c->zeta * (1.0f - z) + c->nu) * ht + z * h[j];
        }
        return;
    }
    for (int32_t j = 0; j < 3 * n; j++) {
        xw[j] = xw[j] + c->b1[j];
        hu[j] = hu[j] + c->b2[j];
    }
    for (int32_t j = 0; j < n; j++) {
        const float r = tf_sigmoidf(xw[j] + hu[j]);
        const float z = tf_sigmoidf(xw[n + j] + hu[n + j]);
        const float nn = tf_tanhf(xw[2 * n + j] + r * hu[2 * n + j]);
        h[j] = (1.0f - z) * nn + z * h[j];
    }
}

/* RNN1 over `steps` int8 pixels (f channels each, `pitch` bytes apart), dequantized one pixel at a time into xf;
 * the final state into out (h1 floats) */
static void tf_rnn1_pixels(const tf_rnn_cell *c, const int8_t *px, int32_t steps, int32_t pitch, int32_t zp,
                           float scale, float *out, float *xf, float *xw, float *hu) {
    memset(out, 0, (size_t)c->hid * sizeof(float));
    for (int32_t t = 0; t < steps; t++) {
        const int8_t *q = px + t * pitch;
        for (int32_t k = 0; k < c->in; k++) xf[k] = (float)((int32_t)q[k] - zp) * scale;
        tf_rnn_step(c, xf, out, xw, hu);
    }
}

/* RNN2 over `steps` summaries (h1 floats each), forwards (dir 1) or backwards (dir -1); the final state into out */
static void tf_rnn2_summaries(const tf_rnn_cell *c, const float *seq, int32_t steps, int32_t dir, float *out,
                              float *xw, float *hu) {
    memset(out, 0, (size_t)c->hid * sizeof(float));
    for (int32_t t = 0; t < steps; t++) {
        const int32_t i = dir > 0 ? t : steps - 1 - t;
        tf_rnn_step(c, seq + i * c->in, out, xw, hu);
    }
}

static inline int8_t tf_quantize_f32(float v, float scale, int32_t zp) {
    float y = v / scale;
    if (y < -256.0f) y = -256.0f;
    if (y > 256.0f) y = 256.0f;
    y = (y + 12582912.0f) - 12582912.0f; /* round half to even: 1.5 * 2^23 leaves no fraction bits */
    int32_t q = (int32_t)y + zp;
    return (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
}

/* pool one patch (r x c pixels of f int8 channels, row stride c) into out[4*h2]; scratch: (r + c)*h1 + h2
 * + max(f, h1) + 2*g*max(h1, h2) floats (summaries, RNN2 state, the dequantized pixel, one step's products) */
static void tf_rnnpool_patch(const int8_t *patch, int32_t r, int32_t c, int32_t f, const tf_rnn_cell *rnn1,
                             const tf_rnn_cell *rnn2, int32_t zp_in, float scale_in, float scale_out,
                             int32_t zp_out, int8_t *out, float *scratch) {
    const int32_t h1 = rnn1->hid, h2 = rnn2->hid;
    const int32_t hmax = h1 > h2 ? h1 : h2, g = rnn1->cell == TF_GRU ? 3 : 1;
    float *rows = scratch, *cols = rows + r * h1, *state = cols + c * h1, *xf = state + h2;
    float *xw = xf + (f > h1 ? f : h1), *hu = xw + g * hmax;
    for (int32_t y = 0; y < r; y++) tf_rnn1_pixels(rnn1, patch + y * c * f, c, f, zp_in, scale_in, rows + y * h1, xf, xw, hu);
    for (int32_t x = 0; x < c; x++) tf_rnn1_pixels(rnn1, patch + x * f, r, c * f, zp_in, scale_in, cols + x * h1, xf, xw, hu);
    const float *seqs[4] = {rows, rows, cols, cols};
    const int32_t lens[4] = {r, r, c, c}, dirs[4] = {1, -1, 1, -1};
    for (int32_t s = 0; s < 4; s++) {
        tf_rnn2_summaries(rnn2, seqs[s], lens[s], dirs[s], state, xw, hu);
        for (int32_t j = 0; j < h2; j++) out[s * h2 + j] = tf_quantize_f32(state[j], scale_out, zp_out);
    }
}

#endif /* TF_RNNPOOL_H */
