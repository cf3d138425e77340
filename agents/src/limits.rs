//! The most gradgym accepts of the counts in its configs, and the check that names the first
//! one past its limit. A leaf module: the configs and the model's shape both use it.

/// The most gradgym accepts of a count that sizes buffers (a batch, a width, a number of
/// samples): far above any run of this scale, and low enough that no product of two of them
/// overflows an allocation's size (a panic, not an error).
pub const MOST_SIZE: usize = 1 << 24;
/// The most of a count of steps (steps, epochs, updates): its products with sizes stay far
/// from overflowing.
pub const MOST_STEPS: usize = 1 << 32;
/// The most threads: libtorch takes a 32-bit count, and no machine has this many cores.
pub const MOST_THREADS: usize = 4096;

/// The first of `counts` above `most`, as the field and what is wrong with it.
pub fn over<'a>(counts: &[(&'a str, usize)], most: usize) -> Option<(&'a str, String)> {
    counts
        .iter()
        .find(|(_, v)| *v > most)
        .map(|&(f, v)| (f, format!("{v} is more than gradgym allows ({most})")))
}
