import CKernels

/// The ceiling for benchmarks: how many u8·s8 operations per second this core executes right now with nothing
/// but independent `vpdpbusd` instructions. Shared machines drift, so GEMM GOPS are quoted against this probe
/// measured in the same run (≈ 1,046 GOPS per core on a quiet Zen 5).
public enum ThroughputProbe {
    /// Executes `iterations × 16` `vpdpbusd` (each 64 multiply-adds = 128 operations) and returns the number of
    /// operations done; nil when the CPU has no AVX-512 VNNI.
    public static func runVNNI(iterations: Int) -> Double? {
        guard KernelISA.avx512vnni.isSupported else { return nil }
        let checksum = qf_probe_dpbusd_avx512vnni(iterations)
        return Double(iterations) * 16 * 128 + Double(checksum & 0)
    }
}
