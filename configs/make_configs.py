"""Writes configs/hybrid-gru-{tiny,small,base}/config.json from HybridGRUConfig, so the files never drift from it.

    python configs/make_configs.py          # rewrite them
    python configs/make_configs.py --check  # exit 1 if a committed file differs from what this script writes

Each file holds the architecture fields only. Values that HybridGRUConfig derives (`layer_types` from
`block_pattern`, `head_dim`, `gru_hidden_size`) are left out when they equal the derived value, so editing
`hidden_size` or `block_pattern` by hand keeps the config consistent. Load one with
`AutoConfig.from_pretrained("configs/hybrid-gru-small")` after `import hf_gru`.
"""

import argparse
import json
import sys
from pathlib import Path

from hf_gru import HybridGRUConfig

CONFIGS_DIR = Path(__file__).resolve().parent
# Special-token ids follow hf_gru.tasks.text.train_bpe_tokenizer (0 = <|endoftext|> as bos/eos, 1 = <|pad|>); the training
# script resets vocab_size and these ids from whichever tokenizer it uses.
SPECIAL_IDS = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
SPECS: dict[str, dict] = {
    # The main job's model: ~1.3M parameters, trains on 2 CPU cores in minutes. minGRU, because its recurrence is
    # one fused multiply-add per step (about 4x the classic GRU's CPU training throughput here).
    "hybrid-gru-tiny": dict(
        vocab_size=4096, hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, block_pattern="GGA", gru_variant="mingru", max_position_embeddings=1024,
    ),
    # ~20M parameters: a single GPU or a long CPU run.
    "hybrid-gru-small": dict(
        vocab_size=16384, hidden_size=384, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=6,
        num_key_value_heads=2, block_pattern="GGGA", gru_variant="mingru", max_position_embeddings=2048,
    ),
    # ~120M parameters (GPT-2 small scale), classic GRU cells.
    "hybrid-gru-base": dict(
        vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
        num_key_value_heads=4, block_pattern="GGA", gru_variant="gru", max_position_embeddings=4096,
    ),
}  # fmt: skip
ARCHITECTURE_KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "block_pattern",
    "layer_types", "gru_variant", "gru_hidden_size", "gru_conv_kernel", "bidirectional", "num_attention_heads",
    "num_key_value_heads", "head_dim", "sliding_window", "max_position_embeddings", "rope_parameters", "hidden_act",
    "rms_norm_eps", "initializer_range", "tie_word_embeddings", "attention_bias", "attention_dropout",
    "bos_token_id", "eos_token_id", "pad_token_id",
)  # fmt: skip


def config_json(spec: dict) -> str:
    """The JSON text of one config: architecture fields, minus values HybridGRUConfig derives by itself."""
    config = HybridGRUConfig(**spec, **SPECIAL_IDS)
    values = {key: getattr(config, key) for key in ARCHITECTURE_KEYS}
    derived = HybridGRUConfig(
        **{k: v for k, v in spec.items() if k not in ("layer_types", "head_dim", "gru_hidden_size")}
    )
    for key in ("layer_types", "head_dim", "gru_hidden_size"):
        if values[key] == getattr(derived, key):
            del values[key]
    return json.dumps(values, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for name, spec in SPECS.items():
        path = CONFIGS_DIR / name / "config.json"
        text = config_json(spec)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date: {stale}; run python configs/make_configs.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
