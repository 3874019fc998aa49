"""transformers' common model tests (`ModelTesterMixin`, `ConfigTester`), taken from the source distribution of the
installed transformers version at test time, so hf_gru is held to the same suite as the in-tree models.

The sdist ships `tests/test_modeling_common.py` and `tests/test_configuration_common.py` (Apache-2.0, with the
sdist's LICENSE) but not three modules they import: `tests/generation/test_utils.py` (`GenerationTesterMixin`),
`tests/exporters/test_export.py` (`ExportTesterMixin`) and `tests/utils/test_configuration_utils.py`
(`config_common_kwargs`). They are stood in for here, each saying what it replaces: generation is covered by
hf_gru's own tests, export by the export tests, and `config_common_kwargs` is rebuilt below from the documented
`PreTrainedConfig` arguments. Nothing of transformers' code is stored in this repository.

Where the files come from, first found wins: `$HF_GRU_TRANSFORMERS_TESTS` (a folder holding the two files), a cache
folder `~/.cache/hf_gru/transformers-<version>-tests`, else `pip download transformers==<version> --no-binary :all:
--no-deps` (PyPI; `.ci/run` runs it before the tests).
"""

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

SUITE_FILES = ("test_modeling_common.py", "test_configuration_common.py")
PACKAGE = "transformers_common_tests"

_STANDINS = {
    "generation/test_utils.py": '''"""Stand-in: transformers' GenerationTesterMixin is not in the sdist (hf_gru's own tests cover generate())."""


class GenerationTesterMixin:
    pass
''',
    "exporters/test_export.py": '''"""Stand-in: transformers' ExportTesterMixin is not in the sdist (hf_gru's export tests cover exporting)."""


class ExportTesterMixin:
    pass
''',
    "utils/test_configuration_utils.py": '''"""Stand-in for transformers' `config_common_kwargs`: a non-default value for common PreTrainedConfig arguments,
which every config must accept and keep (ConfigTester.check_config_arguments_init)."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "finetuning_task": "translation",
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "tokenizer_class": "BertTokenizerFast",
    "prefix": "prefix",
    "bos_token_id": 6,
    "pad_token_id": 7,
    "eos_token_id": 8,
    "sep_token_id": 9,
    "decoder_start_token_id": 10,
    "task_specific_params": {"translation": "some_params"},
    "problem_type": "regression",
}
''',
}


def _cache_dir() -> Path:
    return Path.home() / ".cache" / "hf_gru" / f"transformers-{transformers.__version__}-tests"


def _download(destination: Path) -> None:
    """Extracts the suite files and LICENSE of the installed version's sdist from PyPI into `destination`."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", tmp,
                   f"transformers=={transformers.__version__}"]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
        (archive,) = Path(tmp).glob("transformers-*.tar.gz")
        wanted = {f"tests/{name}" for name in SUITE_FILES} | {"LICENSE"}
        destination.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                relative = member.name.split("/", 1)[-1]
                if relative in wanted:
                    (destination / Path(relative).name).write_bytes(tar.extractfile(member).read())


def suite_folder() -> Path:
    """A folder holding the suite files, downloading them once if needed. Raises if they cannot be had."""
    given = os.environ.get("HF_GRU_TRANSFORMERS_TESTS")
    folder = Path(given) if given else _cache_dir()
    if not all((folder / name).is_file() for name in SUITE_FILES):
        if given:
            raise FileNotFoundError(f"$HF_GRU_TRANSFORMERS_TESTS={given!r} lacks {SUITE_FILES}.")
        _download(folder)
    return folder


def load_suite():
    """Imports the suite as the package `transformers_common_tests` (its files use relative imports) and returns
    `(test_modeling_common, test_configuration_common)`."""
    if PACKAGE in sys.modules:
        package_dir = Path(sys.modules[PACKAGE].__path__[0])
    else:
        source = suite_folder()
        package_dir = Path(tempfile.mkdtemp(prefix="hf_gru_suite_")) / PACKAGE
        package_dir.mkdir()
        (package_dir / "__init__.py").write_text("")
        for name in SUITE_FILES:
            (package_dir / name).write_bytes((source / name).read_bytes())
        for relative, text in _STANDINS.items():
            path = package_dir / relative
            path.parent.mkdir(exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(text)
        sys.path.insert(0, str(package_dir.parent))
    return tuple(importlib.import_module(f"{PACKAGE}.{name[:-3]}") for name in SUITE_FILES)
