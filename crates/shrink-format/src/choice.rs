//! Library enums named by a fixed spelling (a flag's value, what config.json records): `choices!` declares the
//! enum with its table; the command line builds its value parser from the same table and serde reads and writes
//! the same spelling.

pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    /// Every value: (value, spelling, one-line help or "").
    const CHOICES: &'static [(Self, &'static str, &'static str)];

    fn name(self) -> &'static str {
        Self::CHOICES.iter().find(|c| c.0 == self).expect("every value is in CHOICES").1
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::CHOICES.iter().find(|c| c.1 == s).map(|c| c.0)
    }

    /// `s` or an error listing the known spellings.
    fn parse(s: &str) -> Result<Self, crate::Error> {
        Self::from_name(s).ok_or_else(|| crate::Error::unknown("value", s, Self::CHOICES.iter().map(|c| c.1)))
    }
}

/// `choices! { pub enum Scheme { Int8Dynamic = "int8-dynamic": "help line", Fp16 = "fp16" } }`: the enum (Clone,
/// Copy, Debug, PartialEq, Eq, plus any attributes given), each help line its variant's doc, its `Choice` table, and
/// serde as the spelling.
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

        impl $crate::choice::__serde::Serialize for $name {
            fn serialize<S: $crate::choice::__serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::choice::Choice::name(*self))
            }
        }

        impl<'de> $crate::choice::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::choice::__serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as $crate::choice::__serde::Deserialize>::deserialize(d)?;
                <Self as $crate::choice::Choice>::parse(&s).map_err(<D::Error as $crate::choice::__serde::de::Error>::custom)
            }
        }
    };
    (@help $help:literal) => { $help };
    (@help) => { "" };
}

#[doc(hidden)]
pub use serde as __serde;

#[cfg(test)]
mod tests {
    use super::Choice;

    crate::choices! {
        enum Level { Low = "low", High = "high": "the top one" }
    }

    #[test]
    fn spelling_round_trips_through_serde() {
        assert_eq!(serde_json::to_string(&Level::High).unwrap(), "\"high\"");
        assert_eq!(serde_json::from_str::<Level>("\"low\"").unwrap(), Level::Low);
        let e = serde_json::from_str::<Level>("\"mid\"").unwrap_err().to_string();
        assert!(e.contains("unknown value \"mid\" (known: low, high)"), "{e}");
        assert_eq!(Level::CHOICES[1].2, "the top one");
    }
}
