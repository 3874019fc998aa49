"""Checkpoints are safe: an interrupted save never loads as a wrong model and keeps other files; bad checkpoints
(pickle weights, truncated or corrupted files, missing/extra/mis-shaped tensors, a foreign or invalid config) each
get a clear error and leave the folder as it was."""

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from hf_gru import HybridGRUForCausalLM, HybridGRUForSequenceClassification, HybridGRUModel
from hf_gru.models.hybrid_gru.serialization_hybrid_gru import CHECKSUMS_NAME
from tests.helpers import REPO, tiny_config

# Runs in a subprocess. Saves `old` (with a tokenizer, optimizer state, ... beside it), then for each kill point forks
# a child that starts saving `new` (other weights and another rope_theta) over a copy of that folder and SIGKILLs
# itself: after the first weight file is written into staging, or right before the k-th file operation (link,
# unlink, replace, rename) of the commit. The parent classifies what each killed folder loads as.
CRASH_SCRIPT = r'''
import json, os, shutil, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import transformers.modeling_utils as modeling_utils
from transformers.utils import logging
logging.set_verbosity_error(); logging.disable_progress_bar()
from safetensors.torch import load_file
from hf_gru import HybridGRUForCausalLM
from tests.helpers import tiny_config

root, old_shard, new_shard, which = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
OLD_THETA, NEW_THETA = 10000.0, 500.0
def build(seed, theta):
    torch.manual_seed(seed)
    return HybridGRUForCausalLM(tiny_config(rope_parameters={"rope_type": "default", "rope_theta": theta}))
old, new = build(0, OLD_THETA), build(1, NEW_THETA)
SIDECARS = {"tokenizer.json": b'{"model": "bpe"}', "optimizer.pt": os.urandom(256), "trainer_state.json": b"{}",
            "README.md": b"# my notes"}
reference = root / "reference"
old.save_pretrained(reference, max_shard_size=old_shard)
for name, data in SIDECARS.items():
    (reference / name).write_bytes(data)

def same(state, model):
    expected = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to the embeddings
    return state.keys() >= expected.keys() and all(torch.equal(state[k], v) for k, v in expected.items())

def as_model(folder):
    try:
        model = HybridGRUForCausalLM.from_pretrained(folder)
    except Exception as error:
        return f"error:{type(error).__name__}"
    theta, state = model.config.rope_parameters["rope_theta"], model.state_dict()
    if same(state, old) and theta == OLD_THETA:
        return "old"
    return "new" if same(state, new) and theta == NEW_THETA else "WRONG"

def as_weights(folder):
    """What Trainer's resume_from_checkpoint reads (config.json ignored): model.safetensors, else the index."""
    if (folder / "model.safetensors").is_file():
        state = load_file(folder / "model.safetensors")
    elif (folder / "model.safetensors.index.json").is_file():
        shards = set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values())
        if not all((folder / s).is_file() for s in shards):
            return "incomplete"
        state = {k: v for s in sorted(shards) for k, v in load_file(folder / s).items()}
    else:
        return "none"
    return "old" if same(state, old) else "new" if same(state, new) else "WRONG"

OPERATIONS = ("link", "unlink", "remove", "replace", "rename")

def count_operations(kill_at=None):
    count = [0]
    def counted(original):
        def call(*args, **kwargs):
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        return call
    originals = {name: getattr(os, name) for name in OPERATIONS}
    for name in OPERATIONS:
        setattr(os, name, counted(originals[name]))
    return count, originals

scratch = root / "scratch"
shutil.copytree(reference, scratch)
count, originals = count_operations()
new.save_pretrained(scratch, max_shard_size=new_shard)
total = count[0]
for name, original in originals.items():
    setattr(os, name, original)
sample = {1, 2, 3, total // 3, total // 2, total - 2, total - 1, total, total + 1}
steps = range(1, total + 2) if which == "all" else sorted(sample)

results = []
for point in ["stage"] + list(steps):
    folder = root / f"run-{point}"
    shutil.copytree(reference, folder)
    pid = os.fork()
    if pid == 0:
        if point == "stage":
            write = modeling_utils.safe_save_file
            def write_then_die(*args, **kwargs):
                write(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
            modeling_utils.safe_save_file = write_then_die
        else:
            count_operations(kill_at=point)
        new.save_pretrained(folder, max_shard_size=new_shard)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    previous = sorted(folder.glob(".hf_gru_previous-*"))
    results.append({
        "point": point, "killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
        "model": as_model(folder), "weights": as_weights(folder),
        "sidecars": all((folder / n).read_bytes() == d for n, d in SIDECARS.items()),
        "previous": as_model(previous[-1]) if previous and not (folder / "config.json").is_file() else None,
    })
    if not results[-1]["killed"] and point != "stage":
        break
crashed = root / f"run-{steps[len(steps) // 2]}"
new.save_pretrained(crashed, max_shard_size=new_shard)  # a complete save after a killed one
print(json.dumps({"total": total, "results": results, "recovered": as_model(crashed),
                  "leftovers": sorted(p.name for p in crashed.glob(".hf_gru_*"))}))
'''


def run_crash_script(tmp_path: Path, old_shard: str, new_shard: str, which: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), old_shard, new_shard, which]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_crash_results(report: dict) -> None:
    rows = report["results"]
    for row in rows:
        assert row["model"] in ("old", "new") or row["model"] == "error:OSError", row
        assert row["weights"] in ("old", "new", "none"), row  # never WRONG (a mix) nor an index with missing shards
        assert row["sidecars"], row
        if row["model"].startswith("error"):
            assert row["previous"] == "old", row  # the previous save is recoverable from .hf_gru_previous-*
    assert rows[0] == {**rows[0], "killed": True, "model": "old", "weights": "old"}  # killed while staging
    assert all(row["killed"] for row in rows[:-1]) and not rows[-1]["killed"] and rows[-1]["model"] == "new"
    assert any(row["model"].startswith("error") for row in rows)  # the kills did land inside the commit
    assert report["recovered"] == "new" and report["leftovers"] == []


SHARDS = {"single": "50GB", "sharded": "60KB"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills forked children (POSIX only)")
def test_killed_save_never_loads_as_a_wrong_model(tmp_path):
    """Sampled kill points over a single-file save replaced by a sharded one (the case transformers gets wrong)."""
    check_crash_results(run_crash_script(tmp_path, SHARDS["single"], SHARDS["sharded"], "sample"))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills forked children (POSIX only)")
@pytest.mark.parametrize(("old", "new"), [("single", "single"), ("single", "sharded"), ("sharded", "single"),
                                          ("sharded", "sharded")])  # fmt: skip
def test_killed_save_at_every_file_operation(tmp_path, old, new):
    report = run_crash_script(tmp_path, SHARDS[old], SHARDS[new], "all")
    assert len(report["results"]) == report["total"] + 2  # staging, every operation, and the completed save
    check_crash_results(report)


def lm(seed: int = 0, **overrides) -> HybridGRUForCausalLM:
    torch.manual_seed(seed)
    return HybridGRUForCausalLM(tiny_config(**overrides)).eval()


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too) with its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_save_keeps_other_files_and_replaces_its_own(tmp_path):
    lm(0).save_pretrained(tmp_path)
    sidecars = {"tokenizer.json": b"{}", "optimizer.pt": b"\x00" * 64, "README.md": b"# notes", "notes/a.txt": b"a"}
    for name, data in sidecars.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    new = lm(1)
    new.save_pretrained(tmp_path)
    assert all((tmp_path / name).read_bytes() == data for name, data in sidecars.items())
    assert same_weights(HybridGRUForCausalLM.from_pretrained(tmp_path), new)
    assert not list(tmp_path.glob(".hf_gru_*"))


def test_sharded_save_over_single_file_save_loads_the_new_weights(tmp_path):
    """transformers 5.24 keeps the old model.safetensors next to the new shards, and loads it first."""
    lm(0).save_pretrained(tmp_path)
    new = lm(1)
    new.save_pretrained(tmp_path, max_shard_size=SHARDS["sharded"])
    assert not (tmp_path / "model.safetensors").exists() and (tmp_path / "model.safetensors.index.json").is_file()
    assert same_weights(HybridGRUForCausalLM.from_pretrained(tmp_path), new)
    new.save_pretrained(tmp_path)  # and back: the shards and the index go
    assert sorted(p.name for p in tmp_path.glob("model*.safetensors*")) == ["model.safetensors"]


def test_checksums_match_the_weight_files(tmp_path):
    lm().save_pretrained(tmp_path, max_shard_size=SHARDS["sharded"])
    lines = (tmp_path / CHECKSUMS_NAME).read_text().splitlines()
    listed = {name: digest for digest, name in (line.split("  ") for line in lines)}
    weights = sorted(p.name for p in tmp_path.glob("model*.safetensors*"))
    assert sorted(listed) == weights and len(weights) > 2
    assert all(hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() == d for n, d in listed.items())


def test_leftovers_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    model = lm()
    model.save_pretrained(tmp_path)
    (tmp_path / ".hf_gru_staging-dead").mkdir()
    (tmp_path / ".hf_gru_staging-dead" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".hf_gru_previous-dead").mkdir()
    model.save_pretrained(tmp_path)
    assert not list(tmp_path.glob(".hf_gru_*"))


def test_save_into_a_file_path_raises(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"keep me")
    with pytest.raises(ValueError, match="`save_directory` must be a folder"):
        lm().save_pretrained(path)
    assert path.read_bytes() == b"keep me"


def test_save_pretrained_push_to_hub_pushes_after_a_complete_local_save(tmp_path, monkeypatch):
    pushed = []

    def fake_push(self, repo_id, **kwargs):
        pushed.append((repo_id, kwargs, snapshot(tmp_path / "my-model")))

    monkeypatch.setattr(HybridGRUForCausalLM, "push_to_hub", fake_push)
    lm().save_pretrained(tmp_path / "my-model", push_to_hub=True, commit_message="v1", private=True)
    ((repo_id, kwargs, files),) = pushed
    assert repo_id == "my-model" and kwargs["commit_message"] == "v1" and kwargs["private"] is True
    assert files == snapshot(tmp_path / "my-model") and "config.json" in files


def test_push_to_hub_uploads_every_remote_code_module(monkeypatch):
    """The real push_to_hub path (network calls stubbed) uploads what save_pretrained stages, code files included."""
    import transformers.utils.hub as hub

    uploaded = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

    monkeypatch.setattr(hub, "hf_api", FakeApi)
    card = type("Card", (), {"save": lambda *_: None})
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *a, **k: card())
    monkeypatch.setattr(HybridGRUForCausalLM, "_upload_modified_files",
                        lambda self, folder, repo_id, **k: uploaded.extend(sorted(os.listdir(folder))))  # fmt: skip
    lm().push_to_hub("someone/model")
    code = {
        "modeling_hybrid_gru.py",
        "configuration_hybrid_gru.py",
        "serialization_hybrid_gru.py",
        "recurrence_hybrid_gru.py",
        "input_checks_hybrid_gru.py",
        "modeling_hybrid_gru_time_series.py",
        "modeling_hybrid_gru_ctc.py",
    }
    assert {"config.json", "model.safetensors", CHECKSUMS_NAME} | code <= set(uploaded)
    assert not [name for name in uploaded if name.startswith(".hf_gru_")]


# --- loading bad checkpoints ----------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path) -> Path:
    folder = tmp_path / "ckpt"
    lm().save_pretrained(folder)
    return folder


def rewrite_weights(folder: Path, edit) -> None:
    """Edits the tensors as another tool would: the file changes and SHA256SUMS is gone."""
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / CHECKSUMS_NAME).unlink()


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def truncate(folder: Path, keep: int) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:keep] if keep >= 0 else data[:keep])


def flip_byte(folder: Path, offset: int) -> None:
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[offset] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))


def only_pickle(folder: Path) -> None:
    state = {k: v for k, v in load_file(folder / "model.safetensors").items()}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    (folder / CHECKSUMS_NAME).unlink()


def drop_checksums(folder: Path) -> None:
    (folder / CHECKSUMS_NAME).unlink()


CONV = "model.layers.0.mixer.conv.weight"

# (case id, how the checkpoint is spoiled, error type, pieces of the message)
BAD_CHECKPOINTS = [
    ("pickle-weights-only", only_pickle, OSError, ["pytorch_model.bin", "use_safetensors=None"]),
    ("truncated-half", lambda f: truncate(f, -4000), OSError, ["model.safetensors", CHECKSUMS_NAME]),
    ("truncated-no-checksums", lambda f: (truncate(f, -4000), drop_checksums(f)), OSError,
     ["model.safetensors", "truncated or corrupted", "incomplete metadata"]),
    ("empty-weight-file", lambda f: (truncate(f, 0), drop_checksums(f)), OSError, ["model.safetensors", "header"]),
    ("header-corrupted", lambda f: (flip_byte(f, 12), drop_checksums(f)), OSError, ["model.safetensors", "header"]),
    ("listed-file-missing", lambda f: (f / "model.safetensors").rename(f / "elsewhere"), OSError,
     ["model.safetensors", "no file named"]),
    ("missing-backbone-tensor", lambda f: rewrite_weights(f, lambda s: s.pop(CONV)), ValueError, ["lacks", CONV]),
    ("unexpected-backbone-tensor",
     lambda f: rewrite_weights(f, lambda s: s.update({"model.layers.9.x": torch.ones(1)})),
     ValueError, ["unexpected", "model.layers.9.x"]),
    ("mismatched-shape", lambda f: rewrite_weights(f, lambda s: s.update({CONV: torch.zeros(3, 3)})), RuntimeError,
     [CONV, "(3, 3)", "(32, 1, 4)"]),
    ("config-disagrees-with-weights", lambda f: edit_config(f, num_hidden_layers=4, layer_types=None), ValueError,
     ["lacks", "model.layers.3."]),
    ("unknown-model-type", lambda f: edit_config(f, model_type="foo_bar"), ValueError, ["model_type='foo_bar'"]),
    ("other-model-type", lambda f: edit_config(f, model_type="llama"), ValueError, ["model_type='llama'"]),
    ("config-fails-validation", lambda f: edit_config(f, num_attention_heads=3), ValueError,
     ["`hidden_size` (32)", "`num_attention_heads` (3)"]),
    ("config-field-of-wrong-type", lambda f: edit_config(f, hidden_size="32"), ValueError, ["hidden_size", "'32'"]),
    ("config-unknown-pattern-letter", lambda f: edit_config(f, block_pattern="GXA", layer_types=None), ValueError,
     ["`block_pattern`", "'GXA'", "X"]),
    ("config-not-json", lambda f: (f / "config.json").write_text("{not json"), OSError, ["config.json", "JSON"]),
    ("config-missing", lambda f: (f / "config.json").unlink(), OSError, ["no config.json"]),
    ("interrupted-save", lambda f: ((f / "config.json").unlink(), (f / ".hf_gru_previous-x").mkdir()), OSError,
     ["no config.json", ".hf_gru_previous-x"]),
]  # fmt: skip


@pytest.mark.parametrize(("spoil", "error", "pieces"), [c[1:] for c in BAD_CHECKPOINTS],
                         ids=[c[0] for c in BAD_CHECKPOINTS])  # fmt: skip
def test_bad_checkpoint_gets_clear_error_and_folder_is_left_as_is(saved, spoil, error, pieces):
    spoil(saved)
    before = snapshot(saved)
    with pytest.raises(error) as info:
        HybridGRUForCausalLM.from_pretrained(saved)
    for piece in pieces:
        assert piece in str(info.value), f"{piece!r} not in: {info.value}"
    assert snapshot(saved) == before


def test_mismatched_shape_is_a_runtime_and_value_error(saved):
    rewrite_weights(saved, lambda s: s.update({CONV: torch.zeros(3, 3)}))
    with pytest.raises(RuntimeError) as info:
        HybridGRUForCausalLM.from_pretrained(saved)
    assert isinstance(info.value, ValueError) and "ignore_mismatched_sizes=True" in str(info.value)


def test_ignore_mismatched_sizes_reinitialises_and_logs_the_tensor(saved, caplog):
    rewrite_weights(saved, lambda s: s.update({CONV: torch.zeros(3, 3)}))
    with caplog.at_level(logging.WARNING):
        model, info = HybridGRUForCausalLM.from_pretrained(
            saved, ignore_mismatched_sizes=True, output_loading_info=True
        )
    assert [key for key, *_ in info["mismatched_keys"]] == [CONV]
    assert CONV in caplog.text and "MISMATCH" in caplog.text
    assert model.get_parameter(CONV).shape == (32, 1, 4)


@pytest.mark.parametrize("offset", [-100, -4])
def test_rewritten_weights_load_with_a_checksum_warning(saved, caplog, offset):
    """A tool that changes model.safetensors (or a bit flip in tensor data, which safetensors cannot see) gets a
    warning naming the file, never a refusal; the tensors are loaded as the file holds them."""
    flip_byte(saved, offset)
    expected = load_file(saved / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        model = HybridGRUForCausalLM.from_pretrained(saved)
    assert "model.safetensors" in caplog.text and "SHA-256" in caplog.text
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in expected.items())


def test_replaced_weight_file_reports_every_missing_key(saved):
    """transformers' own check: a weight file rewritten without some tensors is reported with every missing key."""
    state = load_file(saved / "model.safetensors")
    dropped = sorted(k for k in state if k.startswith("model.layers.1."))
    save_file(
        {k: v for k, v in state.items() if k not in dropped}, saved / "model.safetensors", metadata={"format": "pt"}
    )
    for strict in (True, False):  # asking for the report means reading it: missing keys are listed, not raised
        _, info = HybridGRUForCausalLM.from_pretrained(saved, strict=strict, output_loading_info=True)
        assert sorted(info["missing_keys"]) == dropped
    with pytest.raises(ValueError, match=f"lacks {len(dropped)} backbone"):
        HybridGRUForCausalLM.from_pretrained(saved)


def test_auto_class_refuses_unknown_model_type(saved):
    config = json.loads((saved / "config.json").read_text())
    del config["auto_map"]  # with it, the Auto class would ask for trust_remote_code instead
    (saved / "config.json").write_text(json.dumps({**config, "model_type": "foo_bar"}))
    with pytest.raises(ValueError, match="foo_bar"):
        AutoModelForCausalLM.from_pretrained(saved)


@pytest.mark.parametrize("load", [AutoConfig.from_pretrained, AutoModelForCausalLM.from_pretrained],
                         ids=["AutoConfig", "AutoModelForCausalLM"])  # fmt: skip
def test_auto_classes_report_a_config_field_of_the_wrong_type_as_value_error(saved, load):
    edit_config(saved, hidden_size="32")
    with pytest.raises(ValueError, match=r"hidden_size.*'32'"):
        load(saved)


def test_opt_outs_restore_transformers_behaviour(saved):
    """use_safetensors=None loads pickle weights (torch.load(weights_only=True)); strict=False loads a checkpoint
    with a missing tensor, re-initialised with a warning; ignore_mismatched_sizes=True re-initialises a bad shape."""
    reference = HybridGRUForCausalLM.from_pretrained(saved)
    only_pickle(saved)
    assert same_weights(HybridGRUForCausalLM.from_pretrained(saved, use_safetensors=None), reference)
    lm().save_pretrained(saved)
    rewrite_weights(saved, lambda s: s.pop(CONV))
    model, info = HybridGRUForCausalLM.from_pretrained(saved, strict=False, output_loading_info=True)
    assert info["missing_keys"] == {CONV}
    lm().save_pretrained(saved)
    rewrite_weights(saved, lambda s: s.update({CONV: torch.zeros(3, 3)}))
    model = HybridGRUForCausalLM.from_pretrained(saved, ignore_mismatched_sizes=True)
    assert model.state_dict()[CONV].shape == (32, 1, 4)


def test_new_task_head_may_be_missing_and_other_heads_may_be_extra(tmp_path):
    """Fine-tuning starts from a checkpoint of another head: its missing head tensors are initialised, as usual."""
    causal = lm()
    causal.save_pretrained(tmp_path / "lm")
    classifier, info = HybridGRUForSequenceClassification.from_pretrained(tmp_path / "lm", num_labels=3,
                                                                          output_loading_info=True)  # fmt: skip
    assert info["missing_keys"] == {"score.weight"}
    assert torch.equal(classifier.model.embed_tokens.weight, causal.model.embed_tokens.weight)
    classifier.save_pretrained(tmp_path / "cls")
    backbone, info = HybridGRUModel.from_pretrained(tmp_path / "cls", output_loading_info=True)
    assert info["unexpected_keys"] == {"score.weight"} and not info["missing_keys"]


def test_adapter_save_keeps_the_base_model_beside_it(tmp_path):
    """An adapter save (adapter_config.json + adapter_model.safetensors, as transformers' peft integration writes)
    replaces adapter files only: the base model's weights in the same folder stay and still load."""
    from hf_gru.models.hybrid_gru.serialization_hybrid_gru import save_atomically

    lm().save_pretrained(tmp_path, max_shard_size=SHARDS["sharded"])
    base = {name: digest for name, digest in snapshot(tmp_path).items() if name.startswith(("model", "config"))}

    def write_adapter(staging: str) -> None:
        (Path(staging) / "adapter_config.json").write_text("{}")
        save_file({"lora_A": torch.ones(2, 2)}, Path(staging) / "adapter_model.safetensors")

    save_atomically(tmp_path, write_adapter, variant=None)
    after = snapshot(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= after.keys()
    assert {name: after.get(name) for name in base} == base and len(base) > 3


@pytest.mark.parametrize("head", ["time_series", "ctc"])
def test_heads_without_tokens_build_no_token_table_and_load_checkpoints_that_have_one(tmp_path, head):
    """The time-series and CTC heads embed continuous inputs, so their backbone has no `vocab_size x hidden` table;
    a checkpoint saved before that (holding the unused table) still loads strictly, with the same outputs."""
    from tests.models.hybrid_gru.test_modeling_hybrid_gru_ctc import ctc_model
    from tests.models.hybrid_gru.test_modeling_hybrid_gru_time_series import make_model, series

    model = make_model(vocab_size=500) if head == "time_series" else ctc_model()
    assert model.model.embed_tokens is None
    assert not [name for name in model.state_dict() if "embed_tokens" in name]
    inputs = {"past_values": series()} if head == "time_series" else {"input_features": torch.randn(2, 40, 16)}
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["model.embed_tokens.weight"] = torch.randn(model.config.vocab_size, model.config.hidden_size)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected, actual = model(**inputs), reloaded(**inputs)
    assert torch.equal(expected[0], actual[0])
    with pytest.raises(ValueError, match="without token embeddings"):
        model.model(input_ids=torch.zeros(1, 3, dtype=torch.long))
