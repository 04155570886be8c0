//! Library enums named by a fixed spelling (a flag's value, what config.json records): `choices!` declares the
//! enum with its table, the command line builds its value parser from the same table.

pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    /// Every value: (value, spelling, one-line help or "").
    const CHOICES: &'static [(Self, &'static str, &'static str)];

    fn name(self) -> &'static str {
        Self::CHOICES.iter().find(|c| c.0 == self).expect("every value is in CHOICES").1
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::CHOICES.iter().find(|c| c.1 == s).map(|c| c.0)
    }
}

/// `choices! { pub enum Scheme { Int8Dynamic = "int8-dynamic": "help line", Fp16 = "fp16" } }`: the enum (Clone,
/// Copy, Debug, PartialEq, Eq, plus any attributes given), each help line its variant's doc, and its `Choice` table.
#[macro_export]
macro_rules! choices {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($variant:ident = $spelling:literal $(: $help:literal)?),+ $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $(#[$m])*
        $vis enum $name {
            $($(#[doc = $help])? $variant),+
        }

        impl $crate::choice::Choice for $name {
            const CHOICES: &'static [(Self, &'static str, &'static str)] =
                &[$((Self::$variant, $spelling, $crate::choices!(@help $($help)?))),+];
        }
    };
    (@help $help:literal) => { $help };
    (@help) => { "" };
}
