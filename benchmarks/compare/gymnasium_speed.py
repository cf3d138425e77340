"""Gymnasium's own vectorised speed on this machine, for comparison with `gradgym envs bench`.

Not part of gradgym's test or main job. Run it with Gymnasium installed:

    python3 -m venv /tmp/gymvenv && /tmp/gymvenv/bin/pip install gymnasium==1.2.2 numpy
    /tmp/gymvenv/bin/python benchmarks/compare/gymnasium_speed.py

Same protocol as the gradgym bench: 64 action batches generated ahead and cycled, autoreset on
(Gymnasium's default NEXT_STEP mode), steps counted as batch steps × envs.
"""
import time, numpy as np, gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
def rate(env, n, seconds, sampler):
    env.reset(seed=0)
    acts = [sampler() for _ in range(64)]
    for k in range(64): env.step(acts[k])
    t = time.perf_counter(); steps = 0
    while time.perf_counter() - t < seconds:
        env.step(acts[steps % 64]); steps += 1
    return steps * n / (time.perf_counter() - t)
n = 4096
rng = np.random.default_rng(0)
env = CartPoleVectorEnv(num_envs=n)
print(f"Gymnasium {gym.__version__} CartPoleVectorEnv, {n} envs: {rate(env, n, 3, lambda: rng.integers(0, 2, n)) / 1e6:.1f} M steps/s")
for id_, n in [("Acrobot-v1", 64), ("Pendulum-v1", 64)]:
    env = gym.make_vec(id_, num_envs=n, vectorization_mode="sync")
    sampler = (lambda: rng.integers(0, 3, n)) if id_ == "Acrobot-v1" else (lambda: rng.uniform(-2, 2, (n, 1)).astype(np.float32))
    print(f"Gymnasium {gym.__version__} {id_} SyncVectorEnv, {n} envs: {rate(env, n, 3, sampler) / 1e6:.3f} M steps/s")
