"""hf_gru.training.hub: the model card writer and the Hub upload that fails cleanly offline."""

import huggingface_hub.constants
import pytest

from hf_gru.training.hub import HubPushError, push_folder_to_hub, write_model_card


def card(folder, **overrides):
    values = dict(
        title="HybridGRU demo", summary="A test model.",
        metrics={"eval_loss": 3.14159, "perplexity": 23.1407, "steps": 7, "parameters": 1265408, "tokens": 12345.6},
        command="python examples/train_causal_lm.py --max_steps 7", pipeline_tag="text-generation",
        usage="print('hello')", dataset="a novel", hyperparameters={"learning_rate": 0.003}, plot="loss_curve.png",
    )  # fmt: skip
    values.update(overrides)
    return write_model_card(folder, **values)


def test_model_card_content(tmp_path):
    (tmp_path / "loss_curve.png").write_bytes(b"\x89PNG")
    text = card(tmp_path).read_text()
    assert text.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\nlicense: apache-2.0\n")
    assert "- custom_code\n" in text and "# HybridGRU demo" in text and "Training data: a novel" in text
    assert "| eval_loss | 3.142 |" in text and "| perplexity | 23.14 |" in text and "| steps | 7 |" in text
    assert "| parameters | 1,265,408 |" in text and "| tokens | 12,346 |" in text
    assert "```bash\npython examples/train_causal_lm.py --max_steps 7\n```" in text
    assert "![loss curve](loss_curve.png)" in text and '"learning_rate": 0.003' in text


def test_model_card_skips_a_missing_plot_and_needs_the_folder(tmp_path):
    assert "loss curve" not in card(tmp_path).read_text()
    with pytest.raises(ValueError, match="does not exist"):
        card(tmp_path / "missing")


def test_push_offline_raises_hub_push_error_and_leaves_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "config.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(HubPushError, match="(?s)OfflineModeIsEnabled.*The local folder is intact.*hf upload me/model"):
        push_folder_to_hub(tmp_path, "me/model")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_push_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="holds no saved model"):
        push_folder_to_hub(tmp_path, "me/model")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="`repo_id` must look like 'user/name'"):
        push_folder_to_hub(tmp_path, "a/b/c")
