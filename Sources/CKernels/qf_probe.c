// A calibration loop for benchmarks: `iterations` × 16 independent vpdpbusd (64 u8·s8 multiply-adds each), the
// throughput ceiling any VNNI GEMM can reach on this core right now. Shared machines drift, so benchmarks quote
// their GOPS against this probe measured in the same run.
#include "qf_requant.h"

#if QF_X86
QF_TARGET_AVX512VNNI int32_t qf_probe_dpbusd_avx512vnni(size_t iterations) {
    __m512i acc[16];
    __m512i x = _mm512_set1_epi32(0x01010101);
    const __m512i w = _mm512_set1_epi32(0x01020304);
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_epi32(i);
    for (size_t it = 0; it < iterations; it++) {
        for (int i = 0; i < 16; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], x, w);
        __asm__ volatile("" : "+v"(x));  // keeps the loop from being folded away
    }
    __m512i sum = acc[0];
    for (int i = 1; i < 16; i++) sum = _mm512_add_epi32(sum, acc[i]);
    return _mm512_reduce_add_epi32(sum);
}
#else
int32_t qf_probe_dpbusd_avx512vnni(size_t iterations) {
    (void)iterations;
    return 0;
}
#endif
