/* jd_conv_pointwise.h -- pointwise (1x1, one group) convolution through a product table, then
 * requantization. Template: see jd_conv_standard.h. Weights [1][1][C][O]; any stride; padding allowed
 * (DenseDepth's padded 1x1 conv2: the border outputs see only pad codes). */
#include "jd_requant.h"

void JD_FN(const JD_CODE_T in[JD_H][JD_W][JD_C], JD_CODE_T out[JD_HO][JD_WO][JD_O])
{
    int oy, ox, o, c;
    for (oy = 0; oy < JD_HO; oy++) {
        const int iy = oy * JD_SH - JD_PT;
        for (ox = 0; ox < JD_WO; ox++) {
            const int ix = ox * JD_SW - JD_PL;
            const int inside = iy >= 0 && iy < JD_H && ix >= 0 && ix < JD_W;
            for (o = 0; o < JD_O; o++) {
                uint32_t acc = 0u, sum_x = 0u, sum_w = 0u;
                for (c = 0; c < JD_C; c++) {
                    const int32_t x = inside ? (int32_t)in[iy][ix][c] : (int32_t)JD_PAD;
                    const int32_t w = (int32_t)JD_WEIGHTS[0][0][c][o];
                    acc += (uint32_t)JD_LUT[(uint8_t)w][(uint8_t)x];
                    sum_x += (uint32_t)x;
                    sum_w += (uint32_t)w;
                }
                out[oy][ox][o] = (JD_CODE_T)jd_requantize(
                    jd_zero_point_correction(acc, sum_x, sum_w, JD_XZERO, JD_WZERO[o], JD_C),
                    JD_BIAS[o], JD_MULT[o], JD_SHIFT[o], JD_MULT_NEG[o], JD_SHIFT_NEG[o], JD_YZERO,
                    JD_ACT_MIN, JD_ACT_MAX);
            }
        }
    }
}
