"""Running models outside PyTorch training: export with the recurrent state as explicit tensors (`steps`: the traced
form of each head; `onnx_graphs` and `executorch`: the exporters; `onnx_fusion`: rewrites of the ONNX graph into
onnxruntime's fused ops; `folder`: the export folder format), runtimes that carry that state between calls (`runtime`,
`onnx_runtime`, `executorch`), int8 quantization (`quantization`) and pruning (`pruning`). They import the model
(`hf_gru.models`) only.

The names below load on first use: the exporters and their runtimes are not needed to train or load a model.
"""

import importlib

_LAZY = {
    "export_onnx": ".onnx_graphs",
    "export_executorch": ".executorch",
    "ExecuTorchCausalLM": ".executorch",
    "ExecuTorchTimeSeriesForecaster": ".executorch",
    "ExecuTorchCTCRecognizer": ".executorch",
    "ExportedCausalLM": ".runtime",
    "CausalLMState": ".runtime",
    "OnnxCausalLM": ".onnx_runtime",
    "OnnxTimeSeriesForecaster": ".onnx_runtime",
    "OnnxCTCRecognizer": ".onnx_runtime",
    "CausalLMStep": ".steps",
    "CTCStep": ".steps",
    "TimeSeriesStep": ".steps",
    "state_specs": ".steps",
    "quantize_int8": ".quantization",
    "quantize_onnx_int8": ".quantization",
    "state_dict_bytes": ".quantization",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
