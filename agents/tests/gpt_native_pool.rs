//! The native passes' buffer pool serves passes that repeat earlier ones without allocating:
//! the passes of a PPO update of the bench model, as many alive at once as in the RL stage. A
//! test binary of its own, since the pool is the process's and other tests' passes would take
//! buffers from it.

use gradgym_agents::nn::gpt::{Gpt, GptConfig};
use gradgym_agents::nn::gpt_native::{Batch, Head, NativeGpt, pool_misses, recycle};
use gradgym_envs::rng;
use tch::Device;

#[test]
fn repeated_update_passes_take_every_buffer_from_the_pool() {
    let (b, l, from) = (64usize, 31usize, 7usize);
    let r = l - from;
    let mut rng = rng::stream(3, "test/gpt-native-pool", 0);
    let lm = Gpt::new(GptConfig::bench(), Device::Cpu, &mut rng).unwrap();
    let scalar = GptConfig {
        scalar_head: true,
        ..GptConfig::bench()
    };
    let value = Gpt::new(scalar.clone(), Device::Cpu, &mut rng).unwrap();
    let (policy, value) = (NativeGpt::of(&lm), NativeGpt::of(&value));
    let (reference, reward_model) = (policy.clone(), value.clone());
    let tokens: Vec<i64> = (0..b * l).map(|i| ((i * 7919) % 512) as i64).collect();
    // The reward model reads whole rows (one token more) at their last token.
    let rows: Vec<i64> = (0..b * (l + 1))
        .map(|i| ((i * 7919) % 512) as i64)
        .collect();
    let targets: Vec<i64> = (0..b * r).map(|i| ((i * 104_729) % 512) as i64).collect();
    let d: Vec<f32> = (0..b * r).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect();
    let batch = Batch {
        tokens: &tokens,
        b,
        l,
        from,
    };
    let head = Head::Lm { targets: &targets };
    // As the RL stage runs them: the rollout's passes of the policy and the value function
    // are kept for the first gradient step while the reference and the reward model score;
    // each later epoch's policy pass is alive while the value function's runs.
    let update = || {
        let (_, pt) = policy.forward(batch, head, true, 2);
        let (_, vt) = value.forward(batch, Head::Scalar, true, 2);
        let (ro, _) = reference.forward(batch, head, false, 2);
        let whole = Batch {
            tokens: &rows,
            b,
            l: l + 1,
            from: l,
        };
        let (so, _) = reward_model.forward(whole, Head::Scalar, false, 2);
        assert_eq!((ro.main.len(), so.main.len()), (b * r, b));
        recycle(policy.backward(pt.as_ref().unwrap(), &d, None, 2));
        recycle(value.backward(vt.as_ref().unwrap(), &d, None, 2));
        drop((pt, vt));
        for _ in 1..4 {
            let (_, pt) = policy.forward(batch, head, true, 2);
            recycle(policy.backward(pt.as_ref().unwrap(), &d, None, 2));
            let (_, vt) = value.forward(batch, Head::Scalar, true, 2);
            recycle(value.backward(vt.as_ref().unwrap(), &d, None, 2));
        }
    };
    update();
    let after_first = pool_misses();
    assert!(after_first > 0, "the first update allocates its buffers");
    update();
    update();
    assert_eq!(
        pool_misses(),
        after_first,
        "later updates allocated buffers the pool should have kept"
    );
}
