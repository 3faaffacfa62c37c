//! splitmix64: a seeded hash for reproducible per-item choices (dataset sampling, which
//! credits are cancelled, the mock server's tokens and injected errors).
//!
//! A leaf: it imports nothing from the rest of the crate.

/// splitmix64 of `seed` and `n`: the same pair always gives the same value.
pub fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // splitmix64's first outputs for state 0 (each call adds the golden gamma first).
        assert_eq!(mix(0, 1), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix(0, 2), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(mix(0, 3), 0x06C4_5D18_8009_454F);
        assert_ne!(mix(1, 1), mix(0, 1));
    }
}
