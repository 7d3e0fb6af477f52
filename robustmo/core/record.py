"""The run record: what a run directory holds, as typed, versioned models, and the only code
that writes or reads them.

    config.json       RunConfig (what the run was asked to do; written first)
    manifest.json     Manifest (versions, base model identity, components, status)
    metrics.jsonl     one CheckpointRecord per evaluation: the base, the organism, every blue step
    generations.jsonl every scored generation (for re-scoring), one line per prompt
    summary.json      Summary (robustness per blue method), once the run is complete

``FORMAT`` is written into the manifest and the summary. A run directory written before
formats were numbered (format 1) loads as it is; one written by a newer robustmo is refused
in one line naming its format. ``runs ls|show|compare``, ``rescore``, sweep aggregation,
``--resume`` and ``robustmo.load_run`` all read through ``load_run``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from robustmo.core.errors import RobustmoError

FORMAT = 2  # 2: metric results carry their kind (rate or mean); the summary names the metric roles
RUN_FILES = ("config.json", "manifest.json", "summary.json", "metrics.jsonl")
STATUSES = ("running", "complete", "failed", "interrupted")


class CorruptRun(RobustmoError):
    """A run directory whose files cannot be read; ``runs ls`` lists it as corrupt."""

    HINT = "the run directory is damaged: restore the file, or delete the directory and run again"


class NewerFormat(CorruptRun):
    """A run directory written by a newer robustmo, in a record format this one does not read."""

    HINT = "upgrade robustmo (pip install -U robustmo) to read it"


class _Record(BaseModel):
    # Readers accept keys they do not know (a later minor addition), never a missing one.
    model_config = ConfigDict(extra="allow")


class MetricResult(_Record):
    """One metric at one checkpoint: mean score over the eval set's prompts, n, 95 % interval;
    a grader's results also hold ``unparsed``, the generations with no answer it could read
    (counted as not correct)."""

    value: float
    n: int
    ci: list[float] = Field(min_length=2, max_length=2)
    kind: Literal["rate", "mean"] = "rate"  # rate: True/False scores, Wilson interval; mean: bootstrap


class CheckpointRecord(_Record):
    """One line of metrics.jsonl: where in the run an evaluation was taken, and its metrics."""

    stage: str
    method: str
    lr: float = 0.0
    step: int = 0
    tokens: int = 0
    flops: float = 0.0
    metrics: dict[str, MetricResult]
    truncated: dict[str, int] = Field(default_factory=dict)  # per eval set: generations cut off at the length limit


class Manifest(_Record):
    format: int = 1
    robustmo: str = "?"
    run_id: str = ""
    status: str
    started: str = ""
    seed: int = 0
    model: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    processes: int = 1
    sharding: str | None = None  # "fsdp2": trained sharded across the processes (an FSDP Accelerate config)
    stage_cache: str = ""
    components: dict[str, Any] = Field(default_factory=dict)
    resumed: list[str] = Field(default_factory=list)
    error: str | None = None
    seconds: float | None = None


class MethodSummary(_Record):
    """The robustness of one blue method (summary.json's ``blue`` entries)."""

    auc: float
    auc_ci: list[float] = Field(min_length=2, max_length=2)
    removal_at_10: float = math.nan
    removal_at_10_ci: list[float] = Field(default_factory=lambda: [math.nan, math.nan])
    note: str | None = None
    capability_metric: str = "capability"
    backdoor_metric: str = "backdoor_rate"
    checkpoints: list[dict[str, Any]] = Field(default_factory=list)
    # can the AUC be read as robustness? (format 2; absent in format 1)
    inconclusive: bool = False
    inconclusive_reason: str | None = None
    lowest_capability_rel: float = math.nan
    noise_floor: float = math.nan    # 95th percentile of the AUC of attacks that change nothing
    within_noise: bool | None = None
    escalation: list[float] = Field(default_factory=list)  # LRs of the --escalate rungs that ran
    # a run over several seeds: auc is the mean over seeds, auc_ci over seeds and prompts
    seeds: list[int] = Field(default_factory=list)
    defined_seeds: list[int] = Field(default_factory=list)  # the seeds whose robustness is defined (in the mean)
    auc_per_seed: dict[str, float] = Field(default_factory=dict)
    auc_ci_bootstrap: list[float] = Field(default_factory=list)  # the hierarchical bootstrap's interval ...
    auc_ci_t: list[float] = Field(default_factory=list)          # ... and the t interval over seeds; auc_ci spans both
    removal_at_10_per_seed: dict[str, float] = Field(default_factory=dict)
    lr_check: dict[str, Any] = Field(default_factory=dict)
    # --suppression-steps: per blue run that ended with the behaviour removed, did it come back (blue.suppression_result)
    suppression: list[dict[str, Any]] = Field(default_factory=list)
    elicitation: list[dict[str, Any]] | None = None
    runs: list[dict[str, Any]] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)


class Summary(_Record):
    format: int = 1
    run_id: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    model: str = ""
    base: dict[str, MetricResult] = Field(default_factory=dict)
    organism: dict[str, MetricResult] = Field(default_factory=dict)
    red_data: dict[str, Any] = Field(default_factory=dict)
    roles: dict[str, str] = Field(default_factory=dict)
    # generations cut off at the length limit, per eval set: {"base" | "organism" | method: {set: [cut, of n]}}
    truncated: dict[str, dict[str, list[int]]] = Field(default_factory=dict)
    blue: dict[str, MethodSummary]
    seconds: float | None = None
    # the process's peak memory at the run's end: peak_rss_bytes, and cuda_max_allocated_bytes with CUDA
    peak_memory: dict[str, int] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list)           # a run over several seeds (--seeds) ...
    seed_runs: dict[str, str] = Field(default_factory=dict)  # ... and each seed's run directory, inside this one

    def roles_or_default(self) -> dict[str, str]:
        """The metric roles; a format-1 summary names them per method (``capability_metric``)."""
        if self.roles:
            return dict(self.roles)
        first = next(iter(self.blue.values()), None)
        cap = first.capability_metric if first else "capability"
        return {"backdoor": "backdoor_rate", "capability": cap,
                **({"locked_capability": "capability"} if cap == "unlocked_capability" else {})}


# --------------------------------------------------------------------------- reading
def _json(path: Path, run_id: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptRun(f"run {run_id}: {path.name} is missing") from None
    except json.JSONDecodeError as exc:
        raise CorruptRun(f"run {run_id}: {path.name} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptRun(f"run {run_id}: cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}") from None


def read_jsonl(path: Path, run_id: str) -> list[dict]:
    """Every line of a run's JSONL file as a dict; CorruptRun names the first bad line."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise CorruptRun(f"run {run_id}: {path.name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptRun(f"run {run_id}: cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise CorruptRun(f"run {run_id}: {path.name}, line {i} is not a JSON object")
        rows.append(row)
    return rows


def _parse(model: type[BaseModel], data: Any, run_id: str, name: str, what: str):
    if not isinstance(data, dict):
        raise CorruptRun(f"run {run_id}: {name} {what} (it is not a JSON object)")
    newer = data.get("format")
    if isinstance(newer, int) and newer > FORMAT:
        raise NewerFormat(f"run {run_id}: {name} is run record format {newer}, written by a newer robustmo; this one "
                          f"reads formats 1-{FORMAT}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise CorruptRun(f"run {run_id}: {name} {what} ({loc}: {err['msg']})") from None


def read_config(path: Path, run_id: str | None = None) -> dict:
    """config.json as a RunConfig's dict (keys a format-1 run lacks get their defaults)."""
    from robustmo.core.config import RunConfig

    run_id = run_id or Path(path).name
    data = _json(Path(path) / "config.json", run_id)
    config = _parse(RunConfig, data, run_id, "config.json", "is not a run config robustmo reads")
    return config.model_dump()


def read_manifest(path: Path, run_id: str | None = None) -> Manifest:
    run_id = run_id or Path(path).name
    return _parse(Manifest, _json(Path(path) / "manifest.json", run_id), run_id, "manifest.json", "has no status")


def read_summary(path: Path, run_id: str | None = None) -> Summary:
    run_id = run_id or Path(path).name
    return _parse(Summary, _json(Path(path) / "summary.json", run_id), run_id, "summary.json", "has no per-method AUC")


def read_checkpoints(path: Path, run_id: str | None = None) -> list[CheckpointRecord]:
    run_id = run_id or Path(path).name
    out = []
    for i, row in enumerate(read_jsonl(Path(path) / "metrics.jsonl", run_id), 1):
        out.append(_parse(CheckpointRecord, row, run_id, f"metrics.jsonl, line {i}", "is not a checkpoint record"))
    return out


@dataclass
class Run:
    """One run directory, read: its config, manifest, summary (once complete) and checkpoints.
    ``robustmo.run(...)`` returns one, and ``robustmo.load_run(path)`` reads one back."""

    path: Path
    status: str                      # running | complete | failed | interrupted | corrupt
    config: dict
    manifest: Manifest | None = None
    summary: Summary | None = None
    problem: str | None = None       # why the run is corrupt

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def started(self) -> str:
        return self.manifest.started if self.manifest else ""

    @property
    def methods(self) -> dict[str, MethodSummary]:
        """Robustness per blue method (empty until the run is complete)."""
        return dict(self.summary.blue) if self.summary else {}

    def auc(self, method: str) -> float:
        """The robustness AUC of one blue method (0.5 = maximally robust, ~1 = removable for free)."""
        if method not in self.methods:
            raise RobustmoError(f"run {self.id} has no robustness result for blue method {method!r} "
                                f"(it has: {', '.join(self.methods) or 'none; status ' + self.status})")
        return self.methods[method].auc

    def checkpoints(self) -> list[CheckpointRecord]:
        """Every evaluation in metrics.jsonl, in order."""
        return read_checkpoints(self.path, self.id)

    def organism_metrics(self) -> tuple[dict, dict]:
        """(base, organism) metrics as dicts: from summary.json, else from metrics.jsonl (an unfinished run)."""
        if self.summary:
            return ({k: v.model_dump() for k, v in self.summary.base.items()},
                    {k: v.model_dump() for k, v in self.summary.organism.items()})
        found = {}
        if (self.path / "metrics.jsonl").exists():
            for ck in self.checkpoints():
                if ck.method in ("base", "organism"):
                    found[ck.method] = {k: v.model_dump() for k, v in ck.metrics.items()}
        return found.get("base", {}), found.get("organism", {})


def is_run_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any((path / name).exists() for name in RUN_FILES)
    except OSError:  # unreadable: let load_run say why, rather than skip it silently
        return True


def load_run(path: Path) -> Run:
    """Read one run directory; raise CorruptRun (one line: which file, what is wrong) if it
    cannot be read, RobustmoError if it is not a run directory or was written by a newer robustmo."""
    path = Path(path)
    rid = path.name
    if not is_run_dir(path):
        raise RobustmoError(f"{path} is not a run directory (it holds none of {', '.join(RUN_FILES)}); pass a run "
                            "directory or a run id from 'robustmo runs ls'")
    manifest = read_manifest(path, rid)  # first: a newer format is said as such, not as a config it cannot read
    config = read_config(path, rid)
    summary = None
    if (path / "summary.json").exists() or manifest.status == "complete":
        summary = read_summary(path, rid)
    return Run(path, manifest.status, config, manifest, summary)


# --------------------------------------------------------------------------- writing
def write_config(store, config) -> None:
    store.write_json("config.json", config.model_dump())


def new_manifest(plan, model_info: dict, stage_cache: str, previous: Manifest | None) -> Manifest:
    """The manifest of a run starting now (or resuming: its first start and every resume are kept)."""
    from robustmo import __version__
    from robustmo.core.distributed import process_info
    from robustmo.core.sharding import stage_input

    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    cfg = plan.config
    manifest = Manifest(format=FORMAT, robustmo=__version__, run_id="", seed=cfg.seed, model=model_info,
                        versions=versions(), status="running", started=now, processes=process_info()[1],
                        sharding=stage_input().get("sharding"), stage_cache=stage_cache,
                        components={f"{s.kind}:{s.name}": {"package": s.package, "options": s.options.model_dump(mode="json")}
                                    for s in plan.components})
    if previous is not None:
        manifest.started = previous.started or now
        manifest.resumed = [*previous.resumed, now]
    return manifest


def write_manifest(store, manifest: Manifest) -> None:
    store.write_json("manifest.json", manifest.model_dump())


def append_checkpoint(store, ck) -> None:
    """Append one evaluation's generations and metrics to the run directory."""
    store.append("generations.jsonl", ck.generations)
    row = CheckpointRecord.model_validate({**ck.where, "metrics": ck.metrics, "truncated": ck.truncated})
    store.append("metrics.jsonl", [row.model_dump()])


def write_summary(store, summary: dict) -> Summary:
    """Validate and write summary.json; returns the typed summary."""
    typed = Summary.model_validate({**summary, "format": FORMAT})
    store.write_json("summary.json", typed.model_dump())
    return typed


def versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "pluggy", "wandb", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "-"
    return out


def _saved(path: Path) -> tuple[Manifest, dict]:
    """``(manifest, config)`` as saved in a run directory; CorruptRun or RobustmoError if unreadable."""
    return read_manifest(path), read_config(path)


def resume_manifest(path: Path, config: dict) -> Manifest:
    """Check that ``path`` holds an unfinished run of ``config``; return its manifest."""
    path = Path(path)
    for name in ("manifest.json", "config.json"):
        if not (path / name).exists():
            raise RobustmoError(f"cannot resume {path}: {name} is missing; is this a robustmo run directory?")
    try:
        manifest, saved = _saved(path)
    except CorruptRun as exc:
        raise RobustmoError(f"cannot resume {path}: its manifest or config is unreadable ({exc})") from None
    if manifest.status == "complete":
        raise RobustmoError(f"run {path} is already complete; nothing to resume ('robustmo runs show' displays it)")
    if saved != config:
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise RobustmoError(f"cannot resume {path} with a different config (changed: {', '.join(changed)}); "
                            "resume with 'robustmo run --resume DIR' alone, or pass a new --out")
    return manifest


def unfinished(path: Path, config: dict) -> bool:
    """True if ``path`` holds an unfinished run of exactly ``config`` (to resume)."""
    try:
        manifest, saved = _saved(Path(path))
    except RobustmoError:
        return False
    return manifest.status != "complete" and saved == config


def run_state(path: Path, config: dict | None = None) -> str:
    """pending (nothing started), the manifest's status, corrupt, or changed (the directory
    holds a run of another config than ``config``)."""
    path = Path(path)
    if not (path / "manifest.json").exists():
        return "pending"
    try:
        manifest = read_manifest(path)
        if config is not None and read_config(path) != config:
            return "changed"
    except RobustmoError:
        return "corrupt"
    return manifest.status


def reuse_or_run(sub: Path, label: str, run, log, doing: str = "") -> "Run":
    """A run inside another (a seed's, an audit method's): read back when complete, resumed when
    unfinished, started when pending (``run(resume)``); a corrupt one stops in one line.
    ``label`` starts every line said of it; ``doing`` says what running it does."""
    done, resume = reused_run(sub, label, log)
    if done is not None:
        return done
    log(starting_line(sub, label, resume, doing))
    return run(resume)


def reused_run(sub: Path, label: str, log) -> tuple["Run | None", bool]:
    """``reuse_or_run``'s look at ``sub`` before running: (the run, read back when complete,
    else None; whether running it resumes it). A corrupt one stops in one line."""
    state = run_state(sub)
    if state == "complete":
        log(f"{label}: complete, reused ({sub})")
        return load_run(sub), False
    if state == "corrupt":
        raise RobustmoError(f"{label}: {sub} is unreadable; remove that directory to run it again")
    return None, state != "pending"


def starting_line(sub: Path, label: str, resume: bool, doing: str = "") -> str:
    return f"{label}: {'resuming' if resume else 'running'}{doing} ({sub})"


def load_run_config(run_dir: Path):
    """The RunConfig a run directory was started with (for ``--resume``), with one-line errors."""
    from robustmo.core.config import RunConfig

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RobustmoError(f"run directory {run_dir} does not exist; 'robustmo runs ls' lists runs")
    if not (run_dir / "config.json").exists():
        raise RobustmoError(f"{run_dir} has no config.json; is it a robustmo run directory?")
    try:
        return RunConfig(**read_config(run_dir))
    except RobustmoError as exc:
        detail = str(exc).split(": ", 1)[-1]
        raise RobustmoError(f"{run_dir / 'config.json'} is corrupt ({detail}); the run cannot be resumed from it") from None
