/* jd_requant.h -- jaxdepth's integer requantization (TFLite / gemmlowp fixed point) and the unsigned
 * zero-point correction, as static inline C99 functions. Bit-exact with jaxdepth.quant.requant.
 *
 *   v    = acc + bias[o]                                   (int32, modulo 2^32)
 *   r    = MultiplyByQuantizedMultiplier(v, M, shift)      (M, shift = the negative pair when v < 0)
 *        = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(SatShl(v, max(shift, 0)), M), max(-shift, 0))
 *   code = clamp(r + z_y, act_min, act_max)                (the activation is the clamp bounds)
 *
 * Assumes two's complement with arithmetic right shift of negative values and modulo conversion of
 * out-of-range values to int32_t (implementation-defined in C99; true of gcc, clang, MSVC and HLS tools).
 */
#ifndef JD_REQUANT_H
#define JD_REQUANT_H

#include <stdint.h>

/* round(a * b / 2^31), ties toward +infinity; INT32_MAX for INT32_MIN * INT32_MIN */
static inline int32_t jd_srdhm(int32_t a, int32_t b)
{
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));   /* C division truncates toward zero */
}

/* round(x / 2^n), ties away from zero; 0 <= n <= 31 */
static inline int32_t jd_rdbpot(int32_t x, int32_t n)
{
    const int32_t mask = (int32_t)(((int64_t)1 << n) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> n) + (remainder > threshold ? 1 : 0);
}

/* x * 2^l saturated to int32; 0 <= l <= 30 */
static inline int32_t jd_sat_shl(int32_t x, int32_t l)
{
    const int64_t v = (int64_t)x * ((int64_t)1 << l);
    return v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : (int32_t)v);
}

/* real factor M * 2^(shift - 31) applied to x */
static inline int32_t jd_mbqm(int32_t x, int32_t m, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return jd_rdbpot(jd_srdhm(jd_sat_shl(x, left), m), right);
}

/* unsigned (affine) layers: sum (w - z_w)(x - z_x) from the table sum and the code sums, modulo 2^32;
 * K = taps per output (KH * KW * C / groups). Signed layers have z_x = z_w = 0: acc unchanged. */
static inline int32_t jd_zero_point_correction(uint32_t acc, uint32_t sum_x, uint32_t sum_w, int32_t z_x,
                                               int32_t z_w, int32_t k)
{
    const uint32_t zx = (uint32_t)z_x, zw = (uint32_t)z_w;
    return (int32_t)(acc - zx * sum_w - zw * sum_x + (uint32_t)k * zx * zw);
}

static inline int32_t jd_requantize(int32_t acc, int32_t bias, int32_t m, int32_t shift, int32_t m_neg,
                                    int32_t shift_neg, int32_t z_y, int32_t act_min, int32_t act_max)
{
    const int32_t v = (int32_t)((uint32_t)acc + (uint32_t)bias);
    const int32_t r = v >= 0 ? jd_mbqm(v, m, shift) : jd_mbqm(v, m_neg, shift_neg);
    const int64_t code = (int64_t)r + z_y;
    return code < act_min ? act_min : (code > act_max ? act_max : (int32_t)code);
}

#endif /* JD_REQUANT_H */
