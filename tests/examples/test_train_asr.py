"""The speech-recognition example end to end (--quick): synthesis, two models trained, scored, pipeline on real audio."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCTC

from hf_gru import HybridGRUForCTC
from tests.helpers import REPO


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian's espeak-ng to synthesise speech")
def test_train_asr_quick_run(tmp_path):
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_asr.py"), "--quick", "--output-dir", str(tmp_path)],
        check=True,
        cwd=tmp_path,
        timeout=900,
    )
    report = json.loads((tmp_path / "results.json").read_text())
    by_model = {r["model"].split(" ")[0]: r for r in report["results"]}
    assert set(by_model) == {"hybrid_gru", "parakeet"}
    for scores in by_model.values():
        assert scores["wer"] >= 0.0 and scores["cer"] >= 0.0 and scores["steps"] == 60
        assert scores["final_train_loss"] < scores["first_train_loss"]
    model = AutoModelForCTC.from_pretrained(tmp_path / "hybrid_gru" / "checkpoint")
    assert isinstance(model, HybridGRUForCTC) and model.config.bidirectional  # the offline default
    assert sum(p.numel() for p in model.parameters()) == by_model["hybrid_gru"]["parameters"]
    if Path("/usr/share/pocketsphinx/test/data/cards/001.wav").is_file():
        assert len(report["real_speech"]) == 10
        assert all(isinstance(item["heard"], str) for item in report["real_speech"])
