"""The Hub code path: the remote-code files saved next to a checkpoint do nothing on import beyond defining classes.

What is checked, in a fresh `python -I` where hf_gru cannot be imported (`tests.helpers.run_without_hf_gru`):
- statically: each file's top level holds only imports, class and function definitions, assignments, docstrings
  and the `register_autograd`/`register_fake` calls that complete a torch.library custom op (no other top-level
  call statements, no if/for/while/with/try); custom ops are registered only under a namespace derived from the
  importing module's own name, so two copies of the code (two checkpoints) never collide;
- at import, after the modules the files import are loaded (their own import-time work is theirs), a
  `sys.addaudithook` hook records: files opened for writing and every file-system change (remove, rename, mkdir,
  chmod, ...), any network activity (socket creation, DNS, connect, urllib/http), subprocesses, forks, signals,
  thread starts (`threading.Thread.start` and `_thread.start_new_thread` are wrapped: 3.11 has no audit event for
  them), environment changes, `ctypes` library loads, tracing/profiling hooks; plus new live threads,
  changed `os.environ`/`sys.path`, torch's global state (default dtype, grad mode, thread count, deterministic
  flag, RNG state), Python's RNG, and transformers' registries (Auto mappings, attention functions);
- the harness itself is checked on a canary module that does each of those things, so a silent harness fails.
Bytecode caching is off in the child (`sys.dont_write_bytecode`): writing `.pyc` files is the import system's doing.
"""

import json
import shutil
import textwrap
from pathlib import Path

from hf_gru import HybridGRUForCausalLM
from tests.helpers import run_without_hf_gru, tiny_config

AUDIT = r"""
import ast, hashlib, importlib, json, os, random, re, sys, threading
sys.dont_write_bytecode = True
package_root, package, modules = {root!r}, {package!r}, {modules!r}
folder = os.path.join(package_root, package)
sys.path.insert(0, package_root)

static = []
ALLOWED = (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef, ast.Assign, ast.AnnAssign)
for name in modules:
    tree = ast.parse(open(os.path.join(folder, name + ".py")).read())
    for node in tree.body:
        value = node.value if isinstance(node, ast.Expr) else None
        docstring = isinstance(value, ast.Constant) and isinstance(value.value, str)
        # `op.register_autograd(...)` / `register_fake` complete a torch.library custom op (checked below)
        op_setup = isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr in (
            "register_autograd", "register_fake", "register_kernel")
        if not (isinstance(node, ALLOWED) or docstring or op_setup):
            static.append(f"{{name}}.py:{{node.lineno}} top-level {{type(node).__name__}}")
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                try:
                    getattr(module, alias.name)  # resolves lazy attributes now, not during our import
                except AttributeError:
                    importlib.import_module(f"{{node.module}}.{{alias.name}}")

import torch, transformers
from transformers.models.auto import configuration_auto, modeling_auto
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

def state():
    names = [n for n in dir(modeling_auto) if n.startswith("MODEL_") and n.endswith("_MAPPING")]
    mappings = [configuration_auto.CONFIG_MAPPING] + [getattr(modeling_auto, n) for n in names]
    return {{
        "threads": sorted(t.name for t in threading.enumerate()),
        "environ": hashlib.sha256(repr(sorted(os.environ.items())).encode()).hexdigest(),
        "sys.path": list(sys.path),
        "torch": [str(torch.get_default_dtype()), torch.is_grad_enabled(), torch.get_num_threads(),
                  torch.are_deterministic_algorithms_enabled(),
                  hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()],
        "python_rng": hashlib.sha256(repr(random.getstate()).encode()).hexdigest(),
        "registries": [sorted(map(str, getattr(m, "_extra_content", {{}}).keys())) for m in mappings]
                      + [sorted(ALL_ATTENTION_FUNCTIONS.keys())],
    }}

def custom_ops():
    from torch._library.custom_ops import OPDEFS  # qualified names of torch.library custom ops
    return set(OPDEFS)

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
FS = ("os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.symlink", "os.link", "os.truncate", "os.chmod",
      "os.chown", "os.chflags", "os.utime", "shutil.", "tempfile.")
NETWORK = ("socket.", "urllib.", "http.", "ftplib.", "smtplib.", "imaplib.", "poplib.", "nntplib.", "telnetlib.",
           "webbrowser.")
PROCESS = ("subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
           "os.killpg", "signal.", "pty.")
OTHER = ("_thread.start_new_thread", "threading.", "os.putenv", "os.unsetenv", "ctypes.dlopen", "sys.settrace",
         "sys.setprofile", "sys.addaudithook", "builtins.input")
events, imported = [], []

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if (mode and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS:
            events.append(f"open for writing: {{path}}")
    elif event == "import":
        imported.append(args[0])
    elif event.startswith(FS + NETWORK + PROCESS + OTHER):
        events.append(f"{{event}}: {{str(args)[:120]}}")

def counted(start, label):
    def call(*args, **kwargs):
        events.append(label)
        return start(*args, **kwargs)
    return call

import _thread
threading.Thread.start = counted(threading.Thread.start, "thread started")  # no audit event for threads in 3.11
_thread.start_new_thread = counted(_thread.start_new_thread, "thread started")
before, ops_before = state(), custom_ops()
sys.addaudithook(hook)
for name in modules:
    importlib.import_module(f"{{package}}.{{name}}")
after = state()
namespaces = {{re.sub(r"\W", "_", f"{{package}}.{{m}}") for m in modules}}
foreign_ops = sorted(op for op in custom_ops() - ops_before if op.split("::")[0] not in namespaces)
outside = sorted({{m for m in imported if m.split(".")[0] not in (package, "torch", "transformers", "huggingface_hub",
                                                              "safetensors", "tokenizers")}})
changed = sorted(k for k in before if before[k] != after[k])
print(json.dumps({{"static": static, "events": events, "changed": changed, "imported_outside": outside,
                  "foreign_ops": foreign_ops, "ops": sorted(custom_ops() - ops_before),
                  "classes": sorted(n for m in modules for n, v in vars(sys.modules[f"{{package}}.{{m}}"]).items()
                                    if isinstance(v, type) and v.__module__ == f"{{package}}.{{m}}")}}))
"""


def audit(tmp_path: Path, folder: Path, modules: list[str]) -> dict:
    root = tmp_path / "importable"
    package = root / "saved_checkpoint"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in modules:
        shutil.copyfile(folder / f"{name}.py", package / f"{name}.py")
    code = AUDIT.format(root=str(root), package=package.name, modules=modules)
    return run_without_hf_gru(code, cwd=tmp_path)


def test_saved_remote_code_only_defines_classes_on_import(tmp_path):
    folder = tmp_path / "checkpoint"
    HybridGRUForCausalLM(tiny_config()).save_pretrained(folder)
    modules = sorted(p.stem for p in folder.glob("*.py"))
    assert {"configuration_hybrid_gru", "modeling_hybrid_gru", "serialization_hybrid_gru"} <= set(modules)
    report = audit(tmp_path, folder, modules)
    assert report["static"] == [], report["static"]
    assert report["events"] == [], report["events"]
    assert report["changed"] == [], report["changed"]
    assert report["imported_outside"] == [], report["imported_outside"]
    assert report["foreign_ops"] == [], report["foreign_ops"]  # custom ops only in this copy's own namespace
    assert {"HybridGRUConfig", "HybridGRUForCausalLM", "HybridGRUModel"} <= set(report["classes"])


CANARY = '''
"""Does at import everything the audit must catch."""
import os
import socket
import subprocess
import threading

open(os.path.join(os.path.dirname(__file__), "written.txt"), "w").close()
os.environ["HF_GRU_CANARY"] = "1"
threading.Thread(target=lambda: None).start()
try:
    socket.create_connection(("127.0.0.1", 9), timeout=0.1)
except OSError:
    pass
subprocess.run(["true"], check=False)
import torch
torch.set_default_dtype(torch.float64)
'''


def test_audit_catches_import_time_side_effects(tmp_path):
    folder = tmp_path / "canary"
    folder.mkdir()
    (folder / "canary.py").write_text(textwrap.dedent(CANARY))
    report = audit(tmp_path, folder, ["canary"])
    events = "\n".join(report["events"])
    assert "top-level" in " ".join(report["static"])  # the statements at top level
    for expected in ("open for writing", "socket.", "subprocess.Popen", "thread started", "os.putenv"):
        assert expected in events, (expected, events)
    assert {"environ", "torch"} <= set(report["changed"]), report["changed"]
    result = json.dumps(report)
    assert "written.txt" in result


TWO_CHECKPOINTS = """
import inspect, json
from transformers import AutoModelForCausalLM
sources = []
for folder in {folders!r}:
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    sources.append(open(inspect.getsourcefile(type(model))).read().endswith("# a later hf_gru version\\n"))
print(json.dumps(sources))
"""


def test_same_named_checkpoints_with_different_code_each_run_their_own(tmp_path):
    """Two folders named `checkpoint` whose modeling code differs (saved by two hf_gru versions), loaded in one
    process: each runs its own code. transformers maps a config class to the first model class loaded for it, so
    without the code stamp in the saved config module the second would silently run the first one's code."""
    from hf_gru.models.hybrid_gru.serialization_hybrid_gru import stamp_remote_code

    folders = [tmp_path / "old" / "checkpoint", tmp_path / "new" / "checkpoint"]
    for folder in folders:
        HybridGRUForCausalLM(tiny_config()).save_pretrained(folder)
    config_file = folders[1] / "configuration_hybrid_gru.py"
    config_file.write_text(config_file.read_text().rsplit("\n# sha256", 1)[0] + "\n")  # as saved before stamping
    with open(folders[1] / "modeling_hybrid_gru.py", "a") as f:
        f.write("# a later hf_gru version\n")
    stamp_remote_code(folders[1])  # what save_pretrained of that version does
    assert run_without_hf_gru(TWO_CHECKPOINTS.format(folders=[str(f) for f in folders]), cwd=tmp_path) == [False, True]
