"""A checkpoint saved by hf_gru 0.1 with the flat layout still loads and gives the logits it gave then: through
hf_gru's registered classes, and through its own saved code in a process without hf_gru.

`tests/fixtures/hybrid_gru_flat_layout.tar.gz` is that checkpoint (a tiny 3-layer GAG causal LM, its `auto_map`
naming `modeling_hybrid_gru....`, saved by main at 924c099) plus `expected_logits.json`, the logits of one input then.
It is an archive so that git never takes its copies of the old modules for the moved ones.
"""

import json
import tarfile

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from hf_gru import HybridGRUForCausalLM
from tests.helpers import REPO, assert_close, run_without_hf_gru

ARCHIVE = REPO / "tests" / "fixtures" / "hybrid_gru_flat_layout.tar.gz"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("flat_layout")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(root, filter="data")
    return root / "hybrid_gru_flat_layout"


def expected(checkpoint):
    saved = json.loads((checkpoint / "expected_logits.json").read_text())
    return torch.tensor(saved["input_ids"]), torch.tensor(saved["logits"])


def test_the_fixture_is_a_flat_layout_checkpoint(checkpoint):
    auto_map = json.loads((checkpoint / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCausalLM"] == "modeling_hybrid_gru.HybridGRUForCausalLM"
    assert (checkpoint / "modeling_hybrid_gru.py").is_file()


@pytest.mark.parametrize("trust_remote_code", [False, True])
def test_flat_layout_checkpoint_loads_with_hf_gru_installed(checkpoint, trust_remote_code):
    input_ids, logits = expected(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=trust_remote_code).eval()
    # transformers 5.24 prefers a class registered in the process over a checkpoint's code: hf_gru's, either way.
    assert type(model) is HybridGRUForCausalLM
    with torch.no_grad():
        assert_close(model(input_ids).logits, logits, atol=1e-5, msg="flat-layout checkpoint")
    base = AutoModel.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)
    assert type(base).__name__ == "HybridGRUModel"


def test_flat_layout_checkpoint_loads_without_hf_gru(checkpoint, tmp_path):
    code = f"""
import json, torch
from transformers import AutoModelForCausalLM
saved = json.load(open({str(checkpoint / "expected_logits.json")!r}))
model = AutoModelForCausalLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
ids = torch.tensor(saved["input_ids"])
with torch.no_grad():
    logits = model(ids).logits
generated = model.generate(ids, max_new_tokens=3, do_sample=False)
print(json.dumps({{"diff": (logits - torch.tensor(saved["logits"])).abs().max().item(), "length": generated.shape[1],
                  "module": type(model).__module__}}))
"""
    result = run_without_hf_gru(code, tmp_path)
    assert result["diff"] <= 1e-5
    assert result["length"] == 7 + 3
    assert "modeling_hybrid_gru" in result["module"] and not result["module"].startswith("hf_gru")
