//! A small seeded generator for the crate's randomized model tests (the
//! sync primitives' "random operations against a sequential model").
//!
//! Those tests check private state words, so they have to live inside the
//! crate, and weft keeps no dev-dependencies (a fresh
//! `cargo build --example` must compile only weft's own few dependencies):
//! hence this instead of proptest. Each case is seeded by its number, so a
//! failure is reproduced by its case number alone; the tests print the
//! case's operations, which stand in for proptest's shrinking (they are
//! short: under 64 operations).

/// Cases per model test (proptest's default).
pub(crate) const CASES: u64 = 256;

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", 2014): one add and a mix per number, every seed usable.
pub(crate) struct TestRng(u64);

impl TestRng {
    /// The generator of case `case`.
    pub(crate) fn new(case: u64) -> TestRng {
        TestRng(case)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); the modulo bias is negligible for the
    /// small `n` of the tests.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0, "TestRng::below: empty range");
        (self.next_u64() % n as u64) as usize
    }

    /// An index into `weights`, each chosen in proportion to its weight.
    pub(crate) fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut pick = self.below(total as usize) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if pick < w {
                return i;
            }
            pick -= w;
        }
        unreachable!("TestRng::weighted: pick below the total weight")
    }
}
