//! The SIMD level kernels run at, detected once (`SHRINK_ISA=scalar|avx2|avx512|amx` forces a lower one), and a
//! macro that compiles one plain loop body for each level so the compiler vectorises it at that width.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    /// AVX-512 plus AMX tiles (Sapphire Rapids and later): only the int8 GEMM differs, every other kernel runs its
    /// AVX-512 build.
    Amx,
}

impl Isa {
    /// Every level this CPU can run, lowest first.
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx].into_iter().filter(|&i| i <= best()).collect()
    }
}

/// The highest level this CPU runs, detected once.
pub fn best() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(detect)
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let f = |n| match n {
            "avx512" => is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl"),
            _ => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        };
        if f("avx512") {
            return if amx_int8() { Isa::Amx } else { Isa::Avx512 };
        }
        if f("avx2") {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// AMX-TILE and AMX-INT8 (CPUID leaf 7 EDX bits 24, 25), and the kernel's permission to use the tile data state,
/// which Linux grants per process on request (arch_prctl ARCH_REQ_XCOMP_PERM); without it the first tile
/// instruction faults.
#[cfg(target_arch = "x86_64")]
fn amx_int8() -> bool {
    // CPUID leaf 7 exists on every CPU with AVX-512 (the only caller).
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
}

/// AMX-BF16 (CPUID leaf 7 EDX bit 22) on a CPU whose AMX level is in use (tile permission granted); `SHRINK_ISA`
/// below `amx` turns it off with the int8 tiles.
pub fn amx_bf16() -> bool {
    static BF16: OnceLock<bool> = OnceLock::new();
    *BF16.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if isa() == Isa::Amx {
            return std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 22) != 0;
        }
        false
    })
}

/// The level in use: the best detected, or `SHRINK_ISA` if it names one this CPU supports.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = best();
        match std::env::var("SHRINK_ISA").as_deref() {
            Ok("scalar") => Isa::Scalar,
            Ok("avx2") => Isa::Avx2.min(best),
            Ok("avx512") => Isa::Avx512.min(best),
            Ok("amx") => Isa::Amx.min(best),
            _ => best,
        }
    })
}

/// `multiversion!(name, name_on; (args) [-> ret] body)` defines `name_on(isa, args)`, which runs `body` compiled for
/// `isa` (or the best level below it this CPU has), and `name(args)` = `name_on(isa(), args)`.
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $name:ident, $name_on:ident; ($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $crate::multiversion!($(#[$m])* $name, $name_on; ($($arg: $ty),*) -> () $body);
    };
    ($(#[$m:meta])* $name:ident, $name_on:ident; ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) -> $ret {
            $name_on($crate::isa::isa(), $($arg),*)
        }

        $(#[$m])*
        pub fn $name_on(level: $crate::isa::Isa, $($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn imp($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) -> $ret { imp($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret { imp($($arg),*) }
                let level = level.min($crate::isa::best());
                // SAFETY: `level` is capped at what this CPU reports.
                match level {
                    $crate::isa::Isa::Avx512 | $crate::isa::Isa::Amx => return unsafe { avx512($($arg),*) },
                    $crate::isa::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::isa::Isa::Scalar => {}
                }
            }
            imp($($arg),*)
        }
    };
}
