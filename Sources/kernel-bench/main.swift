import Kernels
print("kernel-bench: best ISA \(KernelISA.best)")
