//! `shape!`, the dispatch every x86 level shares from a call's rows and panels to a tile of compile-time size.

/// `shape!(f, [T], mr, [rows..], np, [panels..], (args))` calls `f::<T, mr, np>(args)` (`[]`: `f::<mr, np>`) for the
/// listed sizes: a tile's accumulators are arrays of compile-time size, so they live in registers. A level passes
/// `mr` and `np` no larger than its tile, so sizes outside the lists do not occur. Lists travel as single token trees
/// so that each rule repeats over one list only.
macro_rules! shape {
    ($f:ident, $gen:tt, $mr:expr, $rows:tt, $np:expr, [$($p:literal)*], $args:tt) => {
        match $np {
            $($p => shape!(@rows $f, $gen, $p, $mr, $rows, $args),)*
            _ => unreachable!("tile panels"),
        }
    };
    (@rows $f:ident, $gen:tt, $p:literal, $mr:expr, [$($r:literal)*], $args:tt) => {
        match $mr {
            $($r => shape!(@call $f, $gen, $r, $p, $args),)*
            _ => unreachable!("tile rows"),
        }
    };
    (@call $f:ident, [$($t:ty)?], $r:literal, $p:literal, ($($arg:expr),*)) => {
        $f::<$($t,)? $r, $p>($($arg),*)
    };
}
