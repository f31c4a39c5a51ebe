/* tinyflow int8 kernels: TF Lite / CMSIS-NN integer semantics, NHWC activations, portable C99.
 *
 * Generated layer functions call these `static inline` kernels with compile-time constant shapes, strides and
 * quantization constants, so the compiler specialises each call (TinyEngine's per-layer code, without an
 * interpreter). On a core with the DSP extension (__ARM_FEATURE_DSP: Cortex-M4/M7) the pointwise and linear dot
 * products use dual 16-bit MACs (SMLAD); elsewhere plain C. Both give the same integers.
 *
 * Requantization is TF Lite's MultiplyByQuantizedMultiplier (SaturatingRoundingDoublingHighMul, then
 * RoundingDivideByPOT); a left shift that would overflow int32 saturates. Signed right shifts are arithmetic on
 * every compiler tinyflow targets (GCC, Clang, Arm Compiler).
 */
#ifndef TF_KERNELS_H
#define TF_KERNELS_H

#include <stdint.h>
#include <string.h>

#if (defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP) || (defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT)
#include <arm_acle.h>
#endif
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define TF_DSP 1
#else
#define TF_DSP 0
#endif

/* Armv6-M (Cortex-M0/M0+: Thumb-1, no DSP, no SSAT, 32x32 -> 32 MULS, LDRSB with a register offset only):
 * kernels of their own below (TF_ARMV6M); the other cores keep theirs. The inner loops are Thumb-1 assembly when
 * the compiler optimises (TF_V6M_ASM: at -O0 the frame pointer takes r7, which the loops need), plain C otherwise;
 * both give the integers of the portable C. */
#if defined(__ARM_ARCH_6M__) && __ARM_ARCH_6M__ && !TF_DSP
#define TF_ARMV6M 1
#else
#define TF_ARMV6M 0
#endif
#if TF_ARMV6M && defined(__OPTIMIZE__) && defined(__thumb__)
#define TF_V6M_ASM 1
#else
#define TF_V6M_ASM 0
#endif

#define TF_INLINE static inline __attribute__((always_inline))
#define TF_MAX_KERNEL_AREA 49 /* depthwise kernels up to 7x7 */

TF_INLINE int32_t tf_srdhm(int32_t a, int32_t b) {
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t q = ab + (ab >= 0 ? (INT64_C(1) << 30) : (1 - (INT64_C(1) << 30)));
    return (int32_t)(q >= 0 ? (q >> 31) : -((-q) >> 31));
}

TF_INLINE int32_t tf_rdbpot(int32_t x, int32_t e) {
    if (e <= 0) return x;
    int32_t mask = (int32_t)((UINT32_C(1) << e) - 1u);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (remainder > threshold ? 1 : 0);
}

/* one rounding (CMSIS-NN's CMSIS_NN_USE_SINGLE_ROUNDING): (x*m + half) >> (31 - shift); the pools always use it.
 * With total = 31 - shift >= 32 the shift is the high word's, then a 32-bit shift (nested floors compose). */
TF_INLINE int32_t tf_requant_single(int32_t x, int32_t m, int32_t shift) {
    const int32_t total = 31 - shift;
    const int64_t p = (int64_t)x * m + (INT64_C(1) << (total - 1));
    if (total >= 32) return (int32_t)(p >> 32) >> (total - 32);
    return (int32_t)(p >> total);
}

/* TF Lite's MultiplyByQuantizedMultiplier in its cheapest exact sequence. SaturatingRoundingDoublingHighMul's
 * sign-dependent nudge folds into one floor: trunc((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31) for ab < 0
 * (and m is never INT32_MIN, so it never saturates); RoundingDivideByPOT by r >= 1 (half away from zero) is
 * ((((y - (y < 0)) >> (r - 1)) + 1) >> 1), which cannot overflow. */
TF_INLINE int32_t tf_requant(int32_t x, int32_t m, int32_t shift) {
#if defined(TF_SINGLE_ROUNDING) && TF_SINGLE_ROUNDING
    return tf_requant_single(x, m, shift);
#endif
    if (shift > 0) {
        int64_t s = (int64_t)x * (INT64_C(1) << shift);
        x = s > INT32_MAX ? INT32_MAX : (s < INT32_MIN ? INT32_MIN : (int32_t)s);
    }
    const int32_t y = (int32_t)(((int64_t)x * m + (INT64_C(1) << 30)) >> 31);
    if (shift >= 0) return y;
    return (((y + (y >> 31)) >> (-shift - 1)) + 1) >> 1;
}

/* floor(a*b / 2^32) and floor((a*b + 2^31) / 2^32): SMMUL / SMMULR where the core has them */
TF_INLINE int32_t tf_smmul(int32_t a, int32_t b) {
#if TF_DSP
    int32_t r;
    __asm__("smmul %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * b) >> 32);
#endif
}

TF_INLINE int32_t tf_smmulr(int32_t a, int32_t b) {
#if TF_DSP
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * b + (INT64_C(1) << 31)) >> 32);
#endif
}

#if TF_ARMV6M
/* floor((acc*m + c16*2^16) / 2^31) for |acc| < 2^30, 0 <= m < 2^31, c16 in {0, 2^14}, in 32-bit arithmetic (an
 * Armv6-M core has no 32x32 -> 64 multiply: GCC calls __aeabi_lmul). With acc = ah*2^16 + al (al the signed low
 * half) and m = mh*2^16 + ml (ml the unsigned low half): acc*m = ah*mh*2^32 + (ah*ml + al*mh)*2^16 + al*ml, so
 * the result is 2*ah*mh + floor((ah*ml + al*mh + floor(al*ml / 2^16) + c16) / 2^15) (nested floors compose).
 * Bounds: |ah| <= 2^14, |ah*ml| < 2^30, |al*mh| < 2^30, |al*ml| < 2^31, so no term and no sum overflows. */
TF_INLINE int32_t tf_hmul31(int32_t acc, int32_t m, int32_t c16) {
    const int32_t al = (int16_t)acc, ah = (acc - al) >> 16;
    const int32_t ml = m & 0xffff, mh = m >> 16;
    const int32_t s = ah * ml + al * mh + ((al * ml) >> 16) + c16;
    return 2 * ah * mh + (s >> 15);
}
#endif

/* SMMUL(2*acc, m) = floor(acc*m / 2^31) and SMMULR(2*acc, m) = floor((acc*m + 2^30) / 2^31) for |acc| < 2^30 */
TF_INLINE int32_t tf_smmul2(int32_t acc, int32_t m) {
#if TF_ARMV6M
    return tf_hmul31(acc, m, 0);
#else
    return tf_smmul(acc * 2, m);
#endif
}

TF_INLINE int32_t tf_smmulr2(int32_t acc, int32_t m) {
#if TF_ARMV6M
    return tf_hmul31(acc, m, 1 << 14);
#else
    return tf_smmulr(acc * 2, m);
#endif
}

/* requantization of a layer whose every channel shifts right (shift <= -1) and whose accumulators are bounded by
 * |acc| < 2^30 (the generator checks both offline: rq = 1), with r1 = -shift - 1 precomputed per channel.
 * TF Lite: SRDHM(acc, m) = floor((2*acc*m + 2^31) / 2^32) = SMMULR(2*acc, m), then RoundingDivideByPOT by r1 + 1.
 * Single rounding: floor(acc*m / 2^(32 + r1) + 1/2) = ((SMMUL(2*acc, m) >> r1) + 1) >> 1 (nested floors compose).
 * rq = 0: the general sequence (`tf_requant`). Both give exactly the integers of `tf_requant`. */
TF_INLINE int32_t tf_rq(int32_t acc, int32_t m, int32_t s, int32_t rq) {
    if (!rq) return tf_requant(acc, m, s);
#if defined(TF_SINGLE_ROUNDING) && TF_SINGLE_ROUNDING
    return ((tf_smmul2(acc, m) >> s) + 1) >> 1;
#else
    const int32_t y = tf_smmulr2(acc, m);
    return (((y + (y >> 31)) >> s) + 1) >> 1;
#endif
}

/* saturate to int8 (SSAT where the core has it), then the activation's bounds where they are tighter (lo and hi
 * are constants at every call, so the compiler keeps only the comparisons a layer needs) */
TF_INLINE int8_t tf_clamp(int32_t v, int32_t lo, int32_t hi) {
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
    v = __ssat(v, 8);
    if (hi < 127) v = v > hi ? hi : v;
    if (lo > -128) v = v < lo ? lo : v;
    return (int8_t)v;
#else
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
#endif
}

TF_INLINE int32_t tf_ror8(int32_t v) { return (int32_t)(((uint32_t)v >> 8) | ((uint32_t)v << 24)); }

#if TF_DSP
/* bytes 1 and 3 sign-extended to a 16-bit pair: SXTB16 with its rotation operand (one instruction) */
TF_INLINE int32_t tf_sxtb16_ror8(int32_t v) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
#endif

/* dot product of two int8 vectors of length n, added to acc */
TF_INLINE int32_t tf_dot(const int8_t *x, const int8_t *w, int32_t n, int32_t acc) {
    int32_t k = 0;
#if TF_DSP
    for (; k + 4 <= n; k += 4) {
        int32_t xv, wv;
        memcpy(&xv, x + k, 4);
        memcpy(&wv, w + k, 4);
        /* bytes 0,2 and 1,3 sign-extended to 16-bit pairs; the pairing is the same for x and w */
        acc = __smlad(__sxtb16(xv), __sxtb16(wv), acc);
        acc = __smlad(tf_sxtb16_ror8(xv), tf_sxtb16_ror8(wv), acc);
    }
#endif
    for (; k < n; k++) acc += (int32_t)x[k] * (int32_t)w[k];
    return acc;
}

#if TF_DSP
/* 2 pixels x 2 output channels at a time: each loaded word of x and w feeds two dual MACs (CMSIS-NN's blocking) */
TF_INLINE void tf_pointwise_2x2(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1, int32_t cin,
                                int32_t *acc) {
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    int32_t k = 0;
    for (; k + 4 <= cin; k += 4) {
        int32_t xa, xb, wa, wb;
        memcpy(&xa, x0 + k, 4);
        memcpy(&xb, x1 + k, 4);
        memcpy(&wa, w0 + k, 4);
        memcpy(&wb, w1 + k, 4);
        const int32_t xa0 = __sxtb16(xa), xa1 = tf_sxtb16_ror8(xa);
        const int32_t xb0 = __sxtb16(xb), xb1 = tf_sxtb16_ror8(xb);
        const int32_t wa0 = __sxtb16(wa), wa1 = tf_sxtb16_ror8(wa);
        const int32_t wb0 = __sxtb16(wb), wb1 = tf_sxtb16_ror8(wb);
        a00 = __smlad(xa1, wa1, __smlad(xa0, wa0, a00));
        a01 = __smlad(xa1, wb1, __smlad(xa0, wb0, a01));
        a10 = __smlad(xb1, wa1, __smlad(xb0, wa0, a10));
        a11 = __smlad(xb1, wb1, __smlad(xb0, wb0, a11));
    }
    for (; k < cin; k++) {
        a00 += (int32_t)x0[k] * w0[k];
        a01 += (int32_t)x0[k] * w1[k];
        a10 += (int32_t)x1[k] * w0[k];
        a11 += (int32_t)x1[k] * w1[k];
    }
    acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;
}
#endif

#if TF_DSP
/* n4 groups of 4 int8 widened once to int16 pairs in SXTB16's order ((x0, x2), (x1, x3)): the weights' pairing */
TF_INLINE void tf_widen(const int8_t *x, int32_t *xw, int32_t n4) {
    for (int32_t k = 0; k < n4; k++) {
        int32_t v;
        memcpy(&v, x + 4 * k, 4);
        xw[2 * k] = __sxtb16(v);
        xw[2 * k + 1] = tf_sxtb16_ror8(v);
    }
}

/* 2 pixels (widened) x 2 output channels: per 4 inputs two loads of weights, four SXTB16, eight dual MACs */
TF_INLINE void tf_pointwise_2x2w(const int32_t *x0, const int32_t *x1, const int8_t *w0, const int8_t *w1, int32_t n4,
                                 int32_t *acc) {
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    for (int32_t k = 0; k < n4; k++) {
        int32_t wa, wb;
        memcpy(&wa, w0 + 4 * k, 4);
        memcpy(&wb, w1 + 4 * k, 4);
        const int32_t wa0 = __sxtb16(wa), wa1 = tf_sxtb16_ror8(wa);
        const int32_t wb0 = __sxtb16(wb), wb1 = tf_sxtb16_ror8(wb);
        const int32_t xa0 = x0[2 * k], xa1 = x0[2 * k + 1], xb0 = x1[2 * k], xb1 = x1[2 * k + 1];
        a00 = __smlad(xa1, wa1, __smlad(xa0, wa0, a00));
        a01 = __smlad(xa1, wb1, __smlad(xa0, wb0, a01));
        a10 = __smlad(xb1, wa1, __smlad(xb0, wa0, a10));
        a11 = __smlad(xb1, wb1, __smlad(xb0, wb0, a11));
    }
    acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;
}
#endif

#if TF_ARMV6M
/* Armv6-M dot products of one input vector x (n int8) with 4, 2 or 1 weight rows (w, w + n, ...), added to the
 * accumulators. MULS destroys one operand, so the input stays in a register while each row's weight is loaded
 * into another and multiplied in place: per input and row LDRSB, MULS, ADD (the accumulators in r8-r11, which
 * ADD reaches), per input one LDRSB and the index increment. The index runs from -n up to 0 against pointers past
 * each vector's end (LDRSB has a register offset only), the loop is unrolled by 4 and entered at the step that
 * leaves a multiple of 4 (n >= 1; n is a constant at every call, so one entry is compiled). */
#if TF_V6M_ASM
#define TF_V6M_ROW(p, a) "ldrsb %[w], [" p ", %[k]]\n\tmuls %[w], %[x], %[w]\n\tadd " a ", %[w]\n\t"
#define TF_V6M_X "ldrsb %[x], [%[px], %[k]]\n\t"
#define TF_V6M_NEXT "adds %[k], #1\n\t"
#define TF_V6M_STEP4 \
    TF_V6M_X TF_V6M_ROW("%[p0]", "%[a0]") TF_V6M_ROW("%[p1]", "%[a1]") TF_V6M_ROW("%[p2]", "%[a2]") \
        TF_V6M_ROW("%[p3]", "%[a3]") TF_V6M_NEXT
#define TF_V6M_STEP2 TF_V6M_X TF_V6M_ROW("%[p0]", "%[a0]") TF_V6M_ROW("%[p1]", "%[a1]") TF_V6M_NEXT
#define TF_V6M_STEP1 TF_V6M_X TF_V6M_ROW("%[p0]", "%[a0]") TF_V6M_NEXT
#define TF_V6M_LOOP(entry, step) \
    ".syntax unified\n\t" entry "1:\n\t" step "2:\n\t" step "3:\n\t" step "4:\n\t" step "bne 1b\n\t"
/* the loop entered where n % 4 says: the 4-step body, then at step 2, 3 or 4 */
#define TF_V6M_ENTRIES(step, outs, ins)                                                 \
    switch (n & 3) {                                                                    \
    case 0: __asm__(TF_V6M_LOOP("", step) : outs : ins : "cc", "memory"); break;        \
    case 3: __asm__(TF_V6M_LOOP("b 2f\n\t", step) : outs : ins : "cc", "memory"); break; \
    case 2: __asm__(TF_V6M_LOOP("b 3f\n\t", step) : outs : ins : "cc", "memory"); break; \
    default: __asm__(TF_V6M_LOOP("b 4f\n\t", step) : outs : ins : "cc", "memory"); break; \
    }
#define TF_V6M_OUTS(...) __VA_ARGS__
#endif

/* explicit registers: GCC's own choice of eight low registers for one asm is not guaranteed */
#define TF_V6M_REG(type, name, reg, value) register type name __asm__(reg) = (value)

/* the operands every dot-product asm reads: k counts from -n up to 0, px points past the input, p0 past weight row
 * 0 (row j ends at w + (j + 1)·n), xv / wv hold the bytes loaded */
#define TF_V6M_DOT_START(x, w, n)                                                                                   \
    TF_V6M_REG(int32_t, k, "r0", -(n));                                                                            \
    TF_V6M_REG(const int8_t *, px, "r1", (x) + (n));                                                               \
    TF_V6M_REG(const int8_t *, p0, "r2", (w) + (n));                                                               \
    register int32_t xv __asm__("r6"), wv __asm__("r7")

TF_INLINE void tf_v6m_dot4(const int8_t *x, const int8_t *w, int32_t n, int32_t *acc) {
#if TF_V6M_ASM
    TF_V6M_DOT_START(x, w, n);
    TF_V6M_REG(const int8_t *, p1, "r3", w + 2 * n);
    TF_V6M_REG(const int8_t *, p2, "r4", w + 3 * n);
    TF_V6M_REG(const int8_t *, p3, "r5", w + 4 * n);
    TF_V6M_REG(int32_t, a0, "r8", acc[0]);
    TF_V6M_REG(int32_t, a1, "r9", acc[1]);
    TF_V6M_REG(int32_t, a2, "r10", acc[2]);
    TF_V6M_REG(int32_t, a3, "r11", acc[3]);
    TF_V6M_ENTRIES(TF_V6M_STEP4,
                   TF_V6M_OUTS([a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [k] "+l"(k),
                               [x] "=&l"(xv), [w] "=&l"(wv)),
                   TF_V6M_OUTS([px] "l"(px), [p0] "l"(p0), [p1] "l"(p1), [p2] "l"(p2), [p3] "l"(p3)))
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
#else
    for (int32_t k = 0; k < n; k++) {
        const int32_t v = x[k];
        acc[0] += v * w[k], acc[1] += v * w[n + k], acc[2] += v * w[2 * n + k], acc[3] += v * w[3 * n + k];
    }
#endif
}

TF_INLINE void tf_v6m_dot2(const int8_t *x, const int8_t *w, int32_t n, int32_t *acc) {
#if TF_V6M_ASM
    TF_V6M_DOT_START(x, w, n);
    TF_V6M_REG(const int8_t *, p1, "r3", w + 2 * n);
    TF_V6M_REG(int32_t, a0, "r4", acc[0]);
    TF_V6M_REG(int32_t, a1, "r5", acc[1]);
    TF_V6M_ENTRIES(TF_V6M_STEP2,
                   TF_V6M_OUTS([a0] "+l"(a0), [a1] "+l"(a1), [k] "+l"(k), [x] "=&l"(xv), [w] "=&l"(wv)),
                   TF_V6M_OUTS([px] "l"(px), [p0] "l"(p0), [p1] "l"(p1)))
    acc[0] = a0, acc[1] = a1;
#else
    for (int32_t k = 0; k < n; k++) {
        const int32_t v = x[k];
        acc[0] += v * w[k], acc[1] += v * w[n + k];
    }
#endif
}

TF_INLINE int32_t tf_v6m_dot1(const int8_t *x, const int8_t *w, int32_t n, int32_t acc) {
#if TF_V6M_ASM
    TF_V6M_DOT_START(x, w, n);
    TF_V6M_REG(int32_t, a0, "r4", acc);
    TF_V6M_ENTRIES(TF_V6M_STEP1, TF_V6M_OUTS([a0] "+l"(a0), [k] "+l"(k), [x] "=&l"(xv), [w] "=&l"(wv)),
                   TF_V6M_OUTS([px] "l"(px), [p0] "l"(p0)))
    return a0;
#else
    for (int32_t k = 0; k < n; k++) acc += (int32_t)x[k] * w[k];
    return acc;
#endif
}

/* Armv6-M output stage of a layer with rq = 1 (see `tf_rq`): the byte tf_clamp(tf_rq(acc, m, s, 1) + zp, lo, hi)
 * stores, as an int32 whose low byte is it. The high multiply is `tf_hmul31`'s; then with K = 1 + 2*(zp - lo),
 * u = ((y >> s) + K) >> 1 is the rounded, offset value less lo (the rounding's +1 and zp folded into one add),
 * clamped to [0, hi - lo] (ASRS sets N for the lower bound; one unsigned compare for the upper), plus lo. */
#if TF_V6M_ASM
#if defined(TF_SINGLE_ROUNDING) && TF_SINGLE_ROUNDING
#define TF_V6M_NUDGE ""
#define TF_V6M_SIGN ""
#else /* SMMULR's + 2^30 (2^14 at this stage), then RoundingDivideByPOT's y - (y < 0) */
#define TF_V6M_NUDGE "movs %[t1], #1\n\tlsls %[t1], %[t1], #14\n\tadds %[t3], %[t3], %[t1]\n\t"
#define TF_V6M_SIGN "asrs %[t1], %[a], #31\n\tadds %[a], %[a], %[t1]\n\t"
#endif
/* the high multiply (`tf_hmul31`, with TF Lite's nudge and sign fix-up where that is the rounding) of %[a] by
 * %[m], into %[a]; %[m] and the temporaries %[t1..3] are clobbered */
#define TF_V6M_HMUL                                                                                              \
    "sxth %[t1], %[a]\n\t"                                             /* al */                                   \
    "subs %[a], %[a], %[t1]\n\tasrs %[a], %[a], #16\n\t"                /* ah */                                   \
    "uxth %[t2], %[m]\n\tlsrs %[m], %[m], #16\n\t"                      /* ml, mh */                               \
    "movs %[t3], %[t1]\n\tmuls %[t3], %[t2], %[t3]\n\tasrs %[t3], %[t3], #16\n\t" /* al*ml >> 16 */             \
    "muls %[t2], %[a], %[t2]\n\tadds %[t3], %[t3], %[t2]\n\t"           /* + ah*ml */                              \
    "muls %[t1], %[m], %[t1]\n\tadds %[t3], %[t3], %[t1]\n\t" TF_V6M_NUDGE /* + al*mh */                          \
    "asrs %[t3], %[t3], #15\n\tmuls %[a], %[m], %[a]\n\tlsls %[a], %[a], #1\n\tadds %[a], %[a], %[t3]\n\t"      \
    TF_V6M_SIGN
/* u = (%[a] + K) >> 1 clamped to [0, hi - lo]: ASRS sets N for the lower bound (none where `fast` and lo = zp,
 * K = 1: acc > 0 there, so u >= 0), one unsigned compare the upper */
#define TF_V6M_CLAMP                                                                                   \
    "asrs %[a], %[a], #1\n\t.if %c[k] != 1 || !%c[fast]\n\tbpl 1f\n\tmovs %[a], #0\n1:\n\t.endif\n\t"     \
    "cmp %[a], %[r]\n\tbls 2f\n\tmovs %[a], %[r]\n2:\n\t"
/* + K (a constant in [-509, 511], never 0) as immediates, then the clamp */
#define TF_V6M_ADDK_CLAMP                                                                                      \
    ".if %c[k] > 510\n\tadds %[a], #255\n\tadds %[a], #255\n\tadds %[a], #(%c[k]-510)\n\t"                      \
    ".elseif %c[k] > 255\n\tadds %[a], #255\n\tadds %[a], #(%c[k]-255)\n\t"                                       \
    ".elseif %c[k] < -255\n\tsubs %[a], #255\n\tadds %[a], #(%c[k]+255)\n\t"                                      \
    ".else\n\tadds %[a], #(%c[k])\n\t.endif\n\t" TF_V6M_CLAMP
#endif

TF_INLINE int32_t tf_v6m_out(int32_t acc, int32_t m, int32_t s, int32_t zp, int32_t lo, int32_t hi) {
    if (lo >= zp && acc <= 0) return lo; /* see TF_V6M_FAST */
#if TF_V6M_ASM
    int32_t t1, t2, t3;
    const int32_t k = 1 + 2 * (zp - lo);
    __asm__(".syntax unified\n\t" TF_V6M_HMUL "asrs %[a], %[a], %[s]\n\tadd %[a], %[kr]\n\t" TF_V6M_CLAMP
            : [a] "+l"(acc), [m] "+l"(m), [t1] "=&l"(t1), [t2] "=&l"(t2), [t3] "=&l"(t3)
            : [s] "l"(s), [kr] "r"(k), [k] "i"(1 + 2 * (zp - lo)), [r] "i"(hi - lo), [fast] "i"(lo >= zp)
            : "cc");
    return acc + lo;
#else
    return tf_clamp(tf_rq(acc, m, s, 1) + zp, lo, hi);
#endif
}

#if TF_V6M_ASM
/* four output bytes of a block whose accumulators are in r8-r11 (rq = 1), all in one asm: per output the
 * accumulator moved down, m and s loaded (`mq`), the high multiply, >> s, + K, the clamp, + lo, STRB (`st`) */
#define TF_V6M_OUT(acc, mq, st)                                                                                 \
    "mov %[a], " acc "\n\t" TF_V6M_FAST mq TF_V6M_HMUL "asrs %[a], %[a], %[s]\n\t" TF_V6M_ADDK_CLAMP               \
    "4:\n\t.if %c[lo]\n\tadds %[a], #(%c[lo])\n\t.endif\n\t" st
/* where the lower bound is at or above the zero point (a ReLU's): acc <= 0 requantizes to <= 0, so the byte is lo
 * (u = 0) without the multiply — about half a ReLU layer's outputs */
#define TF_V6M_FAST ".if %c[fast]\n\tcmp %[a], #0\n\tbgt 3f\n\tmovs %[a], #0\n\tb 4f\n3:\n\t.endif\n\t"
#define TF_V6M_EPILOGUE_REGS                                                                                    \
    register int32_t ra __asm__("r0"), rm __asm__("r1"), rs __asm__("r2"), t1 __asm__("r3"), t2 __asm__("r4"),    \
        t3 __asm__("r5")
#define TF_V6M_EPILOGUE_OUTS [a] "=&l"(ra), [m] "=&l"(rm), [s] "=&l"(rs), [t1] "=&l"(t1), [t2] "=&l"(t2), [t3] "=&l"(t3)
/* pointwise: channel j's m and s at mp[j], sp[j], its byte at y[j] */
#define TF_V6M_PW_OUT(j, acc)                                                                                  \
    TF_V6M_OUT(acc, "ldr %[m], [%[mp], #(4*" #j ")]\n\tldr %[s], [%[sp], #(4*" #j ")]\n\t",                         \
               "mov %[t1], %[y]\n\tstrb %[a], [%[t1], #" #j "]\n\t")
/* depthwise: one channel's m and s (q[0], q[1]); the bytes c apart */
#define TF_V6M_DW_OUT(acc) \
    TF_V6M_OUT(acc, "ldr %[m], [%[q]]\n\tldr %[s], [%[q], #4]\n\t", "mov %[t1], %[y]\n\tstrb %[a], [%[t1]]\n\tadd %[y], %[c]\n\t")
#endif

/* an output byte: the short sequence where rq = 1, the general one otherwise */
TF_INLINE int8_t tf_v6m_q(int32_t acc, int32_t m, int32_t s, int32_t rq, int32_t zp, int32_t lo, int32_t hi) {
    return rq ? (int8_t)tf_v6m_out(acc, m, s, zp, lo, hi) : tf_clamp(tf_requant(acc, m, s) + zp, lo, hi);
}

/* Armv6-M depthwise taps over the biased plane (bytes x + 128): 4 outputs of a row at once (columns 0, sw, 2sw,
 * 3sw from `base`) or 1, each weight (int32, k[ky*kw + kx]) loaded once for the 4: per tap LDR, then per output
 * LDRB (an immediate offset), MULS, ADDS; after each kernel row the plane pointer moves down a row (pw). One asm
 * statement per kernel row, its taps written out for kw = 3, 5, 7 (the compiler sizes an asm by its lines, so the
 * text is the code); other widths take the plain C. */
#if TF_V6M_ASM
#define TF_V6M_TAP(i, out, off)                                                                  \
    "ldrb %[x], [%[b], #(" #i "+" off ")]\n\tmuls %[x], %[w], %[x]\n\tadd " out ", %[x]\n\t"
#define TF_V6M_TAP4(i)                                                                           \
    "ldr %[w], [%[kp], #(4*" #i ")]\n\t" TF_V6M_TAP(i, "%[a0]", "0") TF_V6M_TAP(i, "%[a1]", "%c[sw]") \
        TF_V6M_TAP(i, "%[a2]", "2*%c[sw]") TF_V6M_TAP(i, "%[a3]", "3*%c[sw]")
#define TF_V6M_TAP2(i) "ldr %[w], [%[kp], #(4*" #i ")]\n\t" TF_V6M_TAP(i, "%[a0]", "0") TF_V6M_TAP(i, "%[a1]", "%c[sw]")
#define TF_V6M_TAP1(i) "ldr %[w], [%[kp], #(4*" #i ")]\n\t" TF_V6M_TAP(i, "%[a0]", "0")
#define TF_V6M_ROW3(T) T(0) T(1) T(2)
#define TF_V6M_ROW5(T) T(0) T(1) T(2) T(3) T(4)
#define TF_V6M_ROW7(T) T(0) T(1) T(2) T(3) T(4) T(5) T(6)
#define TF_V6M_NEXT_ROW ".syntax unified\n\tadd %[b], %[pw]\n\tadds %[kp], #(4*%c[kw])\n\t"
/* the kernel rows: a 3x3 written out, wider kernels one row in a counted loop (%[n] rows; code size) */
#define TF_V6M_ROWS(T, outs, ins)                                                                               \
    if (kw == 3 && kh == 3)                                                                                     \
        __asm__(".syntax unified\n\t" TF_V6M_ROW3(T) TF_V6M_NEXT_ROW TF_V6M_ROW3(T) TF_V6M_NEXT_ROW TF_V6M_ROW3(T)  \
                    TF_V6M_NEXT_ROW : outs, [n] "+l"(rows) : ins : "cc", "memory");                                      \
    else if (kw == 3)                                                                                           \
        __asm__(".syntax unified\n1:\n\t" TF_V6M_ROW3(T) TF_V6M_NEXT_ROW "subs %[n], #1\n\tbne 1b\n\t"              \
                : outs, [n] "+l"(rows) : ins : "cc", "memory");                                                   \
    else if (kw == 5)                                                                                           \
        __asm__(".syntax unified\n1:\n\t" TF_V6M_ROW5(T) TF_V6M_NEXT_ROW "subs %[n], #1\n\tbne 1b\n\t"              \
                : outs, [n] "+l"(rows) : ins : "cc", "memory");                                                   \
    else                                                                                                        \
        __asm__(".syntax unified\n1:\n\t" TF_V6M_ROW7(T) TF_V6M_NEXT_ROW "subs %[n], #1\n\tbne 1b\n\t"              \
                : outs, [n] "+l"(rows) : ins : "cc", "memory");
#endif

/* 4 depthwise outputs of one channel (a row's columns 0, sw, 2sw, 3sw from `base`), written to y, y + c, y + 2c,
 * y + 3c: the taps (accumulators in r8-r11), then the four output stages in one asm where rq = 1 */
TF_INLINE void tf_v6m_dw4(const uint8_t *base, const int32_t *k, int32_t pw, int32_t kh, int32_t kw, int32_t sw,
                          int32_t b0, const int32_t *q, int8_t *y, int32_t c, int32_t rq, int32_t zp, int32_t lo,
                          int32_t hi) {
#if TF_V6M_ASM
    if (kw == 3 || kw == 5 || kw == 7) {
        TF_V6M_REG(int32_t, a0, "r8", b0);
        TF_V6M_REG(int32_t, a1, "r9", b0);
        TF_V6M_REG(int32_t, a2, "r10", b0);
        TF_V6M_REG(int32_t, a3, "r11", b0);
        {
            TF_V6M_REG(const uint8_t *, b, "r0", base);
            TF_V6M_REG(const int32_t *, kp, "r1", k);
            register int32_t wv __asm__("r2"), xv __asm__("r3");
            TF_V6M_REG(int32_t, pwr, "r4", pw);
            TF_V6M_REG(int32_t, rows, "r5", kh);
            TF_V6M_ROWS(TF_V6M_TAP4,
                        TF_V6M_OUTS([a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [b] "+l"(b),
                                    [kp] "+l"(kp), [w] "=&l"(wv), [x] "=&l"(xv)),
                        TF_V6M_OUTS([pw] "l"(pwr), [kw] "i"(kw), [sw] "i"(sw)))
        }
        if (rq) {
            TF_V6M_EPILOGUE_REGS;
            TF_V6M_REG(const int32_t *, rq_, "r6", q);
            TF_V6M_REG(int32_t, rc, "r7", c);
            TF_V6M_REG(int8_t *, ry, "r12", y);
            __asm__ volatile(".syntax unified\n\t" TF_V6M_DW_OUT("%[a0]") TF_V6M_DW_OUT("%[a1]") TF_V6M_DW_OUT("%[a2]")
                                 TF_V6M_DW_OUT("%[a3]")
                             : TF_V6M_EPILOGUE_OUTS, [y] "+r"(ry)
                             : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [q] "l"(rq_), [c] "l"(rc),
                               [k] "i"(1 + 2 * (zp - lo)), [r] "i"(hi - lo), [lo] "i"(lo), [fast] "i"(lo >= zp)
                             : "cc", "memory");
        } else {
            y[0] = tf_v6m_q(a0, q[0], q[1], 0, zp, lo, hi), y[c] = tf_v6m_q(a1, q[0], q[1], 0, zp, lo, hi);
            y[2 * c] = tf_v6m_q(a2, q[0], q[1], 0, zp, lo, hi), y[3 * c] = tf_v6m_q(a3, q[0], q[1], 0, zp, lo, hi);
        }
        return;
    }
#endif
    int32_t acc[4] = {b0, b0, b0, b0};
    for (int32_t ky = 0; ky < kh; ky++)
        for (int32_t kx = 0; kx < kw; kx++)
            for (int32_t j = 0; j < 4; j++) acc[j] += (int32_t)base[ky * pw + kx + j * sw] * k[ky * kw + kx];
    for (int32_t j = 0; j < 4; j++) y[j * c] = tf_v6m_q(acc[j], q[0], q[1], rq, zp, lo, hi);
}

TF_INLINE void tf_v6m_taps2(const uint8_t *base, const int32_t *k, int32_t pw, int32_t kh, int32_t kw, int32_t sw,
                            int32_t *acc) {
#if TF_V6M_ASM
    if (kw == 3 || kw == 5 || kw == 7) {
        TF_V6M_REG(const uint8_t *, b, "r0", base);
        TF_V6M_REG(const int32_t *, kp, "r1", k);
        register int32_t wv __asm__("r2"), xv __asm__("r3");
        TF_V6M_REG(int32_t, a0, "r4", acc[0]);
        TF_V6M_REG(int32_t, a1, "r5", acc[1]);
        TF_V6M_REG(int32_t, pwr, "r8", pw);
        TF_V6M_REG(int32_t, rows, "r6", kh);
        TF_V6M_ROWS(TF_V6M_TAP2,
                    TF_V6M_OUTS([a0] "+l"(a0), [a1] "+l"(a1), [b] "+l"(b), [kp] "+l"(kp), [w] "=&l"(wv),
                                [x] "=&l"(xv)),
                    TF_V6M_OUTS([pw] "r"(pwr), [kw] "i"(kw), [sw] "i"(sw)))
        acc[0] = a0, acc[1] = a1;
        return;
    }
#endif
    for (int32_t ky = 0; ky < kh; ky++)
        for (int32_t kx = 0; kx < kw; kx++)
            for (int32_t j = 0; j < 2; j++) acc[j] += (int32_t)base[ky * pw + kx + j * sw] * k[ky * kw + kx];
}

TF_INLINE int32_t tf_v6m_taps1(const uint8_t *base, const int32_t *k, int32_t pw, int32_t kh, int32_t kw,
                               int32_t acc) {
#if TF_V6M_ASM
    if (kw == 3 || kw == 5 || kw == 7) {
        TF_V6M_REG(const uint8_t *, b, "r0", base);
        TF_V6M_REG(const int32_t *, kp, "r1", k);
        register int32_t wv __asm__("r2"), xv __asm__("r3");
        TF_V6M_REG(int32_t, a0, "r4", acc);
        TF_V6M_REG(int32_t, pwr, "r8", pw);
        TF_V6M_REG(int32_t, rows, "r6", kh);
        TF_V6M_ROWS(TF_V6M_TAP1,
                    TF_V6M_OUTS([a0] "+l"(a0), [b] "+l"(b), [kp] "+l"(kp), [w] "=&l"(wv), [x] "=&l"(xv)),
                    TF_V6M_OUTS([pw] "r"(pwr), [kw] "i"(kw)))
        return a0;
    }
#endif
    for (int32_t ky = 0; ky < kh; ky++)
        for (int32_t kx = 0; kx < kw; kx++) acc += (int32_t)base[ky * pw + kx] * k[ky * kw + kx];
    return acc;
}

/* n >= 1 bytes of one channel (stride c) into a plane row, each offset by 128 (x ^ 0x80): LDRB, ADDS, EORS, STRB
 * with a register offset counting up to 0, ADDS; two per loop pass */
TF_INLINE void tf_v6m_copy_biased(uint8_t *dst, const uint8_t *src, int32_t n, int32_t c) {
#if TF_V6M_ASM
    if (n <= 0) return;
    int32_t i = -n, t;
    const uint32_t mask = 0x80u;
    uint8_t *end = dst + n;
/* one byte of the plane: load, step the source by c, flip the sign bit (+128), store at end[i], i + 1 */
#define TF_V6M_COPY_ONE                                                                                            \
    "ldrb %[t], [%[s]]\n\tadds %[s], %[s], %[c]\n\teors %[t], %[t], %[k]\n\tstrb %[t], [%[d], %[i]]\n\t"              \
    "adds %[i], #1\n\t"
#define TF_V6M_COPY_OPERANDS                                                                                       \
    : [i] "+l"(i), [s] "+l"(src), [t] "=&l"(t) : [d] "l"(end), [c] "l"(c), [k] "l"(mask) : "cc", "memory"
    if (n & 1) /* two bytes a pass: an odd count enters at the second */
        __asm__ volatile(".syntax unified\n\tb 2f\n1:\n\t" TF_V6M_COPY_ONE "2:\n\t" TF_V6M_COPY_ONE
                         "bne 1b\n\t" TF_V6M_COPY_OPERANDS);
    else
        __asm__ volatile(".syntax unified\n1:\n\t" TF_V6M_COPY_ONE TF_V6M_COPY_ONE "bne 1b\n\t" TF_V6M_COPY_OPERANDS);
#undef TF_V6M_COPY_ONE
#undef TF_V6M_COPY_OPERANDS
#else
    for (int32_t x = 0; x < n; x++) dst[x] = (uint8_t)(src[x * c] ^ 0x80u);
#endif
}

/* 4 pointwise outputs of one pixel (channels o..o+3: weights w, biases bp, constants mp / sp, bytes y[0..3]): the
 * dot products (accumulators in r8-r11), then the four output stages in one asm where rq = 1 */
TF_INLINE void tf_v6m_pw4(const int8_t *x, const int8_t *w, int32_t n, const int32_t *bp, const int32_t *mp,
                          const int32_t *sp, int8_t *y, int32_t rq, int32_t zp, int32_t lo, int32_t hi) {
#if TF_V6M_ASM
    if (rq) {
        TF_V6M_REG(int32_t, a0, "r8", bp[0]);
        TF_V6M_REG(int32_t, a1, "r9", bp[1]);
        TF_V6M_REG(int32_t, a2, "r10", bp[2]);
        TF_V6M_REG(int32_t, a3, "r11", bp[3]);
        {
            TF_V6M_DOT_START(x, w, n);
            TF_V6M_REG(const int8_t *, p1, "r3", w + 2 * n);
            TF_V6M_REG(const int8_t *, p2, "r4", w + 3 * n);
            TF_V6M_REG(const int8_t *, p3, "r5", w + 4 * n);
            TF_V6M_ENTRIES(TF_V6M_STEP4,
                           TF_V6M_OUTS([a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [k] "+l"(k),
                                       [x] "=&l"(xv), [w] "=&l"(wv)),
                           TF_V6M_OUTS([px] "l"(px), [p0] "l"(p0), [p1] "l"(p1), [p2] "l"(p2), [p3] "l"(p3)))
        }
        {
            TF_V6M_EPILOGUE_REGS;
            TF_V6M_REG(const int32_t *, rmp, "r6", mp);
            TF_V6M_REG(const int32_t *, rsp, "r7", sp);
            TF_V6M_REG(int8_t *, ry, "r12", y);
            __asm__ volatile(".syntax unified\n\t" TF_V6M_PW_OUT(0, "%[a0]") TF_V6M_PW_OUT(1, "%[a1]")
                                 TF_V6M_PW_OUT(2, "%[a2]") TF_V6M_PW_OUT(3, "%[a3]")
                             : TF_V6M_EPILOGUE_OUTS
                             : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [mp] "l"(rmp), [sp] "l"(rsp),
                               [y] "r"(ry), [k] "i"(1 + 2 * (zp - lo)), [r] "i"(hi - lo), [lo] "i"(lo), [fast] "i"(lo >= zp)
                             : "cc", "memory");
        }
        return;
    }
#endif
    int32_t acc[4] = {bp[0], bp[1], bp[2], bp[3]};
    tf_v6m_dot4(x, w, n, acc);
    for (int32_t j = 0; j < 4; j++) y[j] = tf_v6m_q(acc[j], mp[j], sp[j], rq, zp, lo, hi);
}

/* the pointwise kernel on Armv6-M: per pixel, 4 output channels at a time (then 2, then 1); the per-channel
 * constants are walked with pointers */
TF_INLINE void tf_pointwise_v6m(const int8_t *in, int8_t *out, int32_t npix, int32_t cin, int32_t cout,
                                const int8_t *w, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                int32_t zp_out, int32_t lo, int32_t hi, int32_t rq) {
    for (int32_t p = 0; p < npix; p++) {
        const int8_t *x = in + p * cin, *wp = w;
        int8_t *y = out + p * cout;
        const int32_t *bp = bias, *mp = mult, *sp = shift;
        for (int8_t *end = y + (cout & ~3); y != end; y += 4, wp += 4 * cin, bp += 4, mp += 4, sp += 4) {
            tf_v6m_pw4(x, wp, cin, bp, mp, sp, y, rq, zp_out, lo, hi);
        }
        if (cout & 2) {
            int32_t acc[2] = {bp[0], bp[1]};
            tf_v6m_dot2(x, wp, cin, acc);
            y[0] = tf_v6m_q(acc[0], mp[0], sp[0], rq, zp_out, lo, hi);
            y[1] = tf_v6m_q(acc[1], mp[1], sp[1], rq, zp_out, lo, hi);
            y += 2, wp += 2 * cin, bp += 2, mp += 2, sp += 2;
        }
        if (cout & 1) y[0] = tf_v6m_q(tf_v6m_dot1(x, wp, cin, bp[0]), mp[0], sp[0], rq, zp_out, lo, hi);
    }
}
#endif

/* 1x1 convolution, stride 1: out[p][o] = requant(bias[o] + sum_k in[p][k] * w[o][k]); zp_in folded into bias.
 * `wide` (2 * cin int32 of scratch, or NULL): on a DSP core with cin a multiple of 4, each pixel pair's inputs are
 * widened once there and reused by every output channel pair. */
TF_INLINE void tf_pointwise(const int8_t *in, int8_t *out, int32_t npix, int32_t cin, int32_t cout,
                            const int8_t *w, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                            int32_t zp_out, int32_t lo, int32_t hi, int32_t rq, int32_t *wide) {
#if TF_ARMV6M
    (void)wide;
    tf_pointwise_v6m(in, out, npix, cin, cout, w, bias, mult, shift, zp_out, lo, hi, rq);
    return;
#endif
    int32_t p = 0;
#if TF_DSP
    if (cin % 4 == 0 && npix == 1) { /* a classifier: one input (widened once where `wide`), 2 channels at a time */
        if (wide != 0) tf_widen(in, wide, cin / 4);
        int32_t o = 0;
        for (; o + 2 <= cout; o += 2) {
            int32_t a0 = bias[o], a1 = bias[o + 1];
            const int8_t *w0 = w + o * cin, *w1 = w0 + cin;
            for (int32_t k = 0; k < cin / 4; k++) {
                int32_t wa, wb;
                memcpy(&wa, w0 + 4 * k, 4);
                memcpy(&wb, w1 + 4 * k, 4);
                int32_t xv;
                memcpy(&xv, in + 4 * k, 4);
                const int32_t x0 = wide != 0 ? wide[2 * k] : __sxtb16(xv);
                const int32_t x1 = wide != 0 ? wide[2 * k + 1] : tf_sxtb16_ror8(xv);
                a0 = __smlad(x1, tf_sxtb16_ror8(wa), __smlad(x0, __sxtb16(wa), a0));
                a1 = __smlad(x1, tf_sxtb16_ror8(wb), __smlad(x0, __sxtb16(wb), a1));
            }
            out[o] = tf_clamp(tf_rq(a0, mult[o], shift[o], rq) + zp_out, lo, hi);
            out[o + 1] = tf_clamp(tf_rq(a1, mult[o + 1], shift[o + 1], rq) + zp_out, lo, hi);
        }
        for (; o < cout; o++)
            out[o] = tf_clamp(tf_rq(tf_dot(in, w + o * cin, cin, bias[o]), mult[o], shift[o], rq) + zp_out, lo, hi);
        return;
    }
    if (wide != 0 && cin % 4 == 0) {
        for (; p + 2 <= npix; p += 2) {
            const int8_t *x0 = in + p * cin, *x1 = x0 + cin;
            int8_t *y0 = out + p * cout, *y1 = y0 + cout;
            tf_widen(x0, wide, cin / 4);
            tf_widen(x1, wide + cin / 2, cin / 4);
            int32_t o = 0;
            for (; o + 2 <= cout; o += 2) {
                int32_t acc[4] = {bias[o], bias[o + 1], bias[o], bias[o + 1]};
                tf_pointwise_2x2w(wide, wide + cin / 2, w + o * cin, w + (o + 1) * cin, cin / 4, acc);
                y0[o] = tf_clamp(tf_rq(acc[0], mult[o], shift[o], rq) + zp_out, lo, hi);
                y0[o + 1] = tf_clamp(tf_rq(acc[1], mult[o + 1], shift[o + 1], rq) + zp_out, lo, hi);
                y1[o] = tf_clamp(tf_rq(acc[2], mult[o], shift[o], rq) + zp_out, lo, hi);
                y1[o + 1] = tf_clamp(tf_rq(acc[3], mult[o + 1], shift[o + 1], rq) + zp_out, lo, hi);
            }
            for (; o < cout; o++) {
                y0[o] = tf_clamp(tf_rq(tf_dot(x0, w + o * cin, cin, bias[o]), mult[o], shift[o], rq) + zp_out, lo, hi);
                y1[o] = tf_clamp(tf_rq(tf_dot(x1, w + o * cin, cin, bias[o]), mult[o], shift[o], rq) + zp_out, lo, hi);
            }
        }
    }
    for (; p + 2 <= npix; p += 2) {
        const int8_t *x0 = in + p * cin, *x1 = x0 + cin;
        int8_t *y0 = out + p * cout, *y1 = y0 + cout;
        int32_t o = 0;
        for (; o + 2 <= cout; o += 2) {
            int32_t acc[4] = {bias[o], bias[o + 1], bias[o], bias[o + 1]};
            tf_pointwise_2x2(x0, x1, w + o * cin, w + (o + 1) * cin, cin, acc);
            y0[o] = tf_clamp(tf_rq(acc[0], mult[o], shift[o], rq) + zp_out, lo, hi);
            y0[o + 1] = tf_clamp(tf_rq(acc[1], mult[o + 1], shift[o + 1], rq) + zp_out, lo, hi);
            y1[o] = tf_clamp(tf_rq(acc[2], mult[o], shift[o], rq) + zp_out, lo, hi);
            y1[o + 1] = tf_clamp(tf_rq(acc[3], mult[o + 1], shift[o + 1], rq) + zp_out, lo, hi);
        }
        for (; o < cout; o++) {
            y0[o] = tf_clamp(tf_rq(tf_dot(x0, w + o * cin, cin, bias[o]), mult[o], shift[o], rq) + zp_out, lo, hi);
            y1[o] = tf_clamp(tf_rq(tf_dot(x1, w + o * cin, cin, bias[o]), mult[o], shift[o], rq) + zp_out, lo, hi);
        }
    }
#endif
    for (; p < npix; p++) {
        const int8_t *x = in + p * cin;
        int8_t *y = out + p * cout;
        for (int32_t o = 0; o < cout; o++) {
            int32_t acc = tf_dot(x, w + o * cin, cin, bias[o]);
            y[o] = tf_clamp(tf_rq(acc, mult[o], shift[o], rq) + zp_out, lo, hi);
        }
    }
}

/* Views: a kernel reads a rectangle of its input held in a buffer whose first stored pixel is global (iy0, ix0)
 * with a row stride of `is` pixels, and writes output rows [oy0, oy0+oh) x columns [ox0, ox0+ow) into a buffer
 * whose first stored pixel is (oyb, oxb) with a row stride of `os` pixels. A layer plan passes whole tensors
 * (origins 0, strides = widths); a patch plan passes one patch's buffers. Rows and columns outside the full
 * input (h x w) are the image border's zero padding. */

/* general convolution (groups 1), weights OHWI, by im2col: two output pixels' input windows are copied into
 * `col` (2 x kp bytes of scratch; padding holds zp_in, so zp_in is folded into the bias), then every pair of output
 * channels takes the pointwise kernel's blocked dot products. kp: the window's kh*kw*cin rounded up to a multiple
 * of 4; the generator pads each weight row with zeros to kp, so the dot products need no remainder loop (the
 * column's tail bytes, whatever they hold, meet zero weights). */
TF_INLINE void tf_im2col(const int8_t *in, int32_t iy0, int32_t ix0, int32_t is, int32_t oy, int32_t ox, int32_t h,
                         int32_t w, int32_t cin, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt,
                         int32_t pl, int32_t zp_in, int8_t *col) {
    for (int32_t ky = 0; ky < kh; ky++) {
        int32_t iy = oy * sh - pt + ky;
        for (int32_t kx = 0; kx < kw; kx++, col += cin) {
            int32_t ix = ox * sw - pl + kx;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                memset(col, zp_in, (size_t)cin);
            else
                memcpy(col, in + ((iy - iy0) * is + (ix - ix0)) * cin, (size_t)cin);
        }
    }
}

TF_INLINE void tf_conv(const int8_t *in, int32_t iy0, int32_t ix0, int32_t is, int8_t *out, int32_t oy0, int32_t ox0,
                       int32_t oh, int32_t ow, int32_t oyb, int32_t oxb, int32_t os, int32_t h, int32_t w,
                       int32_t cin, int32_t cout, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt,
                       int32_t pl, const int8_t *wt, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                       int32_t zp_in, int32_t zp_out, int32_t lo, int32_t hi, int8_t *col, int32_t rq,
                       int32_t kp, int32_t *wide) {
    for (int32_t oy = oy0; oy < oy0 + oh; oy++) {
        int8_t *row = out + ((oy - oyb) * os - oxb) * cout;
        int32_t ox = ox0;
        for (; ox + 2 <= ox0 + ow; ox += 2) {
            tf_im2col(in, iy0, ix0, is, oy, ox, h, w, cin, kh, kw, sh, sw, pt, pl, zp_in, col);
            tf_im2col(in, iy0, ix0, is, oy, ox + 1, h, w, cin, kh, kw, sh, sw, pt, pl, zp_in, col + kp);
            tf_pointwise(col, row + ox * cout, 2, kp, cout, wt, bias, mult, shift, zp_out, lo, hi, rq, wide);
        }
        for (; ox < ox0 + ow; ox++) {
            tf_im2col(in, iy0, ix0, is, oy, ox, h, w, cin, kh, kw, sh, sw, pt, pl, zp_in, col);
            tf_pointwise(col, row + ox * cout, 1, kp, cout, wt, bias, mult, shift, zp_out, lo, hi, rq, wide);
        }
    }
}

/* depthwise convolution, one channel at a time through a zero-point padded plane (scratch) that holds the input
 * window of the output rectangle. Safe in place (out == in): writing output channel ch overwrites only input
 * elements of channel ch, which are already in the plane. Weights [c][kh*kw]; zp_in folded into bias. */
TF_INLINE void tf_depthwise(const int8_t *in, int32_t iy0, int32_t ix0, int32_t is, int8_t *out, int32_t oy0,
                            int32_t ox0, int32_t oh, int32_t ow, int32_t oyb, int32_t oxb, int32_t os, int32_t h,
                            int32_t w, int32_t c, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt,
                            int32_t pl, const int8_t *wt, const int32_t *bias, const int32_t *mult,
                            const int32_t *shift, int32_t zp_in, int32_t zp_out, int32_t lo, int32_t hi,
                            int8_t *plane, int32_t rq) {
    const int32_t py0 = oy0 * sh - pt, px0 = ox0 * sw - pl;
    const int32_t ph = (oh - 1) * sh + kh, pw = (ow - 1) * sw + kw;
#if TF_ARMV6M
    /* Armv6-M: the plane holds each input offset by 128 as an unsigned byte (x ^ 0x80), so a tap is one LDRB with
     * an immediate offset (LDRSB has none); the bias takes -128 * sum(w) */
    uint8_t *const up = (uint8_t *)plane;
    memset(plane, (zp_in + 128) & 0xff, (size_t)(ph * pw));
    for (int32_t ch = 0; ch < c; ch++) {
        const int32_t x_lo = px0 < 0 ? -px0 : 0, x_hi = px0 + pw > w ? w - px0 : pw;
        for (int32_t y = 0; y < ph; y++) {
            int32_t gy = py0 + y;
            if (gy < 0 || gy >= h) continue;
            const uint8_t *src = (const uint8_t *)in + ((gy - iy0) * is + (px0 - ix0 + x_lo)) * c + ch;
            tf_v6m_copy_biased(up + y * pw + x_lo, src, x_hi - x_lo, c);
        }
        int32_t k[TF_MAX_KERNEL_AREA], wsum = 0;
        for (int32_t i = 0; i < kh * kw; i++) k[i] = wt[ch * kh * kw + i], wsum += k[i];
        const int32_t b = bias[ch] - 128 * wsum, m = mult[ch], s = shift[ch], q[2] = {m, s};
        for (int32_t oy = 0; oy < oh; oy++) {
            int8_t *dst = out + ((oy0 + oy - oyb) * os + (ox0 - oxb)) * c + ch;
            const uint8_t *prow = up + (oy * sh) * pw;
            int32_t ox = 0;
            for (; ox + 4 <= ow; ox += 4, dst += 4 * c)
                tf_v6m_dw4(prow + ox * sw, k, pw, kh, kw, sw, b, q, dst, c, rq, zp_out, lo, hi);
            if ((ow - ox) & 2) {
                int32_t acc[2] = {b, b};
                tf_v6m_taps2(prow + ox * sw, k, pw, kh, kw, sw, acc);
                dst[0] = tf_v6m_q(acc[0], m, s, rq, zp_out, lo, hi);
                dst[c] = tf_v6m_q(acc[1], m, s, rq, zp_out, lo, hi);
                ox += 2, dst += 2 * c;
            }
            if (ox < ow)
                *dst = tf_v6m_q(tf_v6m_taps1(prow + ox * sw, k, pw, kh, kw, b), m, s, rq, zp_out, lo, hi);
        }
    }
    return;
#endif
    memset(plane, zp_in, (size_t)(ph * pw));
    for (int32_t ch = 0; ch < c; ch++) {
        const int32_t x_lo = px0 < 0 ? -px0 : 0, x_hi = px0 + pw > w ? w - px0 : pw; /* columns inside the map */
        for (int32_t y = 0; y < ph; y++) {
            int32_t gy = py0 + y;
            if (gy < 0 || gy >= h) continue;
            int8_t *row = plane + y * pw;
            const int8_t *src = in + ((gy - iy0) * is + (px0 - ix0)) * c + ch;
            for (int32_t x = x_lo; x < x_hi; x++) row[x] = src[x * c];
        }
        int32_t k[TF_MAX_KERNEL_AREA]; /* the channel's weights in locals: stores to `out` cannot alias them */
        for (int32_t i = 0; i < kh * kw; i++) k[i] = wt[ch * kh * kw + i];
        const int32_t b = bias[ch], m = mult[ch], s = shift[ch];
        for (int32_t oy = 0; oy < oh; oy++) {
            int8_t *dst = out + ((oy0 + oy - oyb) * os + (ox0 - oxb)) * c + ch;
            const int8_t *prow = plane + (oy * sh) * pw;
            for (int32_t ox = 0; ox < ow; ox++) {
                const int8_t *base = prow + ox * sw;
                int32_t acc = b;
#pragma GCC unroll 7
                for (int32_t ky = 0; ky < kh; ky++)
#pragma GCC unroll 7
                    for (int32_t kx = 0; kx < kw; kx++) acc += (int32_t)base[ky * pw + kx] * k[ky * kw + kx];
                dst[ox * c] = tf_clamp(tf_rq(acc, m, s, rq) + zp_out, lo, hi);
            }
        }
    }
}

/* 1x1 stride-1 convolution over a rectangle (row by row through views) */
TF_INLINE void tf_pointwise_rect(const int8_t *in, int32_t iy0, int32_t ix0, int32_t is, int8_t *out, int32_t oy0,
                                 int32_t ox0, int32_t oh, int32_t ow, int32_t oyb, int32_t oxb, int32_t os,
                                 int32_t cin, int32_t cout, const int8_t *w, const int32_t *bias,
                                 const int32_t *mult, const int32_t *shift, int32_t zp_out, int32_t lo, int32_t hi,
                                 int32_t rq, int32_t *wide) {
    for (int32_t r = 0; r < oh; r++)
        tf_pointwise(in + ((oy0 + r - iy0) * is + (ox0 - ix0)) * cin, out + ((oy0 + r - oyb) * os + (ox0 - oxb)) * cout,
                     ow, cin, cout, w, bias, mult, shift, zp_out, lo, hi, rq, wide);
}

/* one of the add's rescales: mode 2 (shift 0, |acc| < 2^30): SRDHM alone, SMMULR(2*acc, m), which is also the
 * single rounding at shift 0; else `tf_rq` (1: the short sequence with -shift - 1; 0: the general one) */
TF_INLINE int32_t tf_rq_add(int32_t acc, int32_t m, int32_t s, int32_t mode) {
    return mode == 2 ? tf_smmulr2(acc, m) : tf_rq(acc, m, s, mode);
}

#if TF_ARMV6M
/* an input rescale of the add on Armv6-M: acc = v * 2^20 (|v| <= 255) has a zero low half, so `tf_hmul31` is
 * 2*ah*mh + ((ah*ml + c16) >> 15) with ah = 16v: two multiplies (m is a constant, its halves are too) */
TF_INLINE int32_t tf_v6m_rq20(int32_t v, int32_t m, int32_t s, int32_t mode) {
    const int32_t ah = v * 16, mh = m >> 16, ml = m & 0xffff;
    if (mode == 0) return tf_requant(v * (1 << 20), m, s);
#if defined(TF_SINGLE_ROUNDING) && TF_SINGLE_ROUNDING
    if (mode == 1) return (((2 * ah * mh + ((ah * ml) >> 15)) >> s) + 1) >> 1;
#endif
    const int32_t y = 2 * ah * mh + ((ah * ml + (1 << 14)) >> 15);
    return mode == 2 ? y : (((y + (y >> 31)) >> s) + 1) >> 1;
}
#endif

/* TF Lite's int8 add: both inputs scaled up by 2^20, rescaled to a common scale, summed, rescaled to the output; rq: the three rescales' modes (tf_rq_add) in base 3 */
TF_INLINE void tf_add(const int8_t *a, const int8_t *b, int8_t *out, int32_t n, int32_t zp1, int32_t m1, int32_t sh1,
                      int32_t zp2, int32_t m2, int32_t sh2, int32_t mo, int32_t sho, int32_t zp_out, int32_t rq) {
#if TF_ARMV6M
    for (int32_t i = 0; i < n; i++) {
        int32_t x = tf_v6m_rq20((int32_t)a[i] - zp1, m1, sh1, rq % 3);
        int32_t y = tf_v6m_rq20((int32_t)b[i] - zp2, m2, sh2, rq / 3 % 3);
        if (rq / 9 == 1) /* the output rescale shifts right: the Armv6-M output stage */
            out[i] = (int8_t)tf_v6m_out(x + y, mo, sho, zp_out, -128, 127);
        else
            out[i] = tf_clamp(tf_rq_add(x + y, mo, sho, rq / 9) + zp_out, -128, 127);
    }
    return;
#endif
    for (int32_t i = 0; i < n; i++) {
        int32_t x = tf_rq_add(((int32_t)a[i] - zp1) * (1 << 20), m1, sh1, rq % 3);
        int32_t y = tf_rq_add(((int32_t)b[i] - zp2) * (1 << 20), m2, sh2, rq / 3 % 3);
        out[i] = tf_clamp(tf_rq_add(x + y, mo, sho, rq / 9) + zp_out, -128, 127);
    }
}

/* the add over a rectangle: each input through its own view */
TF_INLINE void tf_add_rect(const int8_t *a, int32_t ay0, int32_t ax0, int32_t as, const int8_t *b, int32_t by0,
                           int32_t bx0, int32_t bs, int8_t *out, int32_t oy0, int32_t ox0, int32_t oh, int32_t ow,
                           int32_t oyb, int32_t oxb, int32_t os, int32_t c, int32_t zp1, int32_t m1, int32_t sh1,
                           int32_t zp2, int32_t m2, int32_t sh2, int32_t mo, int32_t sho, int32_t zp_out,
                           int32_t rq) {
    for (int32_t r = 0; r < oh; r++)
        tf_add(a + ((oy0 + r - ay0) * as + (ox0 - ax0)) * c, b + ((oy0 + r - by0) * bs + (ox0 - bx0)) * c,
               out + ((oy0 + r - oyb) * os + (ox0 - oxb)) * c, ow * c, zp1, m1, sh1, zp2, m2, sh2, mo, sho, zp_out,
               rq);
}

/* mean over npix pixels: (m, s) is one rounding of s_in/(s_out*npix) (single) or TF Lite's integer mean (tflite) */
TF_INLINE void tf_global_avgpool(const int8_t *in, int8_t *out, int32_t npix, int32_t c, int32_t zp_in, int32_t m,
                                 int32_t s, int32_t zp_out, int32_t lo, int32_t hi) {
    for (int32_t ch = 0; ch < c; ch++) {
        int32_t acc = 0;
        for (int32_t p = 0; p < npix; p++) acc += (int32_t)in[p * c + ch];
        out[ch] = tf_clamp(tf_requant(acc - npix * zp_in, m, s) + zp_out, lo, hi);
    }
}

/* average pooling without counting padding. tfl_div (TF Lite's, input and output quantized alike): the raw sum
 * divided by the window's count of real pixels, rounded half away from zero; otherwise one rounding of the
 * multiplier chosen by that count */
TF_INLINE void tf_avgpool(const int8_t *in, int8_t *out, int32_t h, int32_t w, int32_t c, int32_t ho, int32_t wo,
                          int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt, int32_t pl,
                          const int32_t *mult, const int32_t *shift, int32_t zp_in, int32_t zp_out, int32_t lo,
                          int32_t hi, int32_t tfl_div) {
    for (int32_t oy = 0; oy < ho; oy++)
        for (int32_t ox = 0; ox < wo; ox++)
            for (int32_t ch = 0; ch < c; ch++) {
                int32_t acc = 0, count = 0;
                for (int32_t ky = 0; ky < kh; ky++) {
                    int32_t iy = oy * sh - pt + ky;
                    if (iy < 0 || iy >= h) continue;
                    for (int32_t kx = 0; kx < kw; kx++) {
                        int32_t ix = ox * sw - pl + kx;
                        if (ix < 0 || ix >= w) continue;
                        acc += (int32_t)in[(iy * w + ix) * c + ch];
                        count++;
                    }
                }
                int32_t q;
                if (tfl_div)
                    q = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                else
                    q = tf_requant_single(acc - count * zp_in, mult[count - 1], shift[count - 1]) + zp_out;
                out[(oy * wo + ox) * c + ch] = tf_clamp(q, lo, hi);
            }
}

TF_INLINE void tf_maxpool(const int8_t *in, int8_t *out, int32_t h, int32_t w, int32_t c, int32_t ho, int32_t wo,
                          int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt, int32_t pl, int32_t m,
                          int32_t s, int32_t zp_in, int32_t zp_out) {
    for (int32_t oy = 0; oy < ho; oy++)
        for (int32_t ox = 0; ox < wo; ox++)
            for (int32_t ch = 0; ch < c; ch++) {
                int32_t best = -(1 << 20);
                for (int32_t ky = 0; ky < kh; ky++) {
                    int32_t iy = oy * sh - pt + ky;
                    if (iy < 0 || iy >= h) continue;
                    for (int32_t kx = 0; kx < kw; kx++) {
                        int32_t ix = ox * sw - pl + kx;
                        if (ix < 0 || ix >= w) continue;
                        int32_t v = in[(iy * w + ix) * c + ch];
                        if (v > best) best = v;
                    }
                }
                out[(oy * wo + ox) * c + ch] = tf_clamp(tf_requant(best - zp_in, m, s) + zp_out, -128, 127);
            }
}

/* a stand-alone activation: requantize to the output's scale, clamp to the activation's range */
TF_INLINE void tf_act(const int8_t *in, int8_t *out, int32_t n, int32_t zp_in, int32_t m, int32_t s, int32_t zp_out,
                      int32_t lo, int32_t hi) {
    for (int32_t i = 0; i < n; i++) out[i] = tf_clamp(tf_requant((int32_t)in[i] - zp_in, m, s) + zp_out, lo, hi);
}

/* integer softmax over n values: e = table[max - x] (exp(-d * s_in) in Q16), q = zp_out + round(e * inv / sum) */
TF_INLINE void tf_softmax(const int8_t *in, int8_t *out, int32_t n, const int32_t *table, int64_t inv,
                          int32_t zp_out) {
    int32_t mx = -128;
    for (int32_t i = 0; i < n; i++)
        if (in[i] > mx) mx = in[i];
    int64_t total = 0;
    for (int32_t i = 0; i < n; i++) total += table[mx - in[i]];
    for (int32_t i = 0; i < n; i++) {
        int64_t q = ((int64_t)table[mx - in[i]] * inv + (total << 15)) / (total << 16) + zp_out;
        out[i] = (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
    }
}

#endif /* TF_KERNELS_H */
