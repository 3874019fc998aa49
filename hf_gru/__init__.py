"""hf_gru: a hybrid GRU-Transformer model family for Hugging Face transformers.

Importing the package registers model_type ``hybrid_gru`` with the Auto classes, so ``AutoConfig``,
``AutoModel``, ``AutoModelForCausalLM`` and the other heads build and load HybridGRU models.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForCTC,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTimeSeriesPrediction,
    AutoModelForTokenClassification,
)

from .configuration_hybrid_gru import HybridGRUConfig
from .modeling_hybrid_gru import (
    HybridGRUForCausalLM,
    HybridGRUForQuestionAnswering,
    HybridGRUForSequenceClassification,
    HybridGRUForTokenClassification,
    HybridGRUModel,
    HybridGRUPreTrainedModel,
)
from .modeling_hybrid_gru_ctc import HybridGRUForCTC
from .modeling_hybrid_gru_time_series import HybridGRUForTimeSeriesPrediction

__version__ = "0.1.0"

_AUTO_CLASSES = {
    AutoModel: HybridGRUModel,
    AutoModelForCausalLM: HybridGRUForCausalLM,
    AutoModelForSequenceClassification: HybridGRUForSequenceClassification,
    AutoModelForTokenClassification: HybridGRUForTokenClassification,
    AutoModelForQuestionAnswering: HybridGRUForQuestionAnswering,
}


def _register(auto_classes: dict) -> None:
    """Registers each class with its Auto class, and marks it as shareable remote code (auto_map + source files)."""
    for auto_class, model_class in auto_classes.items():
        auto_class.register(HybridGRUConfig, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_class.__name__)


AutoConfig.register(HybridGRUConfig.model_type, HybridGRUConfig, exist_ok=True)
HybridGRUConfig.register_for_auto_class()
_register(_AUTO_CLASSES)
_register({AutoModelForTimeSeriesPrediction: HybridGRUForTimeSeriesPrediction})
_register({AutoModelForCTC: HybridGRUForCTC})

# Loaded on first use: the Trainer they build on takes seconds to import, which a plain model load should not pay;
# the exporters and their runtimes are not needed to train or load a model.
_LAZY = {"convert_to_hybrid": ".conversion", "DistillationTrainer": ".distillation"}
_LAZY.update(
    dict.fromkeys(
        ["export_onnx", "export_executorch", "OnnxCausalLM", "ExecuTorchCausalLM", "OnnxTimeSeriesForecaster",
         "OnnxCTCRecognizer"],
        ".export",
    )
)  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'hf_gru' has no attribute {name!r}")


__all__ = [
    "convert_to_hybrid",
    "DistillationTrainer",
    "HybridGRUConfig",
    "HybridGRUPreTrainedModel",
    "HybridGRUModel",
    "HybridGRUForCausalLM",
    "HybridGRUForSequenceClassification",
    "HybridGRUForTokenClassification",
    "HybridGRUForQuestionAnswering",
    "HybridGRUForTimeSeriesPrediction",
    "HybridGRUForCTC",
    "export_onnx",
    "export_executorch",
    "OnnxCausalLM",
    "ExecuTorchCausalLM",
    "OnnxTimeSeriesForecaster",
    "OnnxCTCRecognizer",
]
