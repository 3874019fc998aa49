"""Import paths of hf_gru 0.1's flat layout, kept working with a FutureWarning that names the new path.

`import hf_gru.text` (or `from hf_gru.text import ...`) imports `hf_gru.tasks.text` and binds it under the old name
too, so both names are the same module object (monkeypatching either patches both).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED_MODULES = {
    **{
        f"hf_gru.{name}": f"hf_gru.models.hybrid_gru.{name}"
        for name in (
            "configuration_hybrid_gru",
            "modeling_hybrid_gru",
            "modeling_hybrid_gru_ctc",
            "modeling_hybrid_gru_seq2seq",
            "modeling_hybrid_gru_time_series",
            "recurrence_hybrid_gru",
            "input_checks_hybrid_gru",
            "serialization_hybrid_gru",
        )
    },
    **{f"hf_gru.{name}": f"hf_gru.tasks.{name}" for name in ("text", "speech", "forecasting", "anomaly")},
    "hf_gru.evaluation": "hf_gru.tasks.perplexity",
    **{
        f"hf_gru.{name}": f"hf_gru.pretrained.{name}"
        for name in ("conversion", "distillation", "encoder_distillation")
    },
    "hf_gru.export": "hf_gru.deploy",
    "hf_gru.quantization": "hf_gru.deploy.quantization",
    "hf_gru.pruning": "hf_gru.deploy.pruning",
    **{f"hf_gru.{name}": f"hf_gru.training.{name}" for name in ("lora", "hub", "plotting")},
}


def warn_moved(old: str) -> None:
    warnings.warn(
        f"`{old}` moved to `{MOVED_MODULES[old]}`; import it from there (the old path will be removed in hf_gru 0.3).",
        FutureWarning,
        stacklevel=_caller_stacklevel(),
    )


def _caller_stacklevel() -> int:
    """The stack level of the first frame outside this file and the import machinery: the line that imported."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename == __file__ or "importlib" in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module names; loading one imports the new module and returns it as the old one."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        warn_moved(spec.name)
        module = importlib.import_module(MOVED_MODULES[spec.name])
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        # The import system has just set the alias spec on the (already executed) new module: give its own back.
        module.__spec__ = self._spec


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
