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

/// The most parameters of a transformer's shape: 2³⁰ (4 GiB of float32 weights, 16 GiB with
/// Adam's two moments and the gradient). Each of a shape's sizes may be within [`MOST_SIZE`]
/// while their products are not: such a shape used to pass its checks and then abort the
/// process when its first tensor could not be allocated.
pub const MOST_PARAMETERS: u128 = 1 << 30;

/// The parameters of a GPT-2-shaped transformer (`crate::nn::gpt`'s layout): token and
/// position embeddings, per block two LayerNorms, the q/k/v and output projections and the 4×
/// MLP with their biases, and the final LayerNorm; a reward model's scalar head (`score`, one
/// weight per width and a bias) is left out, as it changes nothing at the cap. Counted without
/// overflow for any sizes.
pub fn gpt_parameters(vocab: usize, context: usize, width: usize, layers: usize) -> u128 {
    let (v, c, w, n) = (
        vocab as u128,
        context as u128,
        width as u128,
        layers as u128,
    );
    v * w + c * w + n * (12 * w * w + 13 * w) + 2 * w
}

/// A shape's parameters, if more than [`MOST_PARAMETERS`]: what to say, naming the fields.
pub fn too_many_parameters(
    vocab: usize,
    context: usize,
    width: usize,
    layers: usize,
) -> Option<String> {
    let n = gpt_parameters(vocab, context, width, layers);
    (n > MOST_PARAMETERS).then(|| {
        format!(
            "width {width}, {layers} layers and context {context} make {n} parameters, more than gradgym allows ({MOST_PARAMETERS}); lower the width, the layers or the context"
        )
    })
}

/// What to say when an MLP's hidden widths `hidden` (each within [`MOST_SIZE`]) make more
/// than [`MOST_PARAMETERS`] weights between them: the weights of consecutive hidden layers
/// alone, a lower bound whatever the input and output sizes. Such widths used to pass their
/// checks and then abort the process when the first weight matrix could not be allocated.
/// `copies` networks of that shape (an ensemble) count together.
pub fn mlp_too_many_parameters(hidden: &[usize], copies: usize) -> Option<String> {
    let one: u128 = hidden
        .windows(2)
        .map(|w| w[0] as u128 * w[1] as u128 + w[1] as u128)
        .sum();
    let n = one * copies as u128;
    let networks = if copies > 1 {
        format!(" in each of {copies} networks")
    } else {
        String::new()
    };
    (n > MOST_PARAMETERS).then(|| {
        format!(
            "hidden widths {hidden:?}{networks} make at least {n} parameters, more than gradgym allows ({MOST_PARAMETERS}); use narrower layers{}",
            if copies > 1 { " or fewer networks" } else { "" }
        )
    })
}

/// The first of `counts` above `most`, as the field and what is wrong with it.
pub fn over<'a>(counts: &[(&'a str, usize)], most: usize) -> Option<(&'a str, String)> {
    counts
        .iter()
        .find(|(_, v)| *v > most)
        .map(|&(f, v)| (f, format!("{v} is more than gradgym allows ({most})")))
}
