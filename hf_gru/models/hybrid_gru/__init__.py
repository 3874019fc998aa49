"""HybridGRU: configuration, the model and its heads, and the code they need (GRU recurrences, input checks, crash-safe
serialization).

Every module here is remote code: `save_pretrained` copies it next to a checkpoint, where it runs without hf_gru
installed. So it imports only its siblings (one-dot relative imports), torch, transformers (with what transformers
itself depends on: huggingface_hub, safetensors) and the standard library; `tests/test_layout.py`
fails otherwise. Registration with the Auto classes happens in `hf_gru/__init__.py`, not here.
"""

from . import (
    configuration_hybrid_gru,
    modeling_hybrid_gru,
    modeling_hybrid_gru_ctc,
    modeling_hybrid_gru_seq2seq,
    modeling_hybrid_gru_time_series,
)
from .configuration_hybrid_gru import *  # noqa: F403
from .modeling_hybrid_gru import *  # noqa: F403
from .modeling_hybrid_gru_ctc import *  # noqa: F403
from .modeling_hybrid_gru_seq2seq import *  # noqa: F403
from .modeling_hybrid_gru_time_series import *  # noqa: F403

__all__ = [
    name
    for module in (
        configuration_hybrid_gru,
        modeling_hybrid_gru,
        modeling_hybrid_gru_time_series,
        modeling_hybrid_gru_ctc,
        modeling_hybrid_gru_seq2seq,
    )
    for name in module.__all__
]
