//! The table of storage formats a Linear can have: what config.json's `quantization.layers` names, what each
//! stores (`Storage`) and how its input reaches the GEMM (`Acts`). Each storage has one typed struct with the
//! reference encode/decode (`int8.rs`, `int4.rs`, `sparse.rs`; activations `act.rs`).

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::int4;
use crate::Error;

/// How a weight is stored in the folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `NAME.weight` F32 [N, K].
    F32,
    /// `NAME.weight` F16 [N, K], widened to f32 at load.
    F16,
    /// `int8::Int8Weight`: `NAME.weight` I8 [N, K] + `NAME.weight_scale` F32 [N].
    I8,
    /// `int4::Int4Weight`: `NAME.weight` U8 [N, K/2] + `NAME.weight_scale` F16 [N, K/group].
    I4 { group: usize },
    /// `sparse::SparseWeight`: pruned f32, only the kept values and where they sit. Runs on the sparse kernel.
    Sparse,
}

/// How the input of a Linear is fed to its GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Acts {
    F32,
    /// u8 per token, scale and zero point from each token's range at run time.
    Dynamic,
    /// u8 on one grid fixed at calibration (`act::ActGrid`: `NAME.input_scale`, `NAME.input_zero`).
    Static,
}

/// A storage format by name. Any format with int8 activations may also carry `NAME.smooth` F32 [K] (SmoothQuant,
/// `act::Smooth`): inputs are divided by it before quantizing and the stored weights were multiplied by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub name: &'static str,
    pub storage: Storage,
    pub acts: Acts,
    /// Bits per stored weight value (scales not counted).
    pub bits: u32,
}

const fn format(name: &'static str, storage: Storage, acts: Acts, bits: u32) -> Format {
    Format { name, storage, acts, bits }
}

pub const FORMATS: [Format; 14] = [
    format("fp32", Storage::F32, Acts::F32, 32),
    format("fp16", Storage::F16, Acts::F32, 16),
    format("int8", Storage::I8, Acts::Dynamic, 8),
    format("int8-static", Storage::I8, Acts::Static, 8),
    format("int4-g32", Storage::I4 { group: 32 }, Acts::Dynamic, 4),
    format("int4-g64", Storage::I4 { group: 64 }, Acts::Dynamic, 4),
    format("int4-g128", Storage::I4 { group: 128 }, Acts::Dynamic, 4),
    // Weight-only: int4 on disk, widened to f32 at load (small files; speed of fp32).
    format("int4-g32-f32act", Storage::I4 { group: 32 }, Acts::F32, 4),
    format("int4-g64-f32act", Storage::I4 { group: 64 }, Acts::F32, 4),
    format("int4-g128-f32act", Storage::I4 { group: 128 }, Acts::F32, 4),
    // int4 weights with int8-static's activations (input_scale / input_zero): what `shrink qat` trains for.
    format("int4-g32-static", Storage::I4 { group: 32 }, Acts::Static, 4),
    format("int4-g64-static", Storage::I4 { group: 64 }, Acts::Static, 4),
    format("int4-g128-static", Storage::I4 { group: 128 }, Acts::Static, 4),
    format("sparse", Storage::Sparse, Acts::F32, 32),
];
const _: () = assert!(int4::GROUPS.len() == 3, "one int4 format per group size");

impl Format {
    pub fn parse(name: &str) -> Result<Self, Error> {
        FORMATS.iter().find(|f| f.name == name).copied().ok_or_else(|| Error::unknown("weight format", name, FORMATS.iter().map(|f| f.name)))
    }

    pub const FP32: Format = FORMATS[0];
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Format::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// How the word embedding table is stored (config.json `quantization.embeddings`). Rows are looked up, never
/// multiplied, so each row is one channel: int8 per row, int4 per row in groups along C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    F32,
    /// Widened per looked-up row.
    F16,
    /// `int8::Int8Weight` with N = V rows.
    Int8,
    /// `int4::Int4Weight` with N = V rows.
    Int4 { group: usize },
}

impl TableFormat {
    pub fn name(self) -> String {
        match self {
            Self::F32 => "fp32".into(),
            Self::F16 => "fp16".into(),
            Self::Int8 => "int8".into(),
            Self::Int4 { group } => format!("int4-g{group}"),
        }
    }

    pub const ALL: [TableFormat; 6] = [
        Self::F32,
        Self::F16,
        Self::Int8,
        Self::Int4 { group: int4::GROUPS[0] },
        Self::Int4 { group: int4::GROUPS[1] },
        Self::Int4 { group: int4::GROUPS[2] },
    ];

    pub fn parse(name: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|t| t.name() == name).ok_or_else(|| {
            let known: Vec<String> = Self::ALL.iter().map(|t| t.name()).collect();
            Error::unknown("embedding storage", name, known.iter().map(String::as_str))
        })
    }
}

impl Serialize for TableFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for TableFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TableFormat::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in FORMATS {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<Format>(&json).unwrap(), f);
        }
        for t in [TableFormat::F32, TableFormat::F16, TableFormat::Int8, TableFormat::Int4 { group: 64 }] {
            assert_eq!(TableFormat::parse(&t.name()), Ok(t));
        }
        assert!(Format::parse("int3").unwrap_err().to_string().contains("unknown weight format \"int3\" (known: fp32, fp16"));
        let e = TableFormat::parse("int4-g48").unwrap_err().to_string();
        assert_eq!(e, "unknown embedding storage \"int4-g48\" (known: fp32, fp16, int8, int4-g32, int4-g64, int4-g128)");
    }
}
