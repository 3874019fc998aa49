"""Graph rewrites into onnxruntime's fused ops (`hf_gru.deploy.onnx_fusion`): the fused graph computes what the
exporter's own graph does (logits and every state), prefill with left padding and decode alike."""

import collections

import pytest
import torch

from hf_gru import HybridGRUForCausalLM
from hf_gru.deploy import onnx_graphs
from hf_gru.deploy.steps import state_specs, zero_states
from tests.helpers import assert_close, tiny_config

onnx = pytest.importorskip("onnx", reason="needs hf_gru[export]")
pytest.importorskip("onnxscript", reason="needs hf_gru[export]")
onnxruntime = pytest.importorskip("onnxruntime", reason="needs hf_gru[export]")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """(config, unfused graph path, fused graph path) of a minGRU model with random norm weights and conv biases."""
    torch.manual_seed(0)
    config = tiny_config(gru_variant="mingru", block_pattern="GGA")
    model = HybridGRUForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # norms start at 1 and conv biases at 0: make each weight count
            parameter.add_(0.1 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("fusion")
    onnx_graphs._export_onnx_graph(model, folder / "plain.onnx", 18, fuse=False)
    onnx_graphs._export_onnx_graph(model, folder / "fused.onnx", 18)
    return config, folder / "plain.onnx", folder / "fused.onnx"


def _op_types(path) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_norms_convs_and_sibling_matmuls_become_fused_ops(graphs):
    config, plain, fused = graphs
    before, after = _op_types(plain), _op_types(fused)
    gru_layers = config.layer_types.count("linear_attention")
    norms = 2 * config.num_hidden_layers + 1
    assert before["Pow"] == norms and before["Conv"] == gru_layers
    assert after["Pow"] == after["Conv"] == after["Sqrt"] == 0
    assert after["CausalConvWithState"] == gru_layers
    # every norm but the first (of the embeddings) follows a residual sum
    assert after["SimplifiedLayerNormalization"] == 1 and after["SkipSimplifiedLayerNormalization"] == norms - 1
    # one weight matmul per MLP (gate and up merged) and per attention layer (q, k and v merged), then a Split
    attention_layers = config.num_hidden_layers - gru_layers
    assert before["MatMul"] - after["MatMul"] == config.num_hidden_layers + 2 * attention_layers
    assert sum(after.values()) < sum(before.values()) - 6 * norms - 2 * gru_layers


def _session(path):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    feed = {spec.name: tensor.numpy() for spec, tensor in zip(session.get_inputs(), inputs, strict=True)}
    return [torch.from_numpy(output) for output in session.run(None, feed)]


def test_fused_graph_equals_unfused_on_padded_prefill_and_decode(graphs):
    config, plain, fused = graphs
    sessions = [_session(plain), _session(fused)]
    ids = torch.randint(3, 99, (2, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded row
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    states = [zero_states(state_specs(config), 2)] * 2
    for step in range(6):
        outputs = [_run(s, [ids, mask, positions, *st]) for s, st in zip(sessions, states, strict=True)]
        for k, (expected, actual) in enumerate(zip(*outputs, strict=True)):
            assert_close(actual, expected, atol=1e-5, msg=f"step {step}, output {k}")
        states = [out[1:] for out in outputs]
        ids = torch.randint(3, 99, (2, 1))
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
