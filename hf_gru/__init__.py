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
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTimeSeriesPrediction,
    AutoModelForTokenClassification,
)

from . import _moved
from .models import hybrid_gru as _model
from .models.hybrid_gru import *  # noqa: F403  (the configuration, the model and every head)

__version__ = "0.1.0"

_AUTO_CLASSES = {
    AutoModel: _model.HybridGRUModel,
    AutoModelForCausalLM: _model.HybridGRUForCausalLM,
    AutoModelForSequenceClassification: _model.HybridGRUForSequenceClassification,
    AutoModelForTokenClassification: _model.HybridGRUForTokenClassification,
    AutoModelForQuestionAnswering: _model.HybridGRUForQuestionAnswering,
}


def _register(auto_classes: dict) -> None:
    """Registers each class with its Auto class, and marks it as shareable remote code (auto_map + source files)."""
    for auto_class, model_class in auto_classes.items():
        auto_class.register(_model.HybridGRUConfig, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_class.__name__)


AutoConfig.register(_model.HybridGRUConfig.model_type, _model.HybridGRUConfig, exist_ok=True)
_model.HybridGRUConfig.register_for_auto_class()
_register(_AUTO_CLASSES)
_register({AutoModelForTimeSeriesPrediction: _model.HybridGRUForTimeSeriesPrediction})
_register({AutoModelForCTC: _model.HybridGRUForCTC})
_register({AutoModelForSeq2SeqLM: _model.HybridGRUForConditionalGeneration})

# Loaded on first use: the Trainer they build on takes seconds to import, which a plain model load should not pay;
# the exporters and their runtimes are not needed to train or load a model.
_LAZY = {"convert_to_hybrid": ".pretrained.conversion", "DistillationTrainer": ".pretrained.distillation"}
_LAZY.update(
    dict.fromkeys(
        ["export_onnx", "export_executorch", "OnnxCausalLM", "ExecuTorchCausalLM", "OnnxTimeSeriesForecaster",
         "OnnxCTCRecognizer", "ExecuTorchTimeSeriesForecaster", "ExecuTorchCTCRecognizer"],
        ".deploy",
    )
)  # fmt: skip
_moved.install()  # the flat layout's module paths (hf_gru.text, hf_gru.export, ...) still import, with a warning


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    if f"{__name__}.{name}" in _moved.MOVED_MODULES:  # `hf_gru.text` as an attribute, `from hf_gru import text`
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'hf_gru' has no attribute {name!r}")


__all__ = [*_model.__all__, *_LAZY]
