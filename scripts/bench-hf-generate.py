"""Hugging Face `generate` on the bench model of `gradgym rlhf bench`, for comparison: a GPT-2
of vocabulary 512, context 64, width 128, 2 layers, 4 heads (470,528 parameters), 64 prompts of
8 random tokens, 24 new tokens sampled from the full softmax (top-k and top-p off) with the KV
cache, fp32, 2 threads. Prints the median tokens/s of 5 timed calls after a warm-up.
Run by scripts/bench-rlhf-peers.sh."""
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

torch.set_num_threads(2)
torch.manual_seed(0)
config = GPT2Config(vocab_size=512, n_positions=64, n_embd=128, n_layer=2, n_head=4,
                    bos_token_id=None, eos_token_id=None)
model = GPT2LMHeadModel(config).eval()
assert sum(p.numel() for p in model.parameters()) == 470_528
prompts = torch.randint(0, 512, (64, 8))
mask = torch.ones_like(prompts)


def call():
    with torch.no_grad():
        out = model.generate(prompts, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                             max_new_tokens=24, use_cache=True, pad_token_id=0)
    assert out.shape == (64, 32)


call()
rates = []
for _ in range(5):
    start = time.perf_counter()
    call()
    rates.append(64 * 24 / (time.perf_counter() - start))
print(f"HF generate (transformers {__import__('transformers').__version__}, torch "
      f"{torch.__version__}): {statistics.median(rates):9.0f} tokens/s")
