"""The export folder: what `export_onnx` and `export_executorch` write (graph, configs, tokenizer or processor files,
`export_config.json` describing the graph's inputs, outputs and state tensors), written through a staging folder so an
interrupted export leaves nothing behind, and read back by the runtimes."""

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from ..models.hybrid_gru.modeling_hybrid_gru import HybridGRUForCausalLM
from ..models.hybrid_gru.modeling_hybrid_gru_ctc import HybridGRUForCTC
from ..models.hybrid_gru.modeling_hybrid_gru_time_series import HybridGRUForTimeSeriesPrediction
from .steps import SUBSAMPLING, ctc_state_specs, state_specs

ONNX_FILE = "model.onnx"
EXECUTORCH_FILE = "model.pte"
EXPORT_CONFIG_FILE = "export_config.json"
ONNX_FORMAT = "hf_gru-onnx"
EXECUTORCH_FORMAT = "hf_gru-executorch"
EXPORT_FORMAT_VERSION = 1
GRAPH_INPUTS = ("input_ids", "attention_mask", "position_ids")  # then the states, see `state_specs`
# Tokenizer / processor files copied from a model folder next to the graph, so the export folder is self-contained.
PROCESSOR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json", "processor_config.json", "feature_extractor_config.json",
)  # fmt: skip
EXPORTABLE = {
    "HybridGRUForCausalLM": "causal-lm",
    "HybridGRUForTimeSeriesPrediction": "time-series-forecasting",
    "HybridGRUForCTC": "automatic-speech-recognition",
}


def export_folder(model, output_dir: str | os.PathLike, processor, write) -> Path:
    """Checks the inputs, then builds the folder in a staging folder (`write(model, staging)` adds the graph and
    returns export_config fields) and renames it into place."""
    output_dir = Path(output_dir)
    _check_output_dir(output_dir)
    source = None
    if isinstance(model, (str, os.PathLike)):
        source, model = Path(model), _load_model(Path(model))
    task = _check_model(model)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.export-", dir=output_dir.parent))
    try:
        fields = write(model, staging)
        model.config.save_pretrained(staging)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(staging)
        _copy_processor_files(source, processor, staging)
        export_config = {**_export_config(model, task), **fields}
        (staging / EXPORT_CONFIG_FILE).write_text(json.dumps(export_config, indent=2) + "\n")  # written last
        if output_dir.exists():
            output_dir.rmdir()  # empty, checked above
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        what = "a folder that is not empty" if output_dir.is_dir() else "a file"
        raise ValueError(f"output_dir={str(output_dir)!r} is {what}; export into a new or empty folder.")
    if not output_dir.parent.is_dir():
        raise ValueError(
            f"output_dir={str(output_dir)!r}: its parent folder {str(output_dir.parent)!r} does not exist."
        )


def _load_model(path: Path):
    from transformers import AutoConfig

    if not (path / "config.json").is_file():
        raise ValueError(f"model={str(path)!r} is not a saved model folder (no config.json).")
    config = AutoConfig.from_pretrained(path)
    architecture = (config.architectures or [None])[0]
    if architecture not in EXPORTABLE:
        raise ValueError(f"model={str(path)!r} is a {architecture}; the exporters support {sorted(EXPORTABLE)}.")
    return _MODEL_CLASSES[architecture].from_pretrained(path)


_MODEL_CLASSES = {c.__name__: c for c in (HybridGRUForCausalLM, HybridGRUForTimeSeriesPrediction, HybridGRUForCTC)}


def _check_model(model) -> str:
    name = type(model).__name__
    if name not in EXPORTABLE or not isinstance(model, _MODEL_CLASSES[name]):
        raise ValueError(f"The exporters support {sorted(EXPORTABLE)}, got a {name}.")
    if model.config.bidirectional:
        raise ValueError(
            f"{name} has bidirectional=True: a bidirectional model sees the future, so it cannot run step by step; "
            "export a causal (bidirectional=False) model."
        )
    return EXPORTABLE[name]


def time_series_outputs(config: HybridGRUConfig, dtype: str) -> list[dict]:
    shape = ["batch", config.prediction_length, config.num_input_channels]
    names = ["prediction", *(["df", "distribution_loc", "distribution_scale"] if config.loss == "nll" else [])]
    return [{"name": name, "shape": shape, "dtype": dtype} for name in names]


def _copy_processor_files(source: Path | None, processor, target: Path) -> None:
    if processor is not None:
        processor.save_pretrained(target)
        return
    if source is None:
        return
    for name in PROCESSOR_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def _export_config(model, task: str) -> dict:
    dtype = str(model.dtype).removeprefix("torch.")
    config = model.config
    if task == "automatic-speech-recognition":
        inputs = [("input_features", ["batch", f"blocks * {SUBSAMPLING}", config.num_mel_bins], dtype)]
        outputs = [{"name": "logits", "shape": ["batch", "blocks", config.vocab_size], "dtype": dtype}]
        specs, extra = ctc_state_specs(config), {"subsampling": SUBSAMPLING}
    elif task == "time-series-forecasting":
        series = ["batch", "patches * patch_length", config.num_input_channels]
        stats = ["batch", 1, config.num_input_channels]
        inputs = [("past_values", series, dtype), ("past_observed_mask", series, dtype)]
        inputs += [("loc", stats, dtype), ("scale", stats, dtype)]
        outputs, specs = time_series_outputs(config, dtype), state_specs(config, "series")
        extra = {"series": "batch * num_input_channels: the backbone runs one row per series and channel"}
    else:
        inputs = [
            ("input_ids", ["batch", "sequence_length"], "int64"),
            ("attention_mask", ["batch", "past_length + sequence_length"], "int64"),
            ("position_ids", ["batch", "sequence_length"], "int64"),
        ]
        outputs = [{"name": "logits", "shape": ["batch", "sequence_length", config.vocab_size], "dtype": dtype}]
        specs, extra = state_specs(config), {}
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "task": task,
        "architecture": type(model).__name__,
        "dtype": dtype,
        "inputs": [{"name": name, "shape": shape, "dtype": kind} for name, shape, kind in inputs],
        "outputs": outputs,
        "states": [{**spec, "dtype": dtype} for spec in specs],
        **extra,
    }


def read_export_folder(
    path: str | os.PathLike, format: str, task: str, reader: str
) -> tuple[Path, HybridGRUConfig, dict]:
    """(folder, model config, export config) of an exported folder, checked to hold `format` and `task`."""
    path = Path(path)
    export_config_path = path / EXPORT_CONFIG_FILE
    if not export_config_path.is_file():
        raise ValueError(f"{str(path)!r} is not an exported model folder: it has no {EXPORT_CONFIG_FILE}.")
    export_config = json.loads(export_config_path.read_text())
    if export_config.get("format") != format or export_config.get("task") != task:
        raise ValueError(
            f"{str(export_config_path)!r} describes format={export_config.get('format')!r}, "
            f"task={export_config.get('task')!r}; {reader} runs {format!r} {task} exports."
        )
    return path, HybridGRUConfig.from_pretrained(path), export_config
