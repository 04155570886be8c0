//! `kernel_tests!(name, level)`: the test suite every level's table instantiates (the generic one in `ops`, each
//! architecture's in its own module): a module `name` with one test per family, each comparing that table's
//! kernels with the family's reference, exactly where the integers must match, else under the family's named
//! budgets. A level this CPU does not run is reported and skipped.

#[macro_export]
#[doc(hidden)]
macro_rules! kernel_tests {
    ($name:ident, $level:expr) => {
        mod $name {
            $crate::kernel_tests!(@tests $level;
                sgemm_matches_reference => $crate::sgemm::tests::matches_reference,
                sgemm_strided_and_transposed => $crate::sgemm::tests::strided_and_transposed,
                sgemm_blocks_match_reference => $crate::sgemm::tests::blocks_match_reference,
                qgemm_quantize_matches_generic => $crate::qgemm::tests::quantize_matches_generic,
                qgemm_i8_bit_exact => $crate::qgemm::tests::i8_matches_reference,
                qgemm_i4_bit_exact => $crate::qgemm::tests::i4_matches_reference,
                qgemm_extremes_bit_exact => $crate::qgemm::tests::extremes_match_reference,
                qgemm_threads_bit_exact => $crate::qgemm::tests::threads_match_single_thread,
                spmm_matches_reference => $crate::spmm::tests::matches_reference,
                activation_within_budgets => $crate::activation::tests::matches_reference,
                softmax_bf16_within_budgets => $crate::activation::tests::softmax_bf16_matches_f64,
                softmax_online_within_budget => $crate::activation::tests::softmax_online_matches_f64,
                bf16_packing_and_gemm => $crate::bf16::tests::matches_reference,
                dropout_bit_exact => $crate::dropout::tests::matches_reference,
            );
        }
    };
    (@tests $level:expr; $($test:ident => $check:path),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                match $crate::ops::at($level) {
                    Some(ops) => $check(ops),
                    None => eprintln!("{:?} not run: this CPU lacks it", $level),
                }
            }
        )*
    };
}
