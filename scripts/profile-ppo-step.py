"""Where one PPO epoch's time goes on the bench model of `gradgym rlhf bench`, by libtorch operator.

The same libtorch operators on the same shapes as gradgym's update (agents/src/nn/gpt.rs and
agents/src/rlhf/learner.rs): a 2-layer, width-128, 4-head GPT over 512 tokens, 64 rows of an
8-token prompt and 24 response tokens, the last block run from the prompt's last position on,
the tied unembedding, log-softmax and gather, the clipped surrogate, backward, gradient-norm
clipping and Adam for the policy; the same body with a scalar head and the clipped value loss for
the value function. Python's dispatch costs more per operator than gradgym's Rust calls, so the
many small operators (Adam's, above all) weigh more here than in gradgym; the kernels' own times
(matrix products, GELU, attention, LayerNorm) are libtorch's either way.

Run with the libtorch cache's Python (scripts/setup-libtorch.sh made it):
    ~/.cache/gradgym/torch-2.11.0/bin/python scripts/profile-ppo-step.py
"""

import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

torch.set_num_threads(2)
torch.manual_seed(0)
VOCAB, CONTEXT, WIDTH, LAYERS, HEADS = 512, 64, 128, 2, 4
ROWS, PROMPT, RESPONSE = 64, 8, 24


def model(scalar_head):
    p = {
        "wte": torch.randn(VOCAB, WIDTH) * 0.02,
        "wpe": torch.randn(CONTEXT, WIDTH) * 0.02,
        "ln_f.w": torch.ones(WIDTH),
        "ln_f.b": torch.zeros(WIDTH),
    }
    for i in range(LAYERS):
        for name, shape in [
            ("ln_1.w", [WIDTH]), ("ln_1.b", [WIDTH]),
            ("c_attn.w", [3 * WIDTH, WIDTH]), ("c_attn.b", [3 * WIDTH]),
            ("attn_proj.w", [WIDTH, WIDTH]), ("attn_proj.b", [WIDTH]),
            ("ln_2.w", [WIDTH]), ("ln_2.b", [WIDTH]),
            ("c_fc.w", [4 * WIDTH, WIDTH]), ("c_fc.b", [4 * WIDTH]),
            ("mlp_proj.w", [WIDTH, 4 * WIDTH]), ("mlp_proj.b", [WIDTH]),
        ]:
            init = torch.ones if name.startswith("ln") and name.endswith(".w") else torch.zeros
            p[f"{i}.{name}"] = torch.randn(shape) * 0.02 if name.endswith(".w") and not name.startswith("ln") else init(shape)
    if scalar_head:
        p["score.w"] = torch.randn(1, WIDTH) * 0.02
        p["score.b"] = torch.zeros(1)
    for v in p.values():
        v.requires_grad_(True)
    return p


def hidden_from(p, tokens, start):
    """The final hidden states of positions start.. (gradgym's Gpt::hidden_from)."""
    b, t = tokens.shape
    x = p["wte"].index_select(0, tokens.reshape(-1)).view(b, t, WIDTH) + p["wpe"][:t]
    for i in range(LAYERS):
        a = F.layer_norm(x, [WIDTH], p[f"{i}.ln_1.w"], p[f"{i}.ln_1.b"], 1e-5)
        q, k, v = F.linear(a, p[f"{i}.c_attn.w"], p[f"{i}.c_attn.b"]).split(WIDTH, 2)
        q, k, v = [z.view(b, t, HEADS, WIDTH // HEADS).transpose(1, 2) for z in (q, k, v)]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, WIDTH)
        if i == LAYERS - 1:
            y, x = y[:, start:], x[:, start:]
        x = x + F.linear(y, p[f"{i}.attn_proj.w"], p[f"{i}.attn_proj.b"])
        h = F.layer_norm(x, [WIDTH], p[f"{i}.ln_2.w"], p[f"{i}.ln_2.b"], 1e-5)
        m = F.gelu(F.linear(h, p[f"{i}.c_fc.w"], p[f"{i}.c_fc.b"]), approximate="tanh")
        x = x + F.linear(m, p[f"{i}.mlp_proj.w"], p[f"{i}.mlp_proj.b"])
    return F.layer_norm(x, [WIDTH], p["ln_f.w"], p["ln_f.b"], 1e-5)


policy, value = model(False), model(True)
policy_opt = torch.optim.Adam(policy.values(), lr=1e-5)
value_opt = torch.optim.Adam(value.values(), lr=1e-5)
tokens = torch.randint(0, VOCAB, (ROWS, PROMPT + RESPONSE))
mask = torch.ones(ROWS, RESPONSE, dtype=torch.bool)
inputs, response = tokens[:, :-1], tokens[:, PROMPT:]
adv, old_lp, returns, old_v = [z.masked_select(mask) for z in (
    torch.randn(ROWS, RESPONSE), torch.randn(ROWS, RESPONSE) - 6,
    torch.randn(ROWS, RESPONSE), torch.randn(ROWS, RESPONSE))]


def epoch():
    """One of PPO's epochs with one minibatch: a policy step, then a value step."""
    logits = hidden_from(policy, inputs, PROMPT - 1).matmul(policy["wte"].t())
    lp = logits.log_softmax(-1).gather(2, response.unsqueeze(-1)).squeeze(-1).masked_select(mask)
    ratio = (lp - old_lp).exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
    policy_opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.values(), 1.0)
    policy_opt.step()
    h = hidden_from(value, inputs, PROMPT - 1)
    v = F.linear(h, value["score.w"], value["score.b"]).squeeze(-1).masked_select(mask)
    clipped = old_v + (v - old_v).clamp(-0.2, 0.2)
    vloss = 0.5 * torch.max((v - returns) ** 2, (clipped - returns) ** 2).mean() * 0.1
    value_opt.zero_grad()
    vloss.backward()
    torch.nn.utils.clip_grad_norm_(value.values(), 1.0)
    value_opt.step()


for _ in range(5):
    epoch()
start = time.perf_counter()
for _ in range(20):
    epoch()
print(f"one epoch (policy and value steps): {(time.perf_counter() - start) / 20 * 1e3:.1f} ms, no profiler")

with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(10):
        epoch()
groups = {
    "matrix products (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "GELU (tanh form), forward and backward": ("aten::gelu", "aten::gelu_backward"),
    "attention (fused kernel), forward and backward": (
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "LayerNorm, forward and backward": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "log-softmax, forward and backward": ("aten::_log_softmax", "aten::_log_softmax_backward_data"),
}
events = prof.key_averages()
total = sum(e.self_cpu_time_total for e in events)
rest = total
print(f"operators' own time over 10 epochs: {total / 1e3:.0f} ms (with the profiler)")
for label, names in groups.items():
    t = sum(e.self_cpu_time_total for e in events if e.key in names)
    rest -= t
    print(f"  {label:48s} {t / 1e3:7.1f} ms  {100 * t / total:5.1f}%")
print(f"  {'everything else (copies, fills, Adam, clipping, ...)':48s} {rest / 1e3:7.1f} ms  {100 * rest / total:5.1f}%")
