"""Run a sampling method over a prompt file: bounded concurrency, append-only JSONL, resume.

Modules, in the order a run uses them:

- :mod:`~toa_graph.synthesis.inputs`: prompt files parsed and validated with line numbers
  (JSONL, a JSON array, Parquet), sharding by id hash, the input walk.
- :mod:`~toa_graph.synthesis.records`: the record format, the config digest, the
  append-only writer, the records scan behind resume, :func:`failure_stage`.
- :mod:`~toa_graph.synthesis.rundir`: the output directory (lock, torn-tail repair, side
  files errors.jsonl / failed.jsonl, summary.json); the record sink that writes.
- :mod:`~toa_graph.synthesis.sink`: :class:`RecordSink`, shared by the single-process
  runner, the Ray driver and the Ray workers.
- :mod:`~toa_graph.synthesis.runner`: :class:`RunnerConfig`, the prompt loop,
  :func:`run_synthesis`.
- :mod:`~toa_graph.synthesis.ray_workers` / :mod:`~toa_graph.synthesis.ray_driver`: the
  same run on a Ray cluster (re-exported by :mod:`toa_graph.distributed`).
"""

from toa_graph.synthesis.dataset_input import iter_source, load_source
from toa_graph.synthesis.inputs import (
    ID_FIELDS,
    MAPPABLE,
    PROMPT_FIELDS,
    REFERENCE_FIELDS,
    BadLine,
    DatasetInput,
    InputError,
    LoadResult,
    PromptItem,
    in_shard,
    iter_input,
    load_input,
    normalize_row,
    parse_field_map,
    parse_jsonl,
    parse_rows,
    parse_shard,
)
from toa_graph.synthesis.records import (
    RECORDS_FILE,
    RecordWriter,
    ScanResult,
    build_record,
    config_digest,
    encode_record,
    failure_stage,
    read_records,
    repair_records,
    scan_records_bytes,
)
from toa_graph.synthesis.rundir import (
    ERRORS_FILE,
    FAILED_FILE,
    LOCK_FILE,
    SUMMARY_FILE,
    OutputBusyError,
    OutputLock,
    RunDirectory,
)
from toa_graph.synthesis.runner import RunnerConfig, run_config, run_synthesis, synthesize
from toa_graph.synthesis.sink import RecordSink, StreamSink
from toa_graph.synthesis.summary import ProgressFactory, PromptResult, SynthesisSummary

__all__ = [
    "ERRORS_FILE",
    "FAILED_FILE",
    "ID_FIELDS",
    "LOCK_FILE",
    "MAPPABLE",
    "PROMPT_FIELDS",
    "RECORDS_FILE",
    "REFERENCE_FIELDS",
    "SUMMARY_FILE",
    "BadLine",
    "DatasetInput",
    "InputError",
    "LoadResult",
    "OutputBusyError",
    "OutputLock",
    "ProgressFactory",
    "PromptItem",
    "PromptResult",
    "RecordSink",
    "RecordWriter",
    "RunDirectory",
    "RunnerConfig",
    "ScanResult",
    "StreamSink",
    "SynthesisSummary",
    "build_record",
    "config_digest",
    "encode_record",
    "failure_stage",
    "in_shard",
    "iter_input",
    "iter_source",
    "load_input",
    "load_source",
    "normalize_row",
    "parse_field_map",
    "parse_jsonl",
    "parse_rows",
    "parse_shard",
    "read_records",
    "repair_records",
    "run_config",
    "run_synthesis",
    "scan_records_bytes",
    "synthesize",
]
