"""A run stopped right after a checkpoint and resumed with --resume_from_checkpoint equals an uninterrupted run."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tests.examples.lm_testing import load_script, losses, tiny_argv


class CrashAfterSave(TrainerCallback):
    """Simulates a killed job: raises as soon as the checkpoint of `step` is on disk."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"simulated crash after checkpoint-{self.step}")


@pytest.mark.slow  # three training runs: about a minute on 2 busy cores
def test_resumed_run_reaches_the_same_losses_and_weights(tmp_path):
    main = load_script().main
    settings = dict(max_steps=8, save_steps=4, eval_steps=4)
    full = main(tiny_argv(tmp_path, tmp_path / "full", **settings))

    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt, match="simulated crash"):
        main(tiny_argv(tmp_path, stopped, **settings), callbacks=[CrashAfterSave(4)])
    assert sorted(p.name for p in stopped.glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (stopped / "model.safetensors").exists()  # the crash came before the final save

    resumed = main(tiny_argv(tmp_path, stopped, resume_from_checkpoint="last", **settings))
    reference, continued = losses(tmp_path / "full"), losses(stopped)
    assert sorted(continued) == list(range(1, 9))
    # Steps 5-8 ran after the restart: same batches (data order restored), same optimizer and scheduler state.
    for step in range(1, 9):
        assert continued[step] == pytest.approx(reference[step], abs=1e-6), step
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], abs=1e-6)
    weights, resumed_weights = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(stopped / "model.safetensors"),
    )
    assert max((weights[k] - resumed_weights[k]).abs().max().item() for k in weights) < 1e-6
    halfway = load_file(stopped / "checkpoint-4" / "model.safetensors")
    assert not torch.equal(weights["model.embed_tokens.weight"], halfway["model.embed_tokens.weight"])  # it trained on
