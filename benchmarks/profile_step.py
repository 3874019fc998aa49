"""Where the time goes: torch.profiler's top operators for one training step or decode step of each model.

    python benchmarks/profile_step.py --what train --seq 1024 --batch 8 --threads 1
    python benchmarks/profile_step.py --what decode --context 8192 --batch 1 --threads 1
    python benchmarks/profile_step.py --what prefill --context 1024 --batch 1 --threads 1

Same size-matched models as the other benchmarks. train: forward + backward + AdamW. prefill: one forward over the
prompt with a dynamic cache. decode: `--steps` one-token forwards on a cache prefilled with `--context` tokens
(`--cache static` preallocates it). One untimed run first; the table lists self CPU (or CUDA) time per operator,
summed over the profiled run, and each model's total.
"""

import torch
from common import HYBRIDS, base_parser, build_models, print_header, setup
from torch.profiler import ProfilerActivity, profile
from transformers import StaticCache


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--what", choices=["train", "prefill", "decode"], default="train")
    parser.add_argument("--seq", type=int, default=1024, help="train: sequence length")
    parser.add_argument("--context", type=int, default=1024, help="prefill/decode: prompt length")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="decode: profiled one-token steps")
    parser.add_argument("--cache", choices=["dynamic", "static"], default="dynamic")
    parser.add_argument("--models", default="mingru,gru", help=f"hybrids among {sorted(HYBRIDS)}")
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    dtype = setup(args)
    print_header(f"Profile of one {args.what} step", args)
    models = build_models(args.models, args.device, dtype)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    sort_key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    for name, model in models.items():
        prepare, run = make_run(model, args)
        run(prepare())  # untimed
        state = prepare()
        with profile(activities=activities) as prof:
            run(state)
        events = prof.key_averages()
        total = sum(e.self_device_time_total if args.device == "cuda" else e.self_cpu_time_total for e in events)
        print(f"\n## {name}: total self time {total / 1e3:,.1f} ms")
        print(events.table(sort_by=sort_key, row_limit=args.rows, max_name_column_width=60))


def make_run(model, args):
    """(prepare, run): prepare() runs outside the profiler and returns the state that run(state) uses."""
    vocab = model.config.vocab_size
    if args.what == "train":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(3, vocab, (args.batch, args.seq), device=args.device)

        def train(state) -> None:
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return (lambda: None), train
    model.eval()
    prompt = torch.randint(3, vocab, (args.batch, args.context), device=args.device)

    def new_cache():
        if args.cache == "static":
            return StaticCache(config=model.config, max_cache_len=args.context + args.steps + 1)
        return None

    @torch.no_grad()
    def prefill(state=None):
        return model(input_ids=prompt, cache=new_cache(), use_cache=True, logits_to_keep=1)

    if args.what == "prefill":
        return (lambda: None), prefill

    @torch.no_grad()
    def decode_steps(state) -> None:
        cache, token = state.cache, state.logits.argmax(-1)
        for _ in range(args.steps):
            token = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1).logits.argmax(-1)

    return prefill, decode_steps


if __name__ == "__main__":
    main()
