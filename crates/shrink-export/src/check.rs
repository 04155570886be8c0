//! Which ONNX Runtime execution providers take each op an exported graph uses, from ORT's own sources (the op
//! builder factories and their support checks: `core/providers/{nnapi,coreml,qnn,xnnpack}`, read December 2026).
//! A node no provider takes runs on the CPU provider: `render` says where a graph would fall back.

use std::collections::BTreeMap;

/// The providers in table order.
pub const PROVIDERS: [&str; 5] = ["CPU", "XNNPACK", "NNAPI", "CoreML (MLProgram)", "QNN"];

/// One provider's answer for an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Yes,
    No,
    /// Taken under a condition.
    If(&'static str),
}

use Support::{If, No, Yes};

const ARITH_NNAPI: Support = If("fp32, rank <= 4");
const ARITH_COREML: Support = If("fp32/fp16 only (int64 index arithmetic stays on CPU)");

/// (domain, op, support per provider in `PROVIDERS` order).
pub const TABLE: &[(&str, &str, [Support; 5])] = &[
    ("", "Add", [Yes, No, ARITH_NNAPI, ARITH_COREML, Yes]),
    ("", "Sub", [Yes, No, ARITH_NNAPI, ARITH_COREML, Yes]),
    ("", "Mul", [Yes, No, ARITH_NNAPI, ARITH_COREML, Yes]),
    ("", "Div", [Yes, No, ARITH_NNAPI, ARITH_COREML, Yes]),
    ("", "MatMul", [Yes, If("constant 2-D B (the projections)"), If("2-D x constant 2-D, or same-rank batch matmul (attention); not 3-D x 2-D projections"), Yes, Yes]),
    ("", "Gather", [Yes, No, If("constant or int32 indices, rank <= 4"), If("fp32/int64 data"), Yes]),
    ("", "Reshape", [Yes, No, Yes, If("constant shape"), Yes]),
    ("", "Transpose", [Yes, No, Yes, Yes, Yes]),
    ("", "Softmax", [Yes, If("last axis, static"), If("rank 2 or 4"), If("static shape"), Yes]),
    ("", "LayerNormalization", [Yes, No, No, If("constant scale and bias"), Yes]),
    ("", "Erf", [Yes, No, No, Yes, No]),
    ("", "ReduceSum", [Yes, No, No, If("constant axes"), Yes]),
    ("", "Sqrt", [Yes, No, Yes, Yes, Yes]),
    ("", "Max", [Yes, No, If("two inputs"), Yes, Yes]),
    ("", "Min", [Yes, No, If("two inputs"), No, Yes]),
    ("", "ReduceMin", [Yes, No, No, If("constant axes"), If("constant axes")]),
    ("", "ReduceMax", [Yes, No, No, If("constant axes"), If("constant axes")]),
    ("", "Reciprocal", [Yes, No, No, Yes, Yes]),
    ("", "Neg", [Yes, No, Yes, If("fp32/fp16/int32"), Yes]),
    ("", "Round", [Yes, No, No, Yes, Yes]),
    ("", "Cast", [Yes, No, If("to fp32 or int32"), If("int32/int64/fp32/fp16/bool; not on a graph input"), Yes]),
    ("", "Unsqueeze", [Yes, No, If("constant axes, rank <= 4"), If("constant axes"), Yes]),
    ("", "Shape", [Yes, No, No, Yes, No]),
    ("", "Range", [Yes, No, No, Yes, No]),
    ("", "CumSum", [Yes, No, No, No, Yes]),
    ("", "Concat", [Yes, No, Yes, Yes, Yes]),
    ("", "Identity", [Yes, No, Yes, Yes, Yes]),
    ("", "DynamicQuantizeLinear", [Yes, No, No, No, No]),
    ("", "MatMulInteger", [Yes, No, No, No, No]),
    ("", "Gemm", [Yes, If("constant B"), If("constant B"), If("constant B"), Yes]),
    ("com.microsoft", "MatMulIntegerToFloat", [Yes, No, No, No, No]),
    ("", "QuantizeLinear", [Yes, If("inside QDQ groups of conv/pool/softmax only"), If("constant scale and zero point, u8"), No, Yes]),
    ("", "DequantizeLinear", [Yes, If("inside QDQ groups of conv/pool/softmax only"), If("constant scale and zero point"), No, Yes]),
    ("com.microsoft", "GatherBlockQuantized", [Yes, No, No, No, No]),
    ("com.microsoft", "MatMulNBits", [Yes, No, No, No, If("GPU backend, 4 bits, block 32, symmetric")]),
];

/// What `provider` (index into `PROVIDERS`) says about `op`; ops missing from the table are not taken.
pub fn support(domain: &str, op: &str, provider: usize) -> Support {
    TABLE.iter().find(|(d, o, _)| *d == domain && *o == op).map_or(No, |r| r.2[provider])
}

/// The op list with each provider's answer, then per provider the ops that would fall back to the CPU.
pub fn render(ops: &BTreeMap<(String, String), usize>) -> String {
    let mut s = format!("{:<34} {:>5}  {}\n", "op", "nodes", PROVIDERS[1..].join(" | "));
    let mark = |x: Support| match x {
        Yes => "yes",
        No => "no",
        If(_) => "if",
    };
    for ((d, o), n) in ops {
        let name = if d.is_empty() { o.clone() } else { format!("{d}.{o}") };
        let cols: Vec<&str> = (1..PROVIDERS.len()).map(|p| mark(support(d, o, p))).collect();
        s += &format!("{name:<34} {n:>5}  {}\n", cols.join(" | "));
    }
    let total: usize = ops.values().sum();
    for (p, name) in PROVIDERS.iter().enumerate().skip(1) {
        let falls: Vec<(&String, usize)> = ops.iter().filter(|((d, o), _)| support(d, o, p) == No).map(|((_, o), &n)| (o, n)).collect();
        let conds: Vec<String> = ops.iter().filter_map(|((d, o), _)| match support(d, o, p) {
            If(c) => Some(format!("{o}: {c}")),
            _ => None,
        }).collect();
        let fall: usize = falls.iter().map(|(_, n)| n).sum();
        s += &format!("\n{name}: takes {} of {total} nodes", total - fall);
        if !falls.is_empty() {
            let list: Vec<String> = falls.iter().map(|(o, n)| format!("{o} x{n}")).collect();
            s += &format!("; falls back to CPU for {}", list.join(", "));
        }
        if !conds.is_empty() {
            s += &format!("\n  conditions: {}", conds.join("; "));
        }
    }
    s += "\n\nNNAPI, CoreML and QNN need fixed input shapes on the device: fix batch and sequence first \
          (python -m onnxruntime.tools.make_dynamic_shape_fixed). Source: ORT's provider op builders, read December 2026.\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobile_providers_take_qdq_but_not_dynamic_int8() {
        let nnapi = PROVIDERS.iter().position(|p| *p == "NNAPI").unwrap();
        let coreml = PROVIDERS.iter().position(|p| p.starts_with("CoreML")).unwrap();
        assert_eq!(support("", "MatMulInteger", nnapi), No);
        assert_eq!(support("", "QuantizeLinear", coreml), No);
        assert!(matches!(support("", "DequantizeLinear", nnapi), If(_)));
        let ops = BTreeMap::from([(("".to_string(), "MatMulInteger".to_string()), 3), (("".into(), "Add".into()), 2)]);
        let text = render(&ops);
        assert!(text.contains("NNAPI: takes 2 of 5 nodes; falls back to CPU for MatMulInteger x3"), "{text}");
        assert!(text.contains("CPU"), "{text}");
    }
}
