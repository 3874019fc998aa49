"""Translation-model generation speed at equal output lengths: HybridGRU encoder-decoder vs a parameter-matched
MarianMTModel, tokens/s and cache bytes, both in one process.

    python benchmarks/seq2seq_generate.py --threads 1           # sources 64 and 512, batch 1 and 16, 64 new tokens
    python benchmarks/seq2seq_generate.py --quick --threads 1   # smoke run, under a minute
    python benchmarks/seq2seq_generate.py --sources 512 --batches 1 --new-tokens 128 --caches dynamic,static
    python benchmarks/seq2seq_generate.py --threads 1 --variant mingru        # the hybrid with minGRU layers

The models are examples/train_translation.py's, randomly initialised (speed does not depend on the weights): width
256, 3 encoder + 3 decoder layers, 4 heads, vocabulary 4,000, tied embeddings; the hybrid with patterns GGA / GGA, the
Marian its FFN width chosen (a multiple of 16) so its parameter count is the hybrid's within 2% (checked). Each
measurement is one greedy `generate()` of a random source batch of `source` tokens per row with
`min_new_tokens == max_new_tokens`, so both models emit exactly the same number of tokens (earlier translation speed
figures compared runs of different lengths). generated tokens/s = batch x new tokens / wall time of the whole call
(encoder, cross-attention keys/values, every decoder step); decode ms/token = median gap between consecutive tokens,
stamped by a logits processor (encoder and prefill excluded). Repetitions are interleaved across the two models and
the ratios are medians of per-repetition ratios against Marian. Cache bytes are read off the returned cache: decoder
self-attention keys/values, GRU state (hybrid only), cross-attention keys/values.
"""

import itertools
import time

import torch
from common import (
    StepClock,
    base_parser,
    interleaved,
    markdown_table,
    median,
    paired_ratio,
    print_header,
    setup,
    synchronize,
    write_json,
)
from transformers import LogitsProcessorList, MarianConfig, MarianMTModel

from hf_gru import HybridGRUConfig, HybridGRUForConditionalGeneration

# examples/train_translation.py's model: width 256, 3 + 3 layers, 4 heads, its 4,000-token byte-level BPE
WIDTH, LAYERS, HEADS, VOCAB, PATTERN = 256, 3, 4, 4000, "GGA"
MAX_POSITIONS = 1024  # sources up to 512 plus the generated tokens
TARGET = (512, 1, 1.3)  # the issue: hybrid generated tokens/s >= 1.3x Marian's at source 512, batch 1


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are one parameter, counted once


def hybrid_model(
    variant: str = "gru", pattern: str = PATTERN, decoder_pattern: str = PATTERN
) -> HybridGRUForConditionalGeneration:
    config = HybridGRUConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=int(2.75 * WIDTH), num_hidden_layers=LAYERS,
        num_decoder_layers=LAYERS, block_pattern=pattern, decoder_block_pattern=decoder_pattern, gru_variant=variant,
        num_attention_heads=HEADS,
        is_encoder_decoder=True, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2,
        max_position_embeddings=MAX_POSITIONS, attn_implementation="sdpa",
    )  # fmt: skip
    return HybridGRUForConditionalGeneration(config)


def marian_config(ffn: int) -> MarianConfig:
    return MarianConfig(
        vocab_size=VOCAB, decoder_vocab_size=VOCAB, d_model=WIDTH, encoder_layers=LAYERS, decoder_layers=LAYERS,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
        max_position_embeddings=MAX_POSITIONS, pad_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        forced_eos_token_id=None, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        scale_embedding=True, attn_implementation="sdpa",
    )  # fmt: skip


def marian_model(target: int) -> MarianMTModel:
    """The Marian whose FFN width (a multiple of 16) gives the parameter count closest to `target`."""

    def count(ffn: int) -> int:
        with torch.device("meta"):
            return parameter_count(MarianMTModel(marian_config(ffn)))

    ffn = min(range(16, 8 * WIDTH + 1, 16), key=lambda f: abs(count(f) - target))
    model = MarianMTModel(marian_config(ffn))
    if abs(parameter_count(model) / target - 1) > 0.02:
        raise ValueError(f"Marian: {parameter_count(model)} parameters, more than 2% away from the hybrid's {target}.")
    return model


def split_cache_bytes(cache) -> dict[str, int]:
    """Bytes of an EncoderDecoderCache: decoder self-attention keys/values, GRU state, cross-attention keys/values.
    Bookkeeping tensors (position counters) are not state and are not counted."""
    kinds = {"keys": "attention", "values": "attention", "conv_states": "gru", "recurrent_states": "gru"}
    held = {"attention": 0, "gru": 0, "cross_attention": 0}
    for half, layers in (("self", cache.self_attention_cache.layers), ("cross", cache.cross_attention_cache.layers)):
        for layer in layers:
            for name, value in vars(layer).items():
                if name not in kinds:
                    continue
                for tensor in value.values() if isinstance(value, dict) else [value]:
                    if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                        kind = "cross_attention" if half == "cross" else kinds[name]
                        held[kind] += tensor.numel() * tensor.element_size()
    return held


def timed_generate(model, source: torch.Tensor, new_tokens: int, cache: str, device: str) -> dict:
    clock = StepClock(device)
    kwargs = {} if cache == "dynamic" else {"cache_implementation": cache}
    model._previous_max_cache_length = -1  # size a static cache to this call, not to the largest one seen
    synchronize(device)
    start = time.perf_counter()
    out = model.generate(
        source, attention_mask=torch.ones_like(source), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=False, num_beams=1, logits_processor=LogitsProcessorList([clock]), disable_compile=True,
        return_dict_in_generate=True, **kwargs,
    )  # fmt: skip
    synchronize(device)
    total = time.perf_counter() - start
    generated = out.sequences.shape[1] - 1  # minus the decoder start token
    if generated != new_tokens:
        raise RuntimeError(f"{type(model).__name__} generated {generated} tokens, not the forced {new_tokens}.")
    gaps = [b - a for a, b in itertools.pairwise(clock.stamps)]
    return {"total_s": total, "token_s": median(gaps), "cache": split_cache_bytes(out.cache)}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--sources", default="64,512", help="source lengths (tokens per row)")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--new-tokens", type=int, default=64, help="generated tokens per row (forced: min = max)")
    parser.add_argument("--caches", default="dynamic", help="dynamic and/or static, comma-separated")
    parser.add_argument("--variant", default="gru", choices=["gru", "mingru"], help="the hybrid's GRU variant")
    parser.add_argument("--pattern", default=PATTERN, help="the hybrid encoder's block pattern")
    parser.add_argument("--decoder-pattern", default=PATTERN, help="the hybrid decoder's block pattern")
    args = parser.parse_args()
    dtype = setup(args)
    if args.quick:
        args.sources, args.batches, args.new_tokens = "16,64", "1,4", 8
    info = print_header("Seq2seq generate() at equal output lengths: HybridGRU enc-dec vs MarianMTModel", args)
    hybrid = hybrid_model(args.variant, args.pattern, args.decoder_pattern)
    models = {"marian": marian_model(parameter_count(hybrid)), "hybrid": hybrid}
    for name, model in models.items():
        model.to(device=args.device, dtype=dtype).eval()
        ffn = getattr(model.config, "encoder_ffn_dim", getattr(model.config, "intermediate_size", None))
        extra = f", {args.variant}, patterns {args.pattern} / {args.decoder_pattern}" if name == "hybrid" else ""
        print(f"  {name:7s} {parameter_count(model):>10,d} parameters, FFN {ffn}{extra}")
    described = {name: parameter_count(model) for name, model in models.items()}

    rows, results = [], []
    for source_len, batch in itertools.product(map(int, args.sources.split(",")), map(int, args.batches.split(","))):
        source = torch.randint(3, VOCAB, (batch, source_len), device=args.device)
        for cache in args.caches.split(","):
            reps = args.reps or (2 if args.quick else 5)
            runs = {
                name: (lambda m=model, s=source, c=cache: timed_generate(m, s, args.new_tokens, c, args.device))
                for name, model in models.items()
            }
            print(f"  source {source_len}, batch {batch}, {cache} cache: {reps} repetitions ...", flush=True)
            with torch.no_grad():
                measured = interleaved(runs, reps, args.warmup, args.device, timer=lambda run: run())
            marian = measured["marian"]
            for name, runs_of_model in measured.items():
                total_s, token_s = median([m["total_s"] for m in runs_of_model]), median([m["token_s"] for m in runs_of_model])  # fmt: skip
                speedup = paired_ratio([m["total_s"] for m in marian], [m["total_s"] for m in runs_of_model])
                decode_speedup = paired_ratio([m["token_s"] for m in marian], [m["token_s"] for m in runs_of_model])
                held = runs_of_model[-1]["cache"]
                total_bytes = sum(held.values())
                cache_ratio = total_bytes / sum(marian[-1]["cache"].values())
                tokens_per_s = batch * args.new_tokens / total_s
                rows.append([
                    source_len, batch, cache, name, f"{tokens_per_s:,.1f}", f"{speedup:.2f}x", f"{token_s * 1e3:.2f}",
                    f"{decode_speedup:.2f}x", f"{total_bytes:,d}", f"{cache_ratio:.2f}x",
                ])  # fmt: skip
                results.append({
                    "source": source_len, "batch": batch, "cache": cache, "model": name, "new_tokens": args.new_tokens,
                    "tokens_per_s": tokens_per_s, "speedup_vs_marian": speedup, "decode_ms_per_token": token_s * 1e3,
                    "decode_speedup_vs_marian": decode_speedup, "cache_bytes": held, "cache_ratio": cache_ratio,
                    "runs": [{k: v for k, v in m.items() if k != "cache"} for m in runs_of_model],
                })  # fmt: skip
    headers = [
        "source", "batch", "cache", "model", "generated tok/s", "vs marian", "decode ms/token", "decode vs marian",
        "cache bytes", "cache vs marian",
    ]  # fmt: skip
    print()
    print(markdown_table(headers, rows))
    print()
    print(target_table(results))
    write_json(args.json, {"machine": info, "args": vars(args), "parameters": described, "results": results})


def target_table(results: list[dict]) -> str:
    source, batch, minimum = TARGET
    found = [r for r in results if (r["source"], r["batch"], r["model"]) == (source, batch, "hybrid")]
    if not found:
        return f"(target at source {source}, batch {batch} not measured in this run)"
    best = max(found, key=lambda r: r["speedup_vs_marian"])
    met = "met" if best["speedup_vs_marian"] >= minimum else "NOT met"
    measured = f"{best['speedup_vs_marian']:.2f}x ({best['cache']} cache)"
    row = [f"generated tokens/s, source {source}, batch {batch}", f">= {minimum:.2f}x", measured, met]
    return markdown_table(["target", "wanted", "measured", ""], [row])


if __name__ == "__main__":
    main()
