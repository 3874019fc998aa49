"""The speed and memory benchmarks run from a fresh install (--quick sizes) and report what they claim to measure.

Timings are not checked (the CI machine is noisy); the structure of each report and the exact memory facts are.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.slow  # each script builds the 23M-parameter models and times them


def run(script: str, tmp_path: Path, *options: str) -> dict:
    report = tmp_path / f"{script}.json"
    subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / f"{script}.py"),
            "--quick",
            "--threads",
            "1",
            "--json",
            str(report),
            *options,
        ],
        check=True,
        cwd=BENCHMARKS,
        timeout=600,
        capture_output=True,
    )
    return json.loads(report.read_text())


def test_train_throughput_reports_a_ratio_per_model_and_length(tmp_path):
    report = run("train_throughput", tmp_path, "--models", "mingru")
    rows = {(row["seq"], row["model"]): row for row in report["results"]}
    assert {model for _, model in rows} == {"llama", "hybrid-mingru"}
    for (seq, model), row in rows.items():
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1.5, (seq, model)
        assert row["speedup_vs_llama"] == 1.0 if model == "llama" else row["speedup_vs_llama"] > 0


def test_decode_latency_reports_decode_and_prefill_ratios_and_cache_bytes(tmp_path):
    report = run("decode_latency", tmp_path, "--models", "mingru", "--caches", "dynamic,static", "--batches", "1")
    for row in report["results"]:
        assert row["decode_tokens_per_s"] > 0 and row["prefill_tokens_per_s"] > 0
        assert row["decode_speedup"] > 0 and row["prefill_speedup"] > 0
    llama = {(r["context"], r["cache"]): r["cache_bytes"] for r in report["results"] if r["model"] == "llama"}
    hybrid = {(r["context"], r["cache"]): r["cache_bytes"] for r in report["results"] if r["model"] != "llama"}
    for key, nbytes in hybrid.items():  # pattern GGA: 2 of Llama's 6 attention layers, same heads and head size
        assert 3 * nbytes["attention"] == llama[key]["attention"] and llama[key]["gru"] == 0
    assert len({nbytes["gru"] for nbytes in hybrid.values()}) == 1  # the GRU state does not grow with context


def test_memory_reports_cache_bytes_and_training_peaks(tmp_path):
    report = run("memory", tmp_path, "--models", "mingru,pure-mingru")
    cache = report["cache"]
    by_model = {}
    for row in cache:
        by_model.setdefault(row["model"], []).append(row)
    assert len({row["gru"] for row in by_model["hybrid-mingru"]}) == 1  # constant in context
    assert all(row["attention"] == 0 and row["gru"] > 0 for row in by_model["pure-mingru"])
    assert report["training"], "no training peaks measured"


def test_decode_overhead_reports_loop_and_generate_per_token(tmp_path):
    report = run("decode_overhead", tmp_path, "--models", "mingru")
    assert [row["model"] for row in report["results"]] == ["llama", "hybrid-mingru"]
    for row in report["results"]:
        assert row["loop_ms"] > 0 and row["generate_ms"] > 0 and row["loop_speedup"] > 0
    split = report["breakdown_ms"]  # every part found by its hooks: GGA has both kinds of mixer, Llama only attention
    assert "GRU layers" not in split["llama"] and split["llama"]["attention layers"] > 0
    assert split["hybrid-mingru"]["GRU layers"] > 0 and split["hybrid-mingru"]["attention layers"] > 0
    assert all(split[name]["MLPs"] > 0 and split[name]["LM head"] > 0 for name in split)


def test_encoder_speed_reports_a_ratio_per_length(tmp_path):
    report = run("encoder_speed", tmp_path)
    assert [row["seq"] for row in report["results"]] == [32, 64]
    for row in report["results"]:
        assert row["tokens_per_s"]["minilm"] > 0 and row["tokens_per_s"]["hybrid"] > 0 and row["ratio"] > 0


def test_edge_reports_every_runtime_of_both_models_against_the_bound(tmp_path):
    pytest.importorskip("onnxruntime", reason="benchmarks/edge.py needs the export extra")
    pytest.importorskip("onnxscript", reason="benchmarks/edge.py needs the export extra")
    report = run("edge", tmp_path)
    rows = {(row["context"], row["model"], row["runtime"]): row for row in report["results"]}
    runtimes = {
        (model, runtime)
        for model in ("hybrid", "llama")
        for runtime in ("eager", "eager-int8", "ort-fp32", "ort-int8")
    }
    assert {key[1:] for key in rows} == runtimes and {key[0] for key in rows} == {16, 64}
    assert report["bandwidth_bytes_per_s"] > 1e8
    for (context, model, runtime), row in rows.items():
        assert row["token_s"] > 0 and row["vs_llama"] > 0 and row["vs_eager"] > 0
        assert row["x_bound"] == pytest.approx(row["token_s"] / row["bound_s"])
        if runtime.endswith("int8"):  # int8 weights: about a quarter of the float bytes read per token
            float_row = rows[(context, model, "eager" if runtime == "eager-int8" else "ort-fp32")]
            assert row["weight_bytes"] < 0.35 * float_row["weight_bytes"]
            assert row["vs_float"] > 0  # the paired int8-vs-its-fp32 ratio


def test_seq2seq_generate_forces_equal_lengths_and_reports_ratios_and_cache_bytes(tmp_path):
    report = run("seq2seq_generate", tmp_path, "--caches", "dynamic,static")
    hybrid, marian = report["parameters"]["hybrid"], report["parameters"]["marian"]
    assert abs(marian / hybrid - 1) <= 0.02  # parameter-matched
    rows = {(r["source"], r["batch"], r["cache"], r["model"]): r for r in report["results"]}
    assert {key[:3] for key in rows} == {(s, b, c) for s in (16, 64) for b in (1, 4) for c in ("dynamic", "static")}
    for (source, batch, cache, model), row in rows.items():
        assert row["tokens_per_s"] > 0 and row["decode_ms_per_token"] > 0 and row["new_tokens"] == 8
        assert row["speedup_vs_marian"] == 1.0 if model == "marian" else row["speedup_vs_marian"] > 0
        held = row["cache_bytes"]
        # both: cross-attention keys/values of every decoder layer (3 layers, width 256, float32) over the source
        assert held["cross_attention"] == 2 * 3 * batch * source * 256 * 4, (source, batch, cache, model)
        assert (held["gru"] > 0) == (model == "hybrid")
    for source, batch, cache in {key[:3] for key in rows}:  # GGA decoder: 1 of Marian's 3 self-attention layers
        hybrid_kv = rows[(source, batch, cache, "hybrid")]["cache_bytes"]["attention"]
        assert 3 * hybrid_kv == rows[(source, batch, cache, "marian")]["cache_bytes"]["attention"]
