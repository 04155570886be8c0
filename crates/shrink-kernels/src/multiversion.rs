//! `multiversion!`: one plain loop body compiled once per SIMD level, so the compiler vectorises it at that width;
//! the table (`crate::ops::Loops`) picks the build a level runs.

/// `multiversion!(vis name, name_on; (args) [-> ret] body)` defines
/// - `mod name` with the builds: `generic` (every target) and, on x86-64, `avx2` and `avx512` (unsafe: only for a
///   CPU with their features), and `Ptr`, the type of a pointer to one;
/// - `name_on(ops, args)`, the build `ops` holds (its field `loops.name`), and `name(args)` at the level in use.
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis $name:ident, $name_on:ident; ($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $crate::multiversion!($(#[$m])* $vis $name, $name_on; ($($arg: $ty),*) -> () $body);
    };
    ($(#[$m:meta])* $vis:vis $name:ident, $name_on:ident; ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            $name_on($crate::ops::ops(), $($arg),*)
        }

        $(#[$m])*
        $vis fn $name_on(ops: &$crate::ops::Ops, $($arg: $ty),*) -> $ret {
            // SAFETY: a table holds only builds whose features its CPU has (`crate::ops`).
            unsafe { (ops.loops.$name)($($arg),*) }
        }

        /// The builds of the function of this name, one per level.
        pub(crate) mod $name {
            #[allow(unused_imports)]
            use super::*;

            pub(crate) type Ptr = unsafe fn($($ty),*) -> $ret;

            #[inline(always)]
            fn imp($($arg: $ty),*) -> $ret $body

            pub(crate) fn generic($($arg: $ty),*) -> $ret {
                imp($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            pub(crate) unsafe fn avx2($($arg: $ty),*) -> $ret {
                imp($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            pub(crate) unsafe fn avx512($($arg: $ty),*) -> $ret {
                imp($($arg),*)
            }
        }
    };
}
