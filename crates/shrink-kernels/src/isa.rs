//! The SIMD levels kernels run at: each architecture has a ladder of levels above the portable `Scalar` one, the
//! CPU's highest is detected once, and `SHRINK_ISA=<name>` forces a lower one. A level only names a table of
//! kernels (`crate::ops`); what each level plugs in lives with its architecture (`crate::x86`, `crate::aarch64`).

use std::sync::OnceLock;

/// Ordered within one architecture's ladder (`Scalar` below all); levels of different architectures never meet.
/// A level may be missing on a CPU that has the levels above it (AVX-VNNI: Alder Lake and Zen 5 have it, Zen 4
/// and Ice Lake have AVX-512 without it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The generic builds: plain Rust, every target.
    Scalar,
    Avx2,
    /// AVX2 plus the 256-bit vpdpbusd: only the int8 GEMM differs, every other kernel runs its AVX2 build.
    AvxVnni,
    Avx512,
    /// AVX-512 plus AMX tiles (Sapphire Rapids and later): only the int8 GEMM and attention's bf16 products
    /// differ, every other kernel runs its AVX-512 build.
    Amx,
    /// aarch64's baseline (every ARMv8-A core: Cortex-A53 up): NEON f32 kernels, int8 by widening multiplies.
    Neon,
    /// NEON plus sdot (ARMv8.2 dotprod: Cortex-A55/A76 and later, Apple M1, Neoverse N1).
    Dotprod,
    /// dotprod plus the int8 matrix multiply usmmla (ARMv8.6 i8mm: Cortex-A510/A710/X2 and later, Neoverse V1/N2,
    /// Apple M2): only the int8 GEMM differs.
    I8mm,
}

/// Every level of every architecture, indexed by `Isa as usize`.
pub(crate) const ALL: [Isa; 8] =
    [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512, Isa::Amx, Isa::Neon, Isa::Dotprod, Isa::I8mm];

#[cfg(target_arch = "aarch64")]
use crate::aarch64::{runs, LADDER};
#[cfg(target_arch = "x86_64")]
use crate::x86::{runs, LADDER};

/// Targets without SIMD builds here run the generic level only.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const LADDER: [Isa; 0] = [];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn runs(_: Isa) -> bool {
    false
}

impl Isa {
    /// The name `SHRINK_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512 => "avx512",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
            Isa::Dotprod => "dotprod",
            Isa::I8mm => "i8mm",
        }
    }

    /// Every level this CPU can run, lowest first.
    pub fn available() -> Vec<Isa> {
        levels().collect()
    }
}

/// `Scalar`, then the levels of this architecture's ladder the CPU runs.
pub(crate) fn levels() -> impl Iterator<Item = Isa> {
    std::iter::once(Isa::Scalar).chain(LADDER.into_iter().filter(|&l| runs(l)))
}

/// The highest level this CPU runs, detected once.
pub fn best() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(|| levels().last().unwrap_or(Isa::Scalar))
}

/// The level in use: the best detected, or the highest this CPU runs up to what `SHRINK_ISA` names (a name this
/// architecture does not have, or none, means the best).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let asked = std::env::var("SHRINK_ISA").ok().and_then(|v| level_named(&v));
        asked.map_or(best(), |a| levels().take_while(|&l| l <= a).last().unwrap_or(Isa::Scalar))
    })
}

/// The level of this architecture called `name`.
fn level_named(name: &str) -> Option<Isa> {
    std::iter::once(Isa::Scalar).chain(LADDER).find(|l| l.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ladder() {
        for l in std::iter::once(Isa::Scalar).chain(LADDER) {
            assert_eq!(level_named(l.name()), Some(l));
        }
        assert_eq!(level_named("no-such-level"), None);
        let levels = Isa::available();
        assert_eq!((levels[0], levels.last()), (Isa::Scalar, Some(&best())));
        assert!(levels.windows(2).all(|w| w[0] < w[1]), "{levels:?}");
        assert!(crate::ops::available().map(|o| o.isa).eq(levels), "a table per level");
        // Emulated and CI runs name the level their CPU must reach, so a detection that fails cannot pass as a
        // skipped level.
        if let Ok(want) = std::env::var("SHRINK_EXPECT_BEST") {
            assert_eq!(best().name(), want, "best level detected");
        }
    }
}
