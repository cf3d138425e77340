//! gradgym's GELU operator (tanh form, `agents/csrc/gelu_tanh.cpp`) gives libtorch's bits:
//! values, and gradients through autograd, on every length (the vector body and the
//! remainders of each thread's chunk), on one and two threads, at every magnitude and at the
//! special values; and a GPT's gradients through it are libtorch's.

use gradgym_agents::nn::gelu::{fast_path_calls, gelu_tanh, gelu_tanh_fused};
use tch::{Device, Kind, Tensor};

/// The float bits of a tensor; every NaN as one pattern (only NaN-ness is compared there).
fn bits(t: &Tensor) -> Vec<u32> {
    let v = Vec::<f32>::try_from(t.reshape([-1]).to_kind(Kind::Float)).unwrap();
    v.iter()
        .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
        .collect()
}

/// Positions where `a` and `b` differ.
fn differing(a: &Tensor, b: &Tensor) -> usize {
    bits(a)
        .iter()
        .zip(bits(b))
        .filter(|(x, y)| **x != *y)
        .count()
}

/// Draws, at several scales, on which libtorch's scalar code (std::tanh, for the remainder of a
/// chunk) and its vector body (Sleef's tanh) disagree, in the value or in the gradient: an
/// input made of them shows any element given to the wrong one of the two.
fn sensitive() -> Tensor {
    let before = tch::get_num_threads();
    tch::set_num_threads(1);
    tch::manual_seed(7);
    let n = 31 * 4096;
    let scales = Tensor::from_slice(&[0.05f32, 1.0, 3.0, 30.0]).repeat([n / 4]);
    let x = Tensor::randn([n], (Kind::Float, Device::Cpu)) * scales;
    let ones = x.ones_like();
    // A whole tensor on one thread: all vector body (n is a multiple of 32).
    let vector = (x.gelu("tanh"), x.gelu_backward(&ones, "tanh"));
    // Pieces of 31: all scalar code.
    let pieces = x.split(31, 0);
    let scalar = (
        Tensor::cat(
            &pieces.iter().map(|p| p.gelu("tanh")).collect::<Vec<_>>(),
            0,
        ),
        Tensor::cat(
            &pieces
                .iter()
                .map(|p| p.gelu_backward(&p.ones_like(), "tanh"))
                .collect::<Vec<_>>(),
            0,
        ),
    );
    tch::set_num_threads(before);
    let (bv, bs) = (bits(&vector.0), bits(&scalar.0));
    let (gv, gs) = (bits(&vector.1), bits(&scalar.1));
    let keep: Vec<i64> = (0..n as usize)
        .filter(|&i| bv[i] != bs[i] || gv[i] != gs[i])
        .map(|i| i as i64)
        .collect();
    if keep.len() < 100 {
        // Only where libtorch's vector body is its scalar code (its DEFAULT capability).
        assert!(!operator_expected(), "only {} sensitive draws", keep.len());
        return x;
    }
    x.index_select(0, &Tensor::from_slice(&keep))
}

/// `n` elements: the special values, then sensitive draws over and over.
fn inputs(pool: &Tensor, n: i64, shift: i64) -> Tensor {
    let m = pool.size()[0];
    let index = Tensor::from_slice(&(0..n).map(|i| (i * 7 + shift) % m).collect::<Vec<_>>());
    let x = pool.index_select(0, &index);
    let specials = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        -1e-40,
        1e30,
        -1e30,
        9.0,
        -9.0,
        1e-3,
    ];
    let k = specials.len().min(n as usize);
    x.narrow(0, 0, k as i64)
        .copy_(&Tensor::from_slice(&specials[..k]));
    x
}

#[test]
fn gelu_tanh_gives_libtorchs_values_and_gradients_bit_for_bit() {
    // Where the operator is built and the CPU has AVX2 (and libtorch may use it), the
    // operator must run, not the fallback to libtorch's own `gelu`, which would pass this test
    // by construction; its fast paths are counted below.
    let expect_fused = operator_expected();
    if expect_fused {
        assert!(
            gelu_tanh_fused(),
            "the fused operator is not in use on an AVX2 CPU"
        );
    }
    let calls_before = fast_path_calls();
    let pool = sensitive();
    let before = tch::get_num_threads();
    // Lengths: under and over the grain, chunks that end inside a vector pair, forward and
    // backward chunkings that differ (20,001: the forward splits it, the backward does not).
    let lengths = [
        1i64,
        17,
        33,
        1000,
        16_385,
        20_001,
        40_000,
        65_537,
        100_001,
        64 * 30 * 512 + 7,
        64 * 31 * 512,
    ];
    for threads in [1, 2, 3] {
        tch::set_num_threads(threads);
        for (k, &n) in lengths.iter().enumerate() {
            let x = inputs(&pool, n, k as i64);
            let up = inputs(&pool, n, 100 + k as i64)
                .clamp(-5.0, 5.0)
                .nan_to_num(0.0, None, None);
            let ours = tch::no_grad(|| gelu_tanh(&x));
            let theirs = tch::no_grad(|| x.gelu("tanh"));
            assert_eq!(
                differing(&ours, &theirs),
                0,
                "forward, {n} elements, {threads} threads"
            );
            let xa = x.detach().set_requires_grad(true);
            let xb = x.detach().set_requires_grad(true);
            let ya = gelu_tanh(&xa);
            let yb = xb.gelu("tanh");
            assert_eq!(differing(&ya, &yb), 0, "forward with a graph, {n} elements");
            let ga = Tensor::run_backward(&[(&ya * &up).sum(Kind::Float)], &[&xa], false, false);
            let gb = Tensor::run_backward(&[(&yb * &up).sum(Kind::Float)], &[&xb], false, false);
            assert_eq!(
                differing(&ga[0], &gb[0]),
                0,
                "gradient, {n} elements, {threads} threads"
            );
        }
    }
    tch::set_num_threads(before);
    if expect_fused {
        // Per length and thread count: a forward pass without a graph and one with, and its
        // backward pass, all on the fast paths.
        let (f, b) = fast_path_calls();
        let cases = 3 * lengths.len() as i64;
        assert!(
            f - calls_before.0 >= 2 * cases && b - calls_before.1 >= cases,
            "fast paths taken: {} forward, {} backward of {cases} cases",
            f - calls_before.0,
            b - calls_before.1
        );
    }
}

/// Whether this build has the operator and this CPU should run it: x86-64 Linux with AVX2,
/// libtorch's capability left alone or set to AVX2 or AVX-512.
fn operator_expected() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let capability = std::env::var("ATEN_CPU_CAPABILITY").unwrap_or_default();
        std::arch::is_x86_feature_detected!("avx2")
            && matches!(capability.to_lowercase().as_str(), "" | "avx2" | "avx512")
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// On an AVX-512 CPU the test above ran the AVX-512 kernel; the AVX2 one runs here, in a child
/// process whose libtorch is told to dispatch AVX2 kernels.
#[test]
fn the_avx2_kernel_gives_libtorchs_avx2_bits_too() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if std::env::var_os("ATEN_CPU_CAPABILITY").is_none()
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        let name = "gelu_tanh_gives_libtorchs_values_and_gradients_bit_for_bit";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1"])
            .env("ATEN_CPU_CAPABILITY", "avx2")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        return;
    }
    eprintln!("not an AVX-512 CPU under libtorch's own choice of kernels: nothing to add");
}

/// Second-order gradients (a backward pass that builds a graph) are libtorch's too.
#[test]
fn second_order_gradients_are_libtorchs() {
    let x = inputs(&sensitive(), 64 * 512, 5).clamp(-8.0, 8.0);
    let up = inputs(&sensitive(), 64 * 512, 9).clamp(-3.0, 3.0);
    let second = |ours: bool| {
        let x = x.detach().set_requires_grad(true);
        let y = if ours { gelu_tanh(&x) } else { x.gelu("tanh") };
        let g = Tensor::run_backward(&[(&y * &up).sum(Kind::Float)], &[&x], true, true);
        assert!(g[0].requires_grad(), "the gradient is differentiable");
        let h = Tensor::run_backward(&[(&g[0] * &up).sum(Kind::Float)], &[&x], false, false);
        (g[0].detach(), h[0].shallow_clone())
    };
    let (ga, ha) = second(true);
    let (gb, hb) = second(false);
    assert_eq!(differing(&ga, &gb), 0, "first order");
    assert_eq!(differing(&ha, &hb), 0, "second order");
}

#[test]
fn gelu_tanh_keeps_shape_and_falls_back_off_the_fast_path() {
    let x = inputs(&sensitive(), 6 * 7 * 8, 3).view([6, 7, 8]);
    let y = gelu_tanh(&x);
    assert_eq!(y.size(), vec![6, 7, 8]);
    // Not contiguous, and double: libtorch's own operator, same values.
    let t = x.transpose(0, 2);
    assert_eq!(differing(&gelu_tanh(&t), &t.gelu("tanh")), 0);
    let d = x.to_kind(Kind::Double);
    let yd = gelu_tanh(&d);
    assert_eq!(yd.kind(), Kind::Double);
    let f64s = |t: &Tensor| {
        Vec::<f64>::try_from(t.reshape([-1]))
            .unwrap()
            .iter()
            .map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() })
            .collect::<Vec<_>>()
    };
    assert_eq!(f64s(&yd), f64s(&d.gelu("tanh")));
}
