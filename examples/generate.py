"""Generates text from any saved causal language model folder (or Hub id) with the usual decoding options.

Loads `AutoModelForCausalLM` + `AutoTokenizer` (a HybridGRU checkpoint loads through its remote code with
`--trust_remote_code`, or through hf_gru when it is installed) and prints one continuation per prompt and sample:

    python examples/generate.py --model outputs/austen --prompt "It is a truth universally acknowledged" \
        --max_new_tokens 60 --do_sample --temperature 0.8 --top_p 0.95 --seed 0

Greedy decoding is the default; `--num_beams 4` runs beam search; `--cache_implementation static` preallocates the
attention cache. Several prompts (`--prompt "One" "Two"`) run as one left-padded batch.
"""

import logging
import time
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, HfArgumentParser, set_seed

try:  # registers HybridGRU with the Auto classes, so checkpoints load without remote code when hf_gru is installed
    import hf_gru  # noqa: F401
except ImportError:
    pass

logger = logging.getLogger(__name__)


@dataclass
class GenerateArguments:
    model: str = field(metadata={"help": "A saved model folder or Hub id."})
    prompt: list[str] = field(default_factory=lambda: [""], metadata={"help": 'Prompt(s): --prompt "First" "Second".'})
    max_new_tokens: int = field(default=50)
    do_sample: bool = field(default=False, metadata={"help": "Sample (else greedy or beam search)."})
    temperature: float = field(default=1.0)
    top_k: int = field(default=50, metadata={"help": "Sample among the k most likely tokens (0: no limit)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling: the smallest set with this probability."})
    num_beams: int = field(default=1)
    num_return_sequences: int = field(default=1)
    repetition_penalty: float = field(default=1.0, metadata={"help": "> 1 discourages repeating tokens (CTRL)."})
    seed: int = field(default=0)
    cache_implementation: str | None = field(
        default=None, metadata={"help": "None (dynamic cache), 'static', or another transformers cache name."}
    )
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:1, mps, ..."})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own modelling code."})

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "num_beams", "num_return_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be positive, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise ValueError(f"--top_k must be >= 0, got {self.top_k}.")
        if self.repetition_penalty <= 0:
            raise ValueError(f"--repetition_penalty must be positive, got {self.repetition_penalty}.")
        if self.num_return_sequences > 1 and not self.do_sample and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"--num_return_sequences {self.num_return_sequences} needs --do_sample or at least as many beams "
                f"(--num_beams {self.num_beams})."
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype must be float32, bfloat16 or float16, got {self.dtype!r}.")


def load(args: GenerateArguments):
    """The model (eval mode, on `args.device`) and its tokenizer, padded on the left for batched prompts."""
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        args.model, trust_remote_code=args.trust_remote_code, dtype=getattr(torch, args.dtype)
    )
    return model.to(args.device).eval(), tokenizer


def generation_config(args: GenerateArguments, model, tokenizer) -> GenerationConfig:
    """The checkpoint's generation config updated with the command-line options."""
    config = GenerationConfig.from_dict(model.generation_config.to_dict())
    config.update(
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        num_beams=args.num_beams,
        num_return_sequences=args.num_return_sequences,
        repetition_penalty=args.repetition_penalty,
        cache_implementation=args.cache_implementation,
    )
    if args.do_sample:
        config.update(temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p)
    return config


def generate(args: GenerateArguments, model, tokenizer) -> list[str]:
    """One text per prompt and returned sequence: the prompt followed by its continuation."""
    set_seed(args.seed)
    prompts = [prompt if prompt else tokenizer.bos_token or "" for prompt in args.prompt]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(args.device)
    if inputs["input_ids"].shape[1] == 0:
        raise ValueError("The prompt is empty and the tokenizer has no bos token to start from; pass --prompt.")
    config = generation_config(args, model, tokenizer)
    with torch.inference_mode():
        output = model.generate(**inputs, generation_config=config)
    return tokenizer.batch_decode(output, skip_special_tokens=True)


def main(argv: list[str] | None = None) -> list[str]:
    logging.basicConfig(format="%(levelname)s - %(message)s", level=logging.INFO)
    (args,) = HfArgumentParser(GenerateArguments).parse_args_into_dataclasses(args=argv)
    model, tokenizer = load(args)
    start = time.perf_counter()
    texts = generate(args, model, tokenizer)
    logger.info("Generated %d sequence(s) in %.2f s", len(texts), time.perf_counter() - start)
    for i, text in enumerate(texts):
        print(f"--- {i} ---\n{text}")
    return texts


if __name__ == "__main__":
    main()
