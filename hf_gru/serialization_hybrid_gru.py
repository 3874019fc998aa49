"""Crash-safe saving and strict loading of HybridGRU checkpoints (used by `HybridGRUPreTrainedModel`).

Remote code: `modeling_hybrid_gru.py` imports this module, so `save_pretrained` copies it next to every checkpoint.
It imports only the standard library, torch's and transformers' dependencies, and defines functions; nothing runs at
import.
"""

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError, safe_open

STAGING_PREFIX = ".hf_gru_staging-"  # a save in progress; removed by the next save if the process died
PREVIOUS_PREFIX = ".hf_gru_previous-"  # the files a save is replacing; removed once the new save is complete
CHECKSUMS_NAME = "SHA256SUMS"  # `sha256sum -c SHA256SUMS` format, over the weight files of the save
COMMIT_MARKERS = ("config.json", "adapter_config.json")  # written last: without them a folder does not load
_SHARD = r"(-\d{5}-of-\d{5})?"


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
    missing config, `.bin`-only weights, a weight file whose SHA-256 differs from `SHA256SUMS`, or a safetensors file
    whose header is unreadable (truncated or corrupted)."""
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
            raise OSError(f"Weight file {str(path)!r} is truncated or corrupted: {error}.") from error


def _verify_checksums(folder: Path) -> None:
    sums = folder / CHECKSUMS_NAME
    if not sums.is_file():
        return
    for line in sums.read_text(encoding="utf-8").splitlines():
        expected, name = line.split(maxsplit=1)
        path = folder / name.strip()
        if not path.is_file():
            raise OSError(f"Weight file {str(path)!r}, listed in {CHECKSUMS_NAME}, is missing.")
        if _sha256(path) != expected:
            raise OSError(
                f"Weight file {str(path)!r} does not match its SHA-256 in {CHECKSUMS_NAME}: it is corrupted or was "
                f"changed after saving. Re-save it, or delete {CHECKSUMS_NAME} if the change was deliberate."
            )


def check_loaded_keys(model, info: dict, path: str, allow_mismatch: bool) -> None:
    """ValueErrors for backbone tensors the checkpoint lacks, has extra, or has with another shape.

    The backbone is `model.base_model` (embeddings, layers, final norm). Tensors of a task head may be missing: they
    are the new head of a fine-tuning run, initialised (and reported) by transformers as usual.
    """
    prefix = model.base_model_prefix
    backbone = {name for name, _ in model.base_model.named_children()}

    def in_backbone(key: str) -> bool:
        key = key[len(prefix) + 1 :] if key.startswith(f"{prefix}.") else key
        return key.split(".")[0] in backbone

    for kind in ("missing_keys", "unexpected_keys"):
        keys = sorted(k for k in info.get(kind, ()) if in_backbone(k))
        if keys:
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
        raise ValueError(
            f"Checkpoint {path!r} has {len(mismatched)} tensor(s) whose shape differs from the model's: "
            f"{mismatched[:8]}. Pass ignore_mismatched_sizes=True to re-initialise them (e.g. a new label count)."
        )
