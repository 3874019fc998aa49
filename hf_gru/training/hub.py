"""Sharing trained models: a model card (README.md) with metrics and the training command, and a Hub upload that
fails with a clear message while leaving the local folder untouched.
"""

import json
import math
from collections.abc import Mapping
from pathlib import Path


class HubPushError(RuntimeError):
    """The upload to the Hugging Face Hub failed; the local folder was not changed."""


def write_model_card(
    folder: str | Path,
    *,
    title: str,
    summary: str,
    metrics: Mapping[str, float | int | str],
    command: str,
    pipeline_tag: str,
    usage: str,
    dataset: str | None = None,
    hyperparameters: Mapping[str, object] | None = None,
    plot: str | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Writes `folder/README.md`: Hub metadata (YAML), a summary, a metrics table, the command, usage and settings."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Model card folder {str(folder)!r} does not exist; save the model there first.")
    tags = ["hybrid_gru", "gru", "custom_code", pipeline_tag]
    header = ["---", "library_name: transformers", f"pipeline_tag: {pipeline_tag}", f"license: {license}", "tags:"]
    header += [f"- {tag}" for tag in tags] + ["---", ""]
    lines = header + [f"# {title}", "", summary, ""]
    if dataset:
        lines += [f"Training data: {dataset}", ""]
    lines += ["## Results", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {_format(value)} |" for name, value in metrics.items()]
    if plot and (folder / plot).is_file():
        lines += ["", f"![loss curve]({plot})"]
    lines += ["", "## Usage", "", "```python", usage.strip(), "```", ""]
    lines += ["## Training command", "", "```bash", command, "```", ""]
    if hyperparameters:
        lines += ["## Training settings", "", "```json", json.dumps(dict(hyperparameters), indent=2, default=str)]
        lines += ["```", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _format(value: float | int | str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isfinite(value):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload HybridGRU model",
    ignore_patterns: list[str] | None = None,
) -> str:
    """Creates `repo_id` on the Hub if needed and uploads `folder`; returns the commit URL.

    Any failure (offline mode, no network, no token, no permission) becomes a `HubPushError` whose message names the
    cause and the local folder, which is never modified here.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise ValueError(f"Folder {str(folder)!r} holds no saved model (no config.json or adapter_config.json).")
    if not repo_id or repo_id.count("/") > 1:
        raise ValueError(f"`repo_id` must look like 'user/name' or 'name', got {repo_id!r}.")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            commit_message=commit_message,
            ignore_patterns=ignore_patterns or ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.bin.tmp"],
        )
    except Exception as error:  # the Hub client raises many types (offline, HTTP, connection, auth)
        raise HubPushError(
            f"Could not push {str(folder)!r} to the Hub repo {repo_id!r}: {type(error).__name__}: {error}\n"
            f"The local folder is intact. Upload it later with: hf upload {repo_id} {folder} ."
        ) from error
    return str(getattr(info, "commit_url", info))


__all__ = ["HubPushError", "write_model_card", "push_folder_to_hub"]
