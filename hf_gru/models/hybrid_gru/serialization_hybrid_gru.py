"""Crash-safe saving and strict loading of HybridGRU checkpoints (used by `HybridGRUPreTrainedModel`).

Remote code: `modeling_hybrid_gru.py` imports this module, so `save_pretrained` copies it next to every checkpoint.
It imports only the standard library, safetensors and transformers, and defines functions and a mixin; nothing runs
at import.
"""

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers.configuration_utils import PreTrainedConfig
from transformers.utils import logging

STAGING_PREFIX = ".hf_gru_staging-"  # a save in progress; removed by the next save if the process died
PREVIOUS_PREFIX = ".hf_gru_previous-"  # the files a save is replacing; removed once the new save is complete
CHECKSUMS_NAME = "SHA256SUMS"  # `sha256sum -c SHA256SUMS` format, over the weight files of the save
COMMIT_MARKERS = ("config.json", "adapter_config.json")  # written last: without them a folder does not load
_SHARD = r"(-\d{5}-of-\d{5})?"

logger = logging.get_logger(__name__)

# Where each Auto class finds its class once the checkpoint is a folder of remote code (see `save_pretrained`).
AUTO_MAP = {
    "AutoConfig": "configuration_hybrid_gru.HybridGRUConfig",
    "AutoModel": "modeling_hybrid_gru.HybridGRUModel",
    "AutoModelForCausalLM": "modeling_hybrid_gru.HybridGRUForCausalLM",
    "AutoModelForSequenceClassification": "modeling_hybrid_gru.HybridGRUForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_hybrid_gru.HybridGRUForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_hybrid_gru.HybridGRUForQuestionAnswering",
    "AutoModelForTimeSeriesPrediction": "modeling_hybrid_gru_time_series.HybridGRUForTimeSeriesPrediction",
    "AutoModelForCTC": "modeling_hybrid_gru_ctc.HybridGRUForCTC",
    "AutoModelForSeq2SeqLM": "modeling_hybrid_gru_seq2seq.HybridGRUForConditionalGeneration",
}


def stamp_remote_code(folder: str | os.PathLike, config_module: str = "configuration_hybrid_gru") -> None:
    """Appends to the saved config module a SHA-256 over the other saved code files.

    transformers 5.24 names the module of a local checkpoint's code after the folder name and a hash of that file,
    and maps a config class to the first model class loaded for it. Two checkpoint folders of the same name whose
    config files match but modeling files differ (two hf_gru versions) would so run the first one's modeling code
    in one process. The stamp makes the config file, and so its class, differ whenever any code file differs.
    """
    folder = Path(folder)
    config_file = folder / f"{config_module}.py"
    if not config_file.is_file():
        return
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        if path != config_file:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    with open(config_file, "a", encoding="utf-8") as f:
        f.write(f"\n# sha256 of the other code files saved with this checkpoint: {digest.hexdigest()}\n")


def weight_file_pattern(variant: str | None, family: str = "model") -> re.Pattern:
    """Names transformers gives weight files: `model[.variant][-0000i-of-0000n].safetensors` and the index
    (family "model"), `adapter_model[.variant].safetensors` (family "adapter"), or either (family "any")."""
    dot_variant = re.escape(f".{variant}") if variant else ""
    model = rf"model{dot_variant}{_SHARD}\.safetensors|model\.safetensors\.index{dot_variant}\.json"
    adapter = rf"adapter_model{dot_variant}\.safetensors"
    return re.compile({"model": model, "adapter": adapter, "any": f"{model}|{adapter}"}[family])


def save_atomically(save_directory: str | os.PathLike, write: Callable[[str], None], variant: str | None) -> None:
    """Runs `write(staging_dir)` (a complete save into an empty folder), then moves the result into
    `save_directory` in an order that keeps the folder loadable only when it is complete; see
    `HybridGRUPreTrainedModel.save_pretrained` for the guarantee."""
    target = Path(save_directory)
    if target.exists() and not target.is_dir():
        raise ValueError(f"`save_directory` must be a folder, got the file {str(target)!r}.")
    target.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target, STAGING_PREFIX)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target))
    try:
        write(str(staging))
        # An adapter save replaces adapter files only; the base model's weights beside it stay.
        weights = weight_file_pattern(variant, "adapter" if (staging / "adapter_config.json").is_file() else "model")
        _write_checksums(staging, [p for p in staging.iterdir() if weights.fullmatch(p.name)])
        for path in staging.iterdir():
            _fsync(path)
        _commit(staging, target, weights)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _commit(staging: Path, target: Path, weights: re.Pattern) -> None:
    """Moves every staged file into `target`. First each file this save replaces or outdates is hard-linked (or
    copied) into a `PREVIOUS_PREFIX` folder, which so holds the previous save until the new one is complete."""
    names = sorted(p.name for p in staging.iterdir() if p.is_file())
    markers = [n for n in names if n in COMMIT_MARKERS]
    new_weights = sorted((n for n in names if weights.fullmatch(n)), key=lambda n: n.endswith(".json"))  # index last
    others = [n for n in names if n not in markers and n not in new_weights]
    old_weights = [p.name for p in target.iterdir() if weights.fullmatch(p.name) and p.is_file()]

    previous = Path(tempfile.mkdtemp(prefix=PREVIOUS_PREFIX, dir=target))
    for name in sorted(set(old_weights) | {n for n in names if (target / n).is_file()}):
        _link_or_copy(target / name, previous / name)
    _fsync(previous)
    for name in markers:  # from here on the folder does not load ...
        (target / name).unlink(missing_ok=True)
    _fsync(target)
    for name in sorted(old_weights, key=lambda n: not n.endswith(".json")):  # index first: weights never mix ...
        (target / name).unlink()
    for name in new_weights + others:
        os.replace(staging / name, target / name)
    _fsync(target)
    for name in markers:  # ... until the new save is complete
        os.replace(staging / name, target / name)
    _fsync(target)
    shutil.rmtree(previous, ignore_errors=True)
    _remove_leftovers(target, PREVIOUS_PREFIX)  # older interrupted saves, superseded by this complete one


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)  # instant, no extra space; the old file lives on when its name is replaced
    except OSError:  # file systems without hard links
        shutil.copy2(source, destination)


def _remove_leftovers(target: Path, prefix: str) -> None:
    for path in target.glob(f"{prefix}*"):
        shutil.rmtree(path, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flushes a file (or a folder's entries) to disk, so the commit order also holds after a power loss."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # folders cannot be opened on Windows; renames there are still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_checksums(folder: Path, files: list[Path]) -> None:
    lines = [f"{_sha256(path)}  {path.name}\n" for path in sorted(files)]
    (folder / CHECKSUMS_NAME).write_text("".join(lines), encoding="utf-8")


def check_local_checkpoint(folder: Path, config_given: bool, safetensors_only: bool, variant: str | None) -> None:
    """OSErrors for a local checkpoint folder that would load wrong or fail obscurely: an interrupted save, a
    missing config, `.bin`-only weights, or a safetensors file whose header is unreadable (truncated or corrupted).
    A weight file that differs from `SHA256SUMS` only gets a warning: tools rewrite weights on purpose."""
    interrupted = sorted(p.name for p in folder.glob(f"{PREVIOUS_PREFIX}*"))
    if not (folder / "config.json").is_file() and (interrupted or not config_given):
        hint = f" An interrupted save_pretrained left {interrupted}, holding the previous save." if interrupted else ""
        raise OSError(f"{str(folder)!r} has no config.json, so it is not a complete HybridGRU checkpoint.{hint}")
    weights = weight_file_pattern(variant, "any")
    safetensors = sorted(p for p in folder.glob("*.safetensors") if weights.fullmatch(p.name))
    pickles = sorted(p.name for p in folder.glob("*.bin"))
    if safetensors_only and not safetensors and pickles:
        raise OSError(
            f"{str(folder)!r} holds only pickle weights {pickles}; hf_gru loads safetensors by default. If you trust "
            "the file, pass use_safetensors=None (transformers then reads it with torch.load(weights_only=True))."
        )
    _verify_checksums(folder)
    for path in safetensors:
        try:
            with safe_open(path, framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise OSError(
                f"Weight file {str(path)!r} is truncated or corrupted (safetensors cannot read it: {error}). Download "
                f"or copy it again, or restore it from a backup; `sha256sum -c {CHECKSUMS_NAME}` in the folder checks "
                "a copy against the save."
            ) from error


def _verify_checksums(folder: Path) -> None:
    sums = folder / CHECKSUMS_NAME
    if not sums.is_file():
        return
    for line in sums.read_text(encoding="utf-8").splitlines():
        expected, name = line.split(maxsplit=1)
        path = folder / name.strip()
        if not path.is_file():  # e.g. a tool re-saved the weights as shards; transformers reports what is missing
            logger.warning(f"Weight file {str(path)!r}, listed in {CHECKSUMS_NAME}, is missing.")
        elif _sha256(path) != expected:  # rewritten on purpose (conversion, pruning, hand edits) or damaged
            logger.warning(
                f"Weight file {str(path)!r} does not match its SHA-256 in {CHECKSUMS_NAME}: it was changed after "
                f"saving. Loading what it holds; re-save the model to refresh {CHECKSUMS_NAME}, or restore the file "
                "if the change was not deliberate."
            )


class CheckpointShapeError(RuntimeError, ValueError):
    """A checkpoint tensor whose shape differs from the model's: a RuntimeError as transformers raises (its test suite
    and users' `except RuntimeError` rely on that), and a ValueError as hf_gru's other bad-checkpoint errors."""


def check_loaded_keys(model, info: dict, path: str, allow_mismatch: bool, report_asked: bool = False) -> None:
    """ValueErrors for backbone tensors the checkpoint lacks or has extra; `CheckpointShapeError` for tensors of
    another shape (transformers has logged them already, with the load report).

    The backbone is `model.base_model` (embeddings, layers, final norm). Tensors of a task head may be missing: they
    are the new head of a fine-tuning run, initialised (and reported) by transformers as usual. `report_asked`
    (`output_loading_info=True`): the caller reads the missing and unexpected keys from the returned report, as
    with transformers, so they are not raised.
    """
    prefix = model.base_model_prefix
    backbone = {name for name, _ in model.base_model.named_children()}

    def in_backbone(key: str) -> bool:
        key = key[len(prefix) + 1 :] if key.startswith(f"{prefix}.") else key
        return key.split(".")[0] in backbone

    for kind in ("missing_keys", "unexpected_keys"):
        keys = sorted(k for k in info.get(kind, ()) if in_backbone(k))
        if keys and not report_asked:
            what = f"lacks {len(keys)}" if kind == "missing_keys" else f"has {len(keys)} unexpected"
            raise ValueError(
                f"Checkpoint {path!r} {what} backbone tensor(s) of {type(model).__name__}: {keys[:8]}"
                f"{' ...' if len(keys) > 8 else ''}. Its config and weights disagree, or it is another model. Pass "
                "strict=False to load anyway (missing tensors are then randomly initialised)."
            )
    mismatched = sorted(
        f"{item[0]}: checkpoint {tuple(item[1])} vs model {tuple(item[2])}" if isinstance(item, tuple) else str(item)
        for item in info.get("mismatched_keys", ())
    )
    if mismatched and not allow_mismatch:
        raise CheckpointShapeError(
            f"Checkpoint {path!r} has {len(mismatched)} tensor(s) whose shape differs from the model's: "
            f"{mismatched[:8]}. Pass ignore_mismatched_sizes=True to re-initialise them (e.g. a new label count)."
        )


class HybridGRUSerializationMixin:
    """Crash-safe `save_pretrained` and strict `from_pretrained` for `HybridGRUPreTrainedModel` (listed before
    `PreTrainedModel` in its bases, so `super()` reaches transformers' versions)."""

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        *,
        push_to_hub: bool = False,
        distributed_checkpoint: bool = False,
        **kwargs,
    ) -> None:
        """Saves as transformers does, plus the full `auto_map`, every remote-code file and a `SHA256SUMS` of the
        weight files, so each Auto class loads the folder with `trust_remote_code=True` where hf_gru is not installed.

        Crash safety. The save is written into a `.hf_gru_staging-*` folder inside `save_directory` and flushed to
        disk. Each file it replaces or outdates is then hard-linked (copied where links fail) into a
        `.hf_gru_previous-*` folder; `config.json` (`adapter_config.json` for an adapter) is removed, the old weight
        files are removed (index first), the new ones moved in (shards before their index), then the other files,
        and `config.json` comes last. `.hf_gru_previous-*` is deleted once the save is complete. So whenever the
        process dies (killed, or power loss: files and folder entries are fsynced in that order):
        - the folder holds the previous save untouched, or this save complete, or no `config.json`, in which case
          `from_pretrained` raises an error naming `.hf_gru_previous-*`, which loads as the previous save;
        - the weight files are never a mix of two saves, even for loaders that skip `config.json` (Trainer's
          `resume_from_checkpoint`); outdated weight files (e.g. `model.safetensors` when this save is sharded)
          are removed, whereas transformers 5.24 leaves them to shadow the new shards;
        - files this save does not write (tokenizer, `optimizer.pt`, `trainer_state.json`, README, ...) are never
          touched. A Trainer checkpoint as a whole is complete only once Trainer has written `trainer_state.json`.
        Leftovers of a killed save are removed by the next save into the same folder. Not covered: two processes
        saving into one folder at once, and `distributed_checkpoint=True`, which transformers writes from every
        rank in place. `push_to_hub=True` pushes after the local save is complete, through `push_to_hub` (which
        saves again into a temporary folder and uploads it as one commit).
        """
        source_dir = Path(__file__).parent
        auto_map = {k: v for k, v in AUTO_MAP.items() if (source_dir / f"{v.split('.')[0]}.py").is_file()}
        self.config.auto_map = auto_map
        if distributed_checkpoint or not self.should_save_on_this_rank(is_main_process):
            # Ranks that write nothing still join transformers' collective gathers.
            return super().save_pretrained(
                save_directory, is_main_process, push_to_hub=push_to_hub,
                distributed_checkpoint=distributed_checkpoint, **kwargs,
            )  # fmt: skip
        hub_kwargs = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "create_pr", "private") if k in kwargs}
        parent_save = super().save_pretrained

        def write(staging: str) -> None:
            parent_save(staging, is_main_process, **kwargs)
            if self.is_remote_code():
                for module_name in {v.split(".")[0] for v in auto_map.values()}:
                    shutil.copyfile(source_dir / f"{module_name}.py", Path(staging) / f"{module_name}.py")
                stamp_remote_code(staging)

        save_atomically(save_directory, write, kwargs.get("variant"))
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", Path(save_directory).name)
            self.push_to_hub(
                repo_id, token=kwargs.get("token"), max_shard_size=kwargs.get("max_shard_size", "50GB"), **hub_kwargs
            )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args,
        strict: bool = True,
        use_safetensors: bool | None = True,
        **kwargs,
    ):
        """transformers' `from_pretrained`, stricter by default (transformers warns and initialises randomly).

        - `use_safetensors=True`: pickle `.bin` weights are refused; `use_safetensors=None` allows them (transformers
          then reads them with `torch.load(weights_only=True)`).
        - `strict=True`: OSError for a local folder with no `config.json` (transformers would build a default
          config), left by an interrupted save, or whose safetensors header is truncated or corrupted; ValueError for
          a config whose `model_type` is not `hybrid_gru`, that fails validation, or a checkpoint that lacks backbone
          tensors or has unexpected backbone tensors; `CheckpointShapeError` (a RuntimeError, as transformers raises,
          and a ValueError) for tensors of another shape, unless `ignore_mismatched_sizes=True`, which re-initialises
          them and logs which (transformers' load report). With `output_loading_info=True` missing and unexpected
          tensors are reported in the returned info, not raised. Missing task-head tensors are fine: that is a new head
          being fine-tuned, initialised and reported by transformers as usual. `strict=False` restores transformers'
          behaviour. Weights that differ from their `SHA256SUMS` (rewritten by a conversion or pruning tool, or by
          hand) load with a warning. Loading writes nothing into the checkpoint folder.
        """
        if not strict:
            return super().from_pretrained(
                pretrained_model_name_or_path, *model_args, use_safetensors=use_safetensors, **kwargs
            )
        path = str(pretrained_model_name_or_path) if pretrained_model_name_or_path is not None else None
        config = kwargs.get("config")
        folder = Path(path or "", kwargs.get("subfolder", ""))
        if path is not None and folder.is_dir():
            given = isinstance(config, PreTrainedConfig)
            check_local_checkpoint(folder, given, use_safetensors is True, kwargs.get("variant"))
        if path is not None and not isinstance(config, PreTrainedConfig):
            hub_names = ("cache_dir", "revision", "subfolder", "token", "local_files_only")
            hub = {k: kwargs[k] for k in hub_names if k in kwargs}
            model_type = PreTrainedConfig.get_config_dict(config or path, **hub)[0].get("model_type")
            if model_type != cls.config_class.model_type:
                raise ValueError(
                    f"{path!r} holds a model of type model_type={model_type!r}; {cls.__name__} loads "
                    f"{cls.config_class.model_type!r} checkpoints (pass strict=False to try anyway)."
                )
        want_info = kwargs.pop("output_loading_info", False)
        allow_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
        # A config field of the wrong type raises HybridGRUConfig.from_dict's ValueError in here.
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, use_safetensors=use_safetensors,
            output_loading_info=True, ignore_mismatched_sizes=True, **kwargs,
        )  # fmt: skip
        check_loaded_keys(model, info, path, allow_mismatch, report_asked=want_info)
        return (model, info) if want_info else model
