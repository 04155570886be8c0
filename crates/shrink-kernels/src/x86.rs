//! x86-64: its levels, what the CPU runs of them, and what each plugs into a table over the generic builds.

use std::sync::OnceLock;

use crate::isa::Isa;
use crate::ops::{Loops, Ops};
use crate::{activation, bf16, qgemm, sgemm};

/// The levels above `Scalar`, lowest first; each needs AVX2, AMX needs AVX-512, and AVX-VNNI stands alone.
pub(crate) const LADDER: [Isa; 4] = [Isa::Avx2, Isa::AvxVnni, Isa::Avx512, Isa::Amx];

/// The CPU runs `level`'s builds (and the OS lets it: AMX tiles need a per-process grant).
pub(crate) fn runs(level: Isa) -> bool {
    match level {
        Isa::Scalar => true,
        Isa::Avx2 => avx2(),
        Isa::AvxVnni => avx2() && avx_vnni(),
        Isa::Avx512 => {
            avx2()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl")
        }
        Isa::Amx => vnni() && amx_int8(),
        Isa::Neon | Isa::Dotprod | Isa::I8mm => false,
    }
}

fn avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// The VEX (256-bit) vpdpbusd.
fn avx_vnni() -> bool {
    is_x86_feature_detected!("avxvnni")
}

/// vpdpbusd: the int8 kernels of the AVX-512 level need it (plain AVX-512BW keeps the AVX2 ones).
fn vnni() -> bool {
    is_x86_feature_detected!("avx512vnni")
}

/// Overwrites the generic entries of `ops` with those of every x86 level up to `level`, lowest first, as far as
/// the CPU has each entry's features (an AVX-512 level on a CPU without AVX-VNNI skips its entry). `level` runs
/// here (`crate::ops::at` checks).
pub(crate) fn plug(ops: &mut Ops, level: Isa) {
    if level >= Isa::Avx2 {
        ops.sgemm = sgemm::x86::avx2::KERNEL;
        ops.sgemm_narrow = sgemm::x86::avx2::KERNEL;
        ops.qgemm = qgemm::x86::avx2::KERNELS;
        ops.loops = Loops::avx2();
    }
    if level >= Isa::AvxVnni && avx_vnni() {
        ops.qgemm = qgemm::x86::avxvnni::KERNELS;
    }
    if level >= Isa::Avx512 {
        ops.sgemm = sgemm::x86::avx512::KERNEL;
        ops.sgemm_narrow = sgemm::x86::avx512::NARROW;
        if vnni() {
            ops.qgemm = qgemm::x86::avx512::KERNELS;
        }
        ops.loops = Loops::avx512();
        if is_x86_feature_detected!("avx512bf16") {
            ops.loops.softmax_rows_bf16 = activation::x86::avx512bf16::softmax_rows_bf16;
        }
    }
    if level >= Isa::Amx {
        ops.qgemm = qgemm::x86::amx::KERNELS;
        if amx_bf16() {
            ops.gemm_bf16 = Some(bf16::x86::amx::gemm);
        }
    }
}

/// AMX-TILE and AMX-INT8 (CPUID leaf 7 EDX bits 24, 25), and the kernel's permission to use the tile data state,
/// which Linux grants per process on request (arch_prctl ARCH_REQ_XCOMP_PERM); without it the first tile
/// instruction faults. Asked once.
fn amx_int8() -> bool {
    static AMX: OnceLock<bool> = OnceLock::new();
    *AMX.get_or_init(|| {
        if !is_x86_feature_detected!("avx512f") {
            return false; // CPUID leaf 7 exists on every CPU with AVX-512
        }
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        if edx & (0b11 << 24) != 0b11 << 24 {
            return false;
        }
        #[cfg(target_os = "linux")]
        {
            const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
            const XFEATURE_XTILEDATA: i64 = 18;
            const SYS_ARCH_PRCTL: i64 = 158;
            let ret: i64;
            // SAFETY: arch_prctl only changes this process's permitted xsave features; the syscall clobbers rcx, r11.
            unsafe {
                std::arch::asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM,
                    in("rsi") XFEATURE_XTILEDATA, lateout("rcx") _, lateout("r11") _, options(nostack));
            }
            ret == 0
        }
        #[cfg(not(target_os = "linux"))]
        false
    })
}

/// AMX-BF16 (CPUID leaf 7 EDX bit 22), on a CPU whose AMX level runs.
fn amx_bf16() -> bool {
    std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 22) != 0
}

#[cfg(test)]
mod tests {
    crate::kernel_tests!(avx2, crate::isa::Isa::Avx2);
    crate::kernel_tests!(avxvnni, crate::isa::Isa::AvxVnni);
    crate::kernel_tests!(avx512, crate::isa::Isa::Avx512);
    crate::kernel_tests!(amx, crate::isa::Isa::Amx);
}
