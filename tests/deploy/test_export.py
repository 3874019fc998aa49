"""ONNX and ExecuTorch export (`hf_gru.export_onnx`, `hf_gru.export_executorch`) and their runtimes (`OnnxCausalLM`,
`ExecuTorchCausalLM`) against the PyTorch model.

One export per GRU variant and format, shared by the module (an export takes ~10-15 s on an idle core): the ONNX
export of the classic GRU is in the fast suite, the others are slow.
"""

import json
import sys
import types

import pytest
import torch

from hf_gru import (
    ExecuTorchCausalLM,
    ExecuTorchCTCRecognizer,
    ExecuTorchTimeSeriesForecaster,
    HybridGRUConfig,
    HybridGRUForCausalLM,
    HybridGRUForCTC,
    HybridGRUForSequenceClassification,
    HybridGRUForTimeSeriesPrediction,
    OnnxCausalLM,
    OnnxCTCRecognizer,
    OnnxTimeSeriesForecaster,
    export_executorch,
    export_onnx,
)
from hf_gru.deploy import onnx_graphs, steps
from tests.helpers import assert_close, tiny_config

# hf_gru.deploy imports these only when exporting or loading a graph
pytest.importorskip("onnx", reason="needs hf_gru[export]")
pytest.importorskip("onnxscript", reason="needs hf_gru[export]")
pytest.importorskip("onnxruntime", reason="needs hf_gru[export]")

TOKENIZER_FILES = {"tokenizer.json": '{"model": "bpe"}', "tokenizer_config.json": "{}"}


@pytest.fixture(scope="module", params=["gru", pytest.param("mingru", marks=pytest.mark.slow)])
def exported(request, tmp_path_factory):
    """(PyTorch model, OnnxCausalLM, export folder): GRU, sliding-window and full attention layers, exported from a
    saved folder holding tokenizer files."""
    torch.manual_seed(0)
    config = tiny_config(gru_variant=request.param, block_pattern="GLA", sliding_window=5)
    model = HybridGRUForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp(f"model-{request.param}")
    model.save_pretrained(folder)
    for name, text in TOKENIZER_FILES.items():
        (folder / name).write_text(text)
    output = tmp_path_factory.mktemp(f"onnx-{request.param}") / "onnx"
    export_onnx(folder, output)
    return model, OnnxCausalLM.from_pretrained(output), output


def _prompts(lengths: list[int], pad_token_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts (no pad, bos or eos ids inside) and their attention mask."""
    ids = torch.full((len(lengths), max(lengths)), pad_token_id)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, -length:] = torch.randint(3, 99, (length,))
        mask[row, -length:] = 1
    return ids, mask


def test_folder_holds_graph_config_tokenizer_and_state_description(exported):
    model, runtime, output = exported
    names = {path.name for path in output.iterdir()}
    assert {"model.onnx", "config.json", "generation_config.json", "export_config.json", *TOKENIZER_FILES} <= names
    export_config = json.loads((output / "export_config.json").read_text())
    graph_inputs = [i.name for i in runtime.session.get_inputs()]
    state_names = [s["name"] for s in export_config["states"]]
    assert graph_inputs == ["input_ids", "attention_mask", "position_ids", *state_names]
    graph_outputs = [o.name for o in runtime.session.get_outputs()]
    assert graph_outputs == ["logits", *(s["output"] for s in export_config["states"])]
    kinds = [(s["layer"], s["kind"]) for s in export_config["states"]]
    assert kinds == [(0, "conv"), (0, "recurrent"), (1, "key"), (1, "value"), (2, "key"), (2, "value")]
    assert export_config["states"][4]["shape"] == ["batch", 2, "past_length", 8]
    assert export_config["quantization"] is None


def test_prefill_and_64_decode_steps_match_pytorch(exported):
    model, runtime, _ = exported
    ids = torch.randint(3, 99, (2, 9))
    with torch.no_grad():
        out = model(ids, use_cache=True)
        logits, state = runtime.step(ids)
        assert_close(logits, out.logits, atol=1e-4, msg="prefill")
        cache = out.cache
        for step, token in enumerate(torch.randint(3, 99, (64, 2, 1))):
            out = model(token, cache=cache, use_cache=True)
            logits, state = runtime.step(token, state)
            assert_close(logits, out.logits, atol=1e-4, msg=f"decode step {step}")
    assert state.attention_mask.shape == (2, 9 + 64)


def test_chunked_prefill_equals_one_call(exported):
    _, runtime, _ = exported
    ids = torch.randint(3, 99, (2, 10))
    whole, _ = runtime.step(ids)
    first, state = runtime.step(ids[:, :4])
    second, state = runtime.step(ids[:, 4:9], state)
    third, _ = runtime.step(ids[:, 9:], state)
    assert_close(torch.cat([first, second, third], dim=1), whole, atol=1e-5)


def test_greedy_64_tokens_equal_generate(exported):
    model, runtime, _ = exported
    ids = torch.randint(3, 99, (2, 6))
    kwargs = dict(max_new_tokens=64, min_new_tokens=64, do_sample=False)  # min_new_tokens: 64 tokens even past eos
    expected = model.generate(ids, **kwargs)
    actual = runtime.generate(ids, **kwargs)
    assert actual.shape == (2, 6 + 64)
    assert torch.equal(actual, expected)


def test_sampling_equals_generate_with_the_same_seed(exported):
    model, runtime, _ = exported
    ids = torch.randint(3, 99, (2, 6))
    kwargs = dict(max_new_tokens=24, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.3)
    torch.manual_seed(7)
    expected = model.generate(ids, **kwargs)
    torch.manual_seed(7)
    actual = runtime.generate(ids, **kwargs)
    assert torch.equal(actual, expected)


def test_left_padded_batch_equals_rows_alone(exported):
    model, runtime, _ = exported
    ids, mask = _prompts([4, 9, 6])
    batch = runtime.generate(ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12)
    for row in range(3):
        real = ids[row, mask[row].bool()][None]
        alone = runtime.generate(real, max_new_tokens=12, min_new_tokens=12)
        assert torch.equal(batch[row, -alone.shape[1] :], alone[0]), f"row {row}"
    assert torch.equal(batch, model.generate(ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12))


def test_eos_stops_rows_and_pads_them_as_generate_does(exported):
    model, runtime, _ = exported
    ids = torch.randint(3, 99, (3, 5))
    # the second greedy token of row 0 becomes eos, so row 0 finishes early and is padded afterwards
    eos = int(runtime.generate(ids, max_new_tokens=2)[0, -1])
    kwargs = dict(max_new_tokens=10, eos_token_id=eos, pad_token_id=0)
    actual = runtime.generate(ids, **kwargs)
    assert torch.equal(actual, model.generate(ids, **kwargs))
    assert (actual[0, 7:] == 0).all()


def test_generate_rejects_beam_search_and_unknown_arguments(exported):
    _, runtime, _ = exported
    ids = torch.randint(3, 99, (1, 4))
    with pytest.raises(ValueError, match="num_beams=2"):
        runtime.generate(ids, num_beams=2)
    with pytest.raises(ValueError, match="no_such_option"):
        runtime.generate(ids, no_such_option=1)
    with pytest.raises(ValueError, match="attention_mask"):
        runtime.step(ids, attention_mask=torch.ones(1, 5))


def test_bidirectional_causal_lm_is_refused(tmp_path):
    model = HybridGRUForCausalLM(tiny_config())
    model.config.bidirectional = True  # the constructor refuses it; a config edited afterwards must not export
    with pytest.raises(ValueError, match="bidirectional=True"):
        export_onnx(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_head_and_quantization_are_refused(tmp_path):
    classifier = HybridGRUForSequenceClassification(tiny_config(num_labels=3))
    with pytest.raises(ValueError, match="HybridGRUForSequenceClassification"):
        export_onnx(classifier, tmp_path / "out")
    classifier.save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="HybridGRUForSequenceClassification"):
        export_onnx(tmp_path / "saved", tmp_path / "out")
    with pytest.raises(ValueError, match="'int4'"):
        export_onnx(HybridGRUForCausalLM(tiny_config()), tmp_path / "out", quantize="int4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_output_dir_that_is_not_empty_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export_onnx(HybridGRUForCausalLM(tiny_config()), tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_failed_export_leaves_no_folder(tmp_path, monkeypatch):
    def fail_half_way(model, path, opset_version):
        path.write_bytes(b"half a graph")
        raise RuntimeError("killed")

    monkeypatch.setattr(onnx_graphs, "_export_onnx_graph", fail_half_way)
    with pytest.raises(RuntimeError, match="killed"):
        export_onnx(HybridGRUForCausalLM(tiny_config()), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither `out` nor the staging folder
    with pytest.raises(ValueError, match="export_config.json"):
        OnnxCausalLM.from_pretrained(tmp_path)


def test_int8_export_calls_the_quantizer_and_keeps_one_graph(tmp_path, monkeypatch):
    """The hook to hf_gru.deploy.quantization (issue 14b): the float graph goes in, `model.onnx` is the int8 graph."""
    calls = []

    def quantize_onnx_int8(source, target):
        calls.append((source.name, source.read_bytes()))
        target.write_bytes(b"int8 graph")
        return target

    monkeypatch.setitem(
        sys.modules, "hf_gru.deploy.quantization", types.SimpleNamespace(quantize_onnx_int8=quantize_onnx_int8)
    )
    monkeypatch.setattr(onnx_graphs, "_export_onnx_graph", lambda model, path, opset: path.write_bytes(b"fp32 graph"))
    export_onnx(HybridGRUForCausalLM(tiny_config()), tmp_path / "out", quantize="int8")
    assert calls == [("model.float.onnx", b"fp32 graph")]
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"int8 graph"
    assert not (tmp_path / "out" / "model.float.onnx").exists()
    export_config = json.loads((tmp_path / "out" / "export_config.json").read_text())
    assert export_config["quantization"]["weights"] == "int8"


def test_state_specs_follow_the_layer_pattern():
    config = HybridGRUConfig(
        vocab_size=10, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, block_pattern="AG",
        gru_hidden_size=24, gru_conv_kernel=3,
    )  # fmt: skip
    shapes = {s["name"]: s["shape"] for s in steps.state_specs(config)}
    assert shapes == {
        "past.0.key": ["batch", 2, "past_length", 8],
        "past.0.value": ["batch", 2, "past_length", 8],
        "past.1.conv": ["batch", 16, 2],
        "past.1.recurrent": ["batch", 24],
        "past.2.key": ["batch", 2, "past_length", 8],
        "past.2.value": ["batch", 2, "past_length", 8],
    }


# ---------------------------------------------------------------------------------------------------------------------
# ExecuTorch: the decode step as a .pte, run by ExecuTorch's Python runtime
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(p, marks=pytest.mark.slow, id="-".join(p)) for p in [("gru", "portable"), ("mingru", "xnnpack")]
    ],
)
def executorch_exported(request, tmp_path_factory):
    """(PyTorch model, ExecuTorchCausalLM): batch up to 4, up to 96 tokens, prefill in chunks of 4. Slow: lowering
    takes ~15 s per method on an idle core."""
    pytest.importorskip("executorch", reason="needs executorch (see the export extra)")
    variant, backend = request.param
    torch.manual_seed(0)
    model = HybridGRUForCausalLM(tiny_config(gru_variant=variant)).eval()
    output = tmp_path_factory.mktemp(f"executorch-{variant}") / "pte"
    export_executorch(model, output, max_length=96, max_batch_size=4, backend=backend, prefill_chunk=4)
    return model, ExecuTorchCausalLM.from_pretrained(output)


def test_executorch_prefill_and_64_decode_steps_match_pytorch(executorch_exported):
    model, runtime = executorch_exported
    ids = torch.randint(3, 99, (2, 9))
    with torch.no_grad():
        out = model(ids, use_cache=True)
        logits, state = runtime.step(ids)  # two prefill chunks of 4, then one token
        assert_close(logits, out.logits, atol=1e-4, msg="prefill")
        cache = out.cache
        for step, token in enumerate(torch.randint(3, 99, (64, 2, 1))):
            out = model(token, cache=cache, use_cache=True)
            logits, state = runtime.step(token, state)
            assert_close(logits, out.logits, atol=1e-4, msg=f"decode step {step}")


def test_executorch_chunked_prefill_equals_token_by_token(executorch_exported):
    """11 prompt tokens (not a multiple of the chunk): two `prefill` calls of 4 and three decode steps give the
    logits and state of 11 decode steps, for a left-padded batch of 3 (the program was traced at batch 2)."""
    _, runtime = executorch_exported
    assert runtime._chunk_sizes(11) == [4, 4, 1, 1, 1]
    ids, mask = _prompts([11, 6, 9])
    chunked, chunked_state = runtime.step(ids, attention_mask=mask)
    pieces, state = [], None
    for t in range(ids.shape[1]):
        logits, state = runtime.step(ids[:, t : t + 1], state, attention_mask=mask[:, t : t + 1])
        pieces.append(logits)
    real = mask.bool()
    assert_close(chunked[real], torch.cat(pieces, dim=1)[real], atol=1e-5, msg="logits")
    assert torch.equal(chunked_state.attention_mask, state.attention_mask)
    for spec, a, b in zip(runtime.state_specs, chunked_state.tensors, state.tensors, strict=True):
        assert_close(a, b, atol=1e-5, msg=spec["name"])


def test_executorch_greedy_and_left_padded_generate_equal_pytorch(executorch_exported):
    model, runtime = executorch_exported
    ids, mask = _prompts([3, 7])
    kwargs = dict(attention_mask=mask, max_new_tokens=64, min_new_tokens=64)
    assert torch.equal(runtime.generate(ids, **kwargs), model.generate(ids, **kwargs))


def test_executorch_bounds_are_checked(executorch_exported):
    _, runtime = executorch_exported
    with pytest.raises(ValueError, match="max_length=96"):
        runtime.step(torch.randint(3, 99, (1, 97)))
    with pytest.raises(ValueError, match="max_batch_size=4"):
        runtime.step(torch.randint(3, 99, (5, 1)))
    with pytest.raises(ValueError, match="backend='vulkan'"):
        export_executorch(HybridGRUForCausalLM(tiny_config()), "unused", backend="vulkan")


# ---------------------------------------------------------------------------------------------------------------------
# Time series: a streaming forecaster
# ---------------------------------------------------------------------------------------------------------------------


def assert_stream_matches_model(model, runtime) -> tuple[torch.Tensor, object]:
    """Three chunks of a two-channel stream (the first not a whole number of patches, a gap in one channel) give the
    model's streaming forecasts and Student-t parameters; returns the series and the runtime's last state."""
    series = torch.randn(3, 15, 2).cumsum(1)
    observed = torch.ones_like(series)
    observed[1, 3:5, 0] = 0  # a gap in one channel
    state, cache, stats = None, None, {}
    with torch.no_grad():
        for chunk in (slice(0, 7), slice(7, 11), slice(11, 15)):
            expected = model(
                past_values=series[:, chunk], past_observed_mask=observed[:, chunk], cache=cache, use_cache=True,
                **stats,
            )  # fmt: skip
            cache, stats = expected.cache, {"loc": expected.loc, "scale": expected.scale}
            actual, state = runtime.step(series[:, chunk], observed[:, chunk], state)
            assert_close(actual["prediction"], expected.prediction_outputs, atol=1e-4, msg=f"chunk {chunk}")
            names = ("df", "distribution_loc", "distribution_scale")
            for name, param in zip(names, expected.distribution_params, strict=True):
                assert_close(actual[name], param, atol=1e-4, msg=f"{name}, chunk {chunk}")
    return series, state


@pytest.mark.slow
def test_streaming_forecast_matches_pytorch(tmp_path):
    """Chunks of a stream (the first one not a whole number of patches) give the model's streaming forecasts and
    Student-t parameters, for two channels."""
    config = tiny_config(
        vocab_size=1, context_length=24, prediction_length=6, patch_length=2, num_input_channels=2, loss="nll"
    )
    model = HybridGRUForTimeSeriesPrediction(config).eval()
    export_onnx(model, tmp_path / "onnx")
    runtime = OnnxTimeSeriesForecaster.from_pretrained(tmp_path / "onnx")
    series, state = assert_stream_matches_model(model, runtime)
    with pytest.raises(ValueError, match="whole patches"):
        runtime.step(series[:, :3], state=state)


@pytest.mark.slow
def test_executorch_streaming_forecast_matches_pytorch(tmp_path):
    """The ExecuTorch forecaster (one patch per program call) gives the model's streaming forecasts and Student-t
    parameters over the same chunks as the ONNX test."""
    pytest.importorskip("executorch", reason="needs executorch (see the export extra)")
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=1, context_length=24, prediction_length=5, patch_length=2, num_input_channels=2, loss="nll"
    )
    model = HybridGRUForTimeSeriesPrediction(config).eval()
    export_executorch(model, tmp_path / "pte", max_batch_size=3)
    runtime = ExecuTorchTimeSeriesForecaster.from_pretrained(tmp_path / "pte")
    assert_stream_matches_model(model, runtime)
    with pytest.raises(ValueError, match="max_batch_size=3"):
        runtime.step(torch.randn(4, 2, 2))


# ---------------------------------------------------------------------------------------------------------------------
# CTC: a streaming recogniser
# ---------------------------------------------------------------------------------------------------------------------


def assert_recognition_stream_matches_model(model, runtime) -> None:
    """Chunks of 23 frames of any length (none a multiple of the subsampling), then `flush`, give the offline
    logits."""
    features = torch.randn(2, 23, 8)
    with torch.no_grad():
        expected = model(input_features=features).logits  # (2, 6, 12)
    pieces, state = [], None
    for chunk in (slice(0, 3), slice(3, 5), slice(5, 13), slice(13, 23)):
        logits, state = runtime.step(features[:, chunk], state)
        pieces.append(logits)
    pieces.append(runtime.flush(state))
    assert [p.shape[1] for p in pieces] == [0, 1, 2, 2, 1]
    assert_close(torch.cat(pieces, dim=1), expected, atol=1e-4)


@pytest.mark.slow
def test_streaming_recognition_equals_offline_logits(tmp_path):
    """Chunks of any length (none a multiple of the subsampling), then `flush`, give the offline logits."""
    config = tiny_config(
        vocab_size=12, num_mel_bins=8, conv_subsampling_channels=16, block_pattern="GLA", sliding_window=3
    )
    model = HybridGRUForCTC(config).eval()
    export_onnx(model, tmp_path / "onnx")
    runtime = OnnxCTCRecognizer.from_pretrained(tmp_path / "onnx")
    assert_recognition_stream_matches_model(model, runtime)


@pytest.mark.slow
def test_executorch_streaming_recognition_equals_offline_logits(tmp_path):
    """The ExecuTorch recogniser (one block of 4 frames per program call): chunks of any length, then `flush`, give
    the offline logits."""
    pytest.importorskip("executorch", reason="needs executorch (see the export extra)")
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=12, num_mel_bins=8, conv_subsampling_channels=16, block_pattern="GLA", sliding_window=3
    )
    model = HybridGRUForCTC(config).eval()
    export_executorch(model, tmp_path / "pte", max_length=16, max_batch_size=2)
    runtime = ExecuTorchCTCRecognizer.from_pretrained(tmp_path / "pte")
    assert_recognition_stream_matches_model(model, runtime)


def test_bidirectional_ctc_is_refused(tmp_path):
    model = HybridGRUForCTC(
        tiny_config(vocab_size=12, num_mel_bins=8, conv_subsampling_channels=16, bidirectional=True)
    )
    with pytest.raises(ValueError, match="bidirectional=True"):
        export_onnx(model, tmp_path / "out")
