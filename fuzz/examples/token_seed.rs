//! Prints the token the fuzz key ring accepts at `NOW`, for the `tokens` seed corpus:
//! `cargo run --example token_seed > corpus/tokens/valid-access` (in fuzz/).

fn main() {
    print!("{}", berth_fuzz::seed_token(&berth_fuzz::key_ring()));
}
