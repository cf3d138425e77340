"""TRL's PPOTrainer or RLOOTrainer on the bench model of `gradgym rlhf bench`, for comparison: a
GPT-2 of vocabulary 512, context 64, width 128, 2 layers, 4 heads (470,528 parameters; reward and
value models are the same shape with a scalar head), prompts of 8 random tokens, 24 completion
tokens sampled from the full softmax (temperature 1, top-k and top-p off), fp32, 2 threads, CPU,
all models randomly initialised (nothing is downloaded). EOS and pad are token 512, outside the
vocabulary, so no completion ends early (checked: every generate call returns 24 new tokens).

--trainer ppo: trl.experimental.ppo.PPOTrainer (TRL 1.12; gone in 1.16): policy, reference,
reward and value models, 64 rollouts per update, 4 epochs of 1 minibatch, KL penalty 0.05.
--trainer rloo: trl.RLOOTrainer, the reward model as reward function, 16 prompts x k = 4 = 64
completions per update, KL penalty 0.05, --iterations gradient steps per update (default 1).

Prints 64 * 24 / (wall time of one update), the time between the `on_step_end` callbacks that
close two consecutive updates (all the trainer does in an update: batch loading, generation,
reference, reward and value scoring, advantages, every gradient step, its logging), median over
--updates updates after a warm-up one; setup is not timed. Run by scripts/bench-trl.sh."""
import argparse
import atexit
import contextlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
warnings.filterwarnings("ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning)

import torch
import transformers
import trl
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel,
                          PreTrainedTokenizerFast, TrainerCallback)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--trainer", choices=["ppo", "rloo"], required=True)
parser.add_argument("--updates", type=int, default=5, help="timed updates after one warm-up")
parser.add_argument("--iterations", type=int, default=1, help="RLOO: num_iterations")
args = parser.parse_args()

THREADS, VOCAB, PROMPT, RESPONSE, BATCH, K = 2, 512, 8, 24, 64, 4
EOS = VOCAB  # outside the models' vocabulary: never sampled, so no completion stops early
torch.set_num_threads(THREADS)
torch.manual_seed(0)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

vocab = {f"t{i}": i for i in range(VOCAB)}
vocab["<|endoftext|>"] = EOS
backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                    pad_token="<|endoftext|>", padding_side="left")


def config(**kw):
    return GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=128, n_layer=2, n_head=4,
                      bos_token_id=None, eos_token_id=None, pad_token_id=EOS, **kw)


policy = GPT2LMHeadModel(config())
assert sum(p.numel() for p in policy.parameters()) == 470_528
policy.generation_config.eos_token_id = None
policy.generation_config.bos_token_id = None
policy.generation_config.pad_token_id = EOS
reward_model = GPT2ForSequenceClassification(config(num_labels=1))
prompts = torch.randint(0, VOCAB, (BATCH, PROMPT)).tolist()

generated = []


def check_generate(model, batch):
    """Wraps model.generate to check that every call returns BATCH rows of PROMPT + RESPONSE."""
    inner = model.generate

    def generate(*a, **kw):
        out = inner(*a, **kw)
        seq = out if torch.is_tensor(out) else out.sequences
        assert seq.shape == (batch, PROMPT + RESPONSE), seq.shape
        generated.append(seq.shape[0] * (seq.shape[1] - PROMPT))
        return out

    model.generate = generate


class Clock(TrainerCallback):
    def __init__(self):
        self.ends = []

    def on_step_end(self, a, state, control, **kw):
        self.ends.append(time.perf_counter())


clock = Clock()
out_dir = tempfile.mkdtemp(prefix="bench-trl-")
atexit.register(shutil.rmtree, out_dir, True)
common = dict(output_dir=out_dir, report_to=[], save_strategy="no", eval_strategy="no",
              logging_steps=1, disable_tqdm=True, use_cpu=True, bf16=False, fp16=False,
              gradient_checkpointing=False, per_device_train_batch_size=BATCH,
              gradient_accumulation_steps=1, seed=0, dataloader_num_workers=0)

if args.trainer == "ppo":
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    name, steps_per_update = "PPOTrainer", 1
    shape = "4 epochs, 1 minibatch"
    value_model = GPT2ForSequenceClassification(config(num_labels=1))
    ref_model = GPT2LMHeadModel(config())
    ref_model.load_state_dict(policy.state_dict())
    cfg = PPOConfig(**common, num_ppo_epochs=4, num_mini_batches=1,
                    local_rollout_forward_batch_size=BATCH, response_length=RESPONSE,
                    temperature=1.0, kl_coef=0.05, stop_token_id=None, missing_eos_penalty=None,
                    num_sample_generations=0, total_episodes=BATCH * (1 + args.updates))
    trainer = PPOTrainer(args=cfg, processing_class=tokenizer, model=policy, ref_model=ref_model,
                         reward_model=reward_model, value_model=value_model,
                         train_dataset=Dataset.from_dict({"input_ids": prompts}),
                         callbacks=[clock])
    check_generate(policy, BATCH)
else:
    from trl import RLOOConfig, RLOOTrainer

    name, steps_per_update = "RLOOTrainer", args.iterations
    shape = (f"k = {K}, {BATCH // K} prompts x {K}, {args.iterations} gradient "
             f"step{'s' if args.iterations > 1 else ''} per update")
    # RLOOTrainer builds its reference model with from_pretrained(policy's name or path): save
    # the random policy locally and load it back, so that the reference starts equal to it.
    policy.save_pretrained(os.path.join(out_dir, "policy"))
    policy = GPT2LMHeadModel.from_pretrained(os.path.join(out_dir, "policy"))
    policy.generation_config.eos_token_id = None
    # Prompts as text the tokenizer maps back to the same 8 ids; the trailing space keeps the
    # prompt's last token apart from the completion's first when RLOO concatenates the two
    # strings for the reward model.
    texts = [" ".join(f"t{i}" for i in p) + " " for p in prompts]
    cfg = RLOOConfig(**common, num_generations=K, max_completion_length=RESPONSE,
                     temperature=1.0, top_k=0, top_p=1.0, beta=0.05,
                     num_iterations=args.iterations, disable_dropout=True,
                     max_steps=(1 + args.updates) * args.iterations)
    trainer = RLOOTrainer(model=policy, reward_funcs=[reward_model], args=cfg,
                          train_dataset=Dataset.from_dict({"prompt": texts}),
                          processing_class=tokenizer, reward_processing_classes=[tokenizer],
                          callbacks=[clock])
    check_generate(trainer.model, BATCH)

    def check_reward_input(module, a, kw):
        assert kw["input_ids"].shape == (BATCH, PROMPT + RESPONSE), kw["input_ids"].shape

    trainer.reward_funcs[0].register_forward_pre_hook(check_reward_input, with_kwargs=True)

for cb in (PrinterCallback, ProgressCallback):
    trainer.remove_callback(cb)
with contextlib.redirect_stdout(sys.stderr):  # PPOTrainer prints "===training policy==="
    trainer.train()

assert torch.get_num_threads() == THREADS, torch.get_num_threads()
assert not any(getattr(m, "gradient_checkpointing", False) for m in trainer.model.modules())
assert len(generated) == 1 + args.updates and set(generated) == {BATCH * RESPONSE}, generated
ends = clock.ends[steps_per_update - 1::steps_per_update]
assert len(ends) == 1 + args.updates, (len(clock.ends), steps_per_update)
rates = [BATCH * RESPONSE / (b - a) for a, b in zip(ends, ends[1:])]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"per-update tokens/s: {', '.join(f'{r:.0f}' for r in rates)}", file=sys.stderr)
print(f"TRL {name} (trl {trl.__version__}, transformers {transformers.__version__}, torch "
      f"{torch.__version__}): {statistics.median(rates):9.0f} tokens/s end to end ({shape}; "
      f"median of {len(rates)} updates), peak RSS {rss:.0f} MiB")
