"""What determines a run's data, hashed: the **data digest**, and the check that keeps one
data digest per output directory.

A config holds two kinds of fields. Those that determine the records: the method and its
knobs and options, each agent's model, sampling parameters, system prompt, reasoning
settings and extra request body, and the reward. And those that do not: endpoints
(``base_url``/``base_urls``), ``api_key_env``, timeouts, retries, rate limits, client
options and prices. The data digest hashes only the first kind, so a moved port or a new
price resumes, while another model or temperature is refused (``--force-mixed`` appends
knowingly; ``--output`` starts a new directory).

The payload hashed is kept in ``OUTPUT/config.json``, so a refusal can say what differs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError
from toa_graph.synthesis.inputs import content_digest

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
NON_DATA_KEYS = frozenset(
    {
        "base_url",
        "base_urls",
        "api_key_env",
        "timeout_s",
        "max_retries",
        "requests_per_second",
        "max_concurrency",
        "client_options",
        "price_per_million",
        "supports_n",
        "source",
    }
)
"""Config fields that never change what a run generates (endpoints, client behaviour, prices)."""


def describe(x: Any) -> Any:
    """A JSON-able description of a config value: pydantic configs by content, other
    objects (fake models in tests, callables) by their name / type only."""
    if x is None:
        return None
    source = getattr(x, "_toa_reward_config", None)  # a reward built from a config
    if source is not None:
        return describe(source)
    if type(x).__module__ == "toa_graph.config" and hasattr(x, "model_dump"):
        return x.model_dump(mode="json", exclude={"source"} if hasattr(x, "source") else None)
    if hasattr(x, "model_dump") or callable(x):  # chat models, reward objects, functions
        model = getattr(x, "model_name", None) or getattr(x, "model", None)
        return {
            "type": type(x).__qualname__,
            "name": getattr(x, "name", None) or getattr(x, "__qualname__", None),
            "model": model if isinstance(model, str) else None,
        }
    if isinstance(x, Mapping):
        return {str(k): describe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [describe(v) for v in x]
    if isinstance(x, str | int | float | bool):
        return x
    return getattr(x, "name", None) or getattr(x, "__qualname__", None) or type(x).__qualname__


def _data_only(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _data_only(v) for k, v in x.items() if k not in NON_DATA_KEYS}
    if isinstance(x, list):
        return [_data_only(v) for v in x]
    return x


def data_payload(
    *,
    method: str,
    context: Mapping[str, Any] | None = None,
    agents: Any = None,
    reward: Any = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What determines the records of a run (no endpoints, timeouts, retries, limits, prices)."""
    payload = {
        "method": method,
        "context": describe(dict(context or {})),
        "agents": _data_only(describe(agents)),
        "reward": _data_only(describe(reward)),
        "options": describe(dict(options or {})),
    }
    return json.loads(json.dumps(payload, default=str))  # plain JSON, as read back


def data_digest(payload: Mapping[str, Any]) -> str:
    return content_digest(payload)[:16]


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Where two payloads differ, as ``path: old -> new`` lines (agents by name)."""
    if isinstance(old, list) and isinstance(new, list) and _named(old) and _named(new):
        old, new = {a["name"]: a for a in old}, {a["name"]: a for a in new}
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old or k not in new:
                out.append(f"{sub}: {_short(old.get(k))} -> {_short(new.get(k))}")
            else:
                out.extend(differences(old[k], new[k], sub))
        return out
    return [] if old == new else [f"{path or '(all)'}: {_short(old)} -> {_short(new)}"]


def _named(xs: list[Any]) -> bool:
    return all(isinstance(a, Mapping) and isinstance(a.get("name"), str) for a in xs)


def _short(x: Any) -> str:
    text = "(absent)" if x is None else json.dumps(x, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class MixedDigestError(UserError):
    """An output directory holds records made under another data digest."""


def check_output_digest(
    out_dir: str | os.PathLike[str],
    digest: str,
    payload: Mapping[str, Any],
    found: set[str],
    *,
    legacy_records: int = 0,
    force_mixed: bool = False,
) -> bool:
    """Refuse to append records of data digest ``digest`` to a directory whose records
    (data digests ``found``) were made under another, saying what differs; with
    ``force_mixed`` append anyway (a warning). Records from before the data digest
    (``legacy_records``, only a config digest) are accepted with a warning. Writes
    ``config.json`` for this run; whether the output is now mixed."""
    d = Path(out_dir)
    other = found - {digest}
    saved = _read_saved(d / CONFIG_FILE)
    if other:
        lines = []
        if saved is not None and saved.get("data_digest") in other:
            lines = differences(saved.get("data", {}), dict(payload))
        what = "\n  ".join(lines[:20]) or "(the earlier config was not saved)"
        msg = (
            f"{d} holds records made under another data config (data digest "
            f"{', '.join(sorted(other))}; this run: {digest}). What differs:\n  {what}\n"
            "Use --output DIR for a new directory, or --force-mixed to append to this one "
            "knowingly (export then needs --allow-mixed)."
        )
        if not force_mixed:
            raise MixedDigestError(msg)
        logger.warning("--force-mixed: %s", msg)
        marked = {**(saved or {}), "mixed": sorted(found | {digest})}
        _write_json(d / CONFIG_FILE, marked)
    if legacy_records:
        logger.warning(
            "%s: %d record(s) predate the data digest (config_digest only); they are kept "
            "and resumed as this config's", d, legacy_records,
        )  # fmt: skip
    if not other:
        _write_json(d / CONFIG_FILE, {"data_digest": digest, "data": payload})
    return bool(other)


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_export_digests(path: str | os.PathLike[str], digests: set[str]) -> None:
    """Refuse to export a run directory of several data digests (``digests``: those seen
    in its records so far; or marked mixed in its ``config.json`` by ``--force-mixed``)."""
    saved = _read_saved(Path(path) / CONFIG_FILE) if Path(path).is_dir() else None
    mixed = set(digests) | set((saved or {}).get("mixed") or ())
    if len(mixed) > 1:
        raise MixedDigestError(
            f"{path} holds records of {len(mixed)} data configs (data digests "
            f"{', '.join(sorted(mixed))}): one dataset would mix them. Export each run "
            "directory of one config, or pass --allow-mixed to export them together knowingly."
        )


def _read_saved(path: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None
