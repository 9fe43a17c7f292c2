/* jd_conv_standard.h -- standard / grouped convolution through a product table, then requantization.
 * A template: a layer's .c file defines the JD_* macros (static sizes and data arrays from its header)
 * and includes this file, which expands to one function
 *     void JD_FN(const JD_CODE_T in[JD_H][JD_W][JD_C], JD_CODE_T out[JD_HO][JD_WO][JD_O]);
 * Codes are HWC (batch 1), weights [KH][KW][C / groups][O]. Padded positions read the pad code JD_PAD
 * (the code of real 0) and go through the table like every other operand. No allocation, no recursion. */
#include "jd_requant.h"

void JD_FN(const JD_CODE_T in[JD_H][JD_W][JD_C], JD_CODE_T out[JD_HO][JD_WO][JD_O])
{
    int oy, ox, o, ky, kx, c;
    for (oy = 0; oy < JD_HO; oy++) {
        for (ox = 0; ox < JD_WO; ox++) {
            for (o = 0; o < JD_O; o++) {
                const int g = o / JD_OG;                 /* the output's group */
                uint32_t acc = 0u, sum_x = 0u, sum_w = 0u;
                for (ky = 0; ky < JD_KH; ky++) {
                    const int iy = oy * JD_SH - JD_PT + ky;
                    for (kx = 0; kx < JD_KW; kx++) {
                        const int ix = ox * JD_SW - JD_PL + kx;
                        const int inside = iy >= 0 && iy < JD_H && ix >= 0 && ix < JD_W;
                        for (c = 0; c < JD_CG; c++) {
                            const int32_t x = inside ? (int32_t)in[iy][ix][g * JD_CG + c] : (int32_t)JD_PAD;
                            const int32_t w = (int32_t)JD_WEIGHTS[ky][kx][c][o];
                            acc += (uint32_t)JD_LUT[(uint8_t)w][(uint8_t)x];
                            sum_x += (uint32_t)x;
                            sum_w += (uint32_t)w;
                        }
                    }
                }
                out[oy][ox][o] = (JD_CODE_T)jd_requantize(
                    jd_zero_point_correction(acc, sum_x, sum_w, JD_XZERO, JD_WZERO[o], JD_KH * JD_KW * JD_CG),
                    JD_BIAS[o], JD_MULT[o], JD_SHIFT[o], JD_MULT_NEG[o], JD_SHIFT_NEG[o], JD_YZERO,
                    JD_ACT_MIN, JD_ACT_MAX);
            }
        }
    }
}
