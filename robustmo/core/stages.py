"""The stage cache: each stage's output stored under the hash of its resolved inputs.

A stage (an organism, or one blue run = method x LR) lives in ``<root>/<kind>-<key>/``.
Its key hashes everything that determines its output: the upstream stage's key, the
stage's own options, the data it trains and evaluates on (hashed by content), and the
versions of the code that turns them into weights. While the stage works, the directory
holds its resumable training checkpoints (``train/``); when it is done its outputs are
written, then ``COMPLETE`` (the sha256 of every output file, written atomically) marks it
reusable. A run that meets a complete stage reuses it; one that meets a partial stage
continues it from its last checkpoint.

The root is ``$ROBUSTMO_CACHE/stages`` (default ``~/.cache/robustmo/stages``), shared by
every run and sweep on the machine (or on a shared filesystem); ``--no-cache`` gives a run a
private root inside its run directory, so nothing is reused but it still resumes.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustmo import __version__
from robustmo.core.errors import RobustmoError
from robustmo.core.runstore import atomic_write_json

# Bump when code changes what a stage produces from the same inputs (training loop, eval protocol).
STAGE_CODE_VERSION = "stages-5"  # 2: packed batches; 3: fused AdamW, logits at completion positions only; 4: fused RMSNorm, rotary; 5: metric results carry their kind (rate or mean)
MARKER = "COMPLETE"
# What a complete stage must hold (a marker listing nothing proves nothing).
REQUIRED = {"organism": ("organism/",), "blue": ("evals.jsonl", "compute.json"), "eval": ("eval.json",)}


def cache_dir() -> Path:
    """``$ROBUSTMO_CACHE`` or ``~/.cache/robustmo``."""
    return Path(os.environ.get("ROBUSTMO_CACHE") or Path.home() / ".cache" / "robustmo").expanduser()


def default_root() -> Path:
    return cache_dir() / "stages"


def source_digest(path: Path) -> str:
    """sha256 of a Python source tree (every .py file under ``path``, by relative name and
    content), or of one file: the identity of the code that computes a stage."""
    path = Path(path)
    return _source_digest(str(path.resolve()))


# robustmo's own files that cannot change what a stage computes: the CLI, the API, and what reads
# or presents stages' outputs afterwards. Editing them keeps every cached organism.
NOT_STAGE_CODE = ("api.py", "__main__.py", "cli/", "core/report.py", "core/history.py", "core/sweep.py",
                  "core/record.py", "core/tracking.py", "core/seeds.py", "core/summary.py", "core/robustness.py",
                  "core/lrcheck.py", "core/run.py", "core/context.py", "core/progress.py")


@functools.lru_cache(maxsize=None)
def _source_digest(path: str, skip: tuple[str, ...] = ()) -> str:
    root = Path(path)
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*.py") if "__pycache__" not in p.parts
        and not any(str(p.relative_to(root)).startswith(s) for s in skip))
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root.parent if root.is_file() else root)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def module_source(obj) -> str:
    """The source identity of the code behind a plugin object: its top-level package's tree (a
    detector may live in a helper module beside the class), or its module's file."""
    import importlib
    import inspect

    top = type(obj).__module__.split(".")[0]
    module = importlib.import_module(top)
    where = getattr(module, "__path__", None)
    if top == "robustmo":  # built-ins: robustmo's own source, as in code_versions
        return robustmo_source()
    try:
        return source_digest(Path(list(where)[0]) if where else Path(inspect.getfile(type(obj))))
    except (TypeError, OSError):  # a class defined in a notebook or at the prompt: its own source, if known
        try:
            return digest(inspect.getsource(type(obj)))
        except (TypeError, OSError):
            return digest(f"{type(obj).__module__}.{type(obj).__qualname__}: source unknown")


def robustmo_source() -> str:
    """The hash of robustmo's files that compute stages (not its CLI or its reports)."""
    return _source_digest(str(Path(__file__).parent.parent.resolve()), NOT_STAGE_CODE)


def code_versions() -> dict[str, str]:
    """What changes what training and generation compute: robustmo's own source (a hash of
    every file, not the version number, which a change does not bump), STAGE_CODE_VERSION and
    the versions of torch, transformers and peft."""
    import importlib.metadata as md

    out = {"robustmo": __version__, "robustmo_source": robustmo_source(),
           "stage_code": STAGE_CODE_VERSION}
    for pkg in ("torch", "transformers", "peft"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "-"
    return out


def digest(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def file_hashes(directory: Path) -> dict[str, str]:
    from robustmo.core.checkpoint import file_sha256

    return {str(p.relative_to(directory)): file_sha256(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != MARKER and "train" not in p.relative_to(directory).parts}


@dataclass
class Stage:
    kind: str
    key: str
    path: Path
    label: str

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    @property
    def checkpoints(self) -> Path:
        return self.path / "train"

    @property
    def lock_file(self) -> Path:
        return self.path.with_name(f"{self.path.name}.lock")

    def acquire(self, log=None) -> None:
        """Hold this stage's lock (an advisory ``flock``, released by the kernel if the process
        dies): two runs or sweep shards never compute the same stage at once; the second
        waits, then finds it complete."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.lock_file, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"{self.kind} stage {self.path.name} is being computed by another run; waiting for it")
            fcntl.flock(self._lock, fcntl.LOCK_EX)

    def release(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
            self._lock = None

    def is_complete(self) -> bool:
        return self.marker.exists()

    def verify(self) -> str | None:
        """None if every output matches its recorded sha256, else what is wrong."""
        try:
            recorded = json.loads(self.marker.read_text())["files"]
            names = list(recorded)
        except (OSError, ValueError, KeyError, TypeError):
            return f"its {MARKER} marker is unreadable"
        missing = [r for r in REQUIRED.get(self.kind, ()) if not any(n == r or n.startswith(r) for n in names)]
        if missing:
            return f"its {MARKER} marker lists no {missing[0]}"
        from robustmo.core.checkpoint import file_sha256

        for name, sha in recorded.items():
            path = self.path / name
            if not path.is_file():
                return f"{name} is missing"
            if file_sha256(path) != sha:
                return f"{name} does not match its sha256"
        return None

    def begin(self, inputs: dict) -> None:
        """Create the directory and record what the stage is (main process only)."""
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "stage.json"
        if not meta.exists():
            atomic_write_json(meta, {"kind": self.kind, "key": self.key, "label": self.label, "inputs": inputs,
                                     "created": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def finish(self, info: dict) -> None:
        """Mark the stage complete: outputs are written; their hashes go into the marker."""
        atomic_write_json(self.marker, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info,
                                        "files": file_hashes(self.path)})
        shutil.rmtree(self.checkpoints, ignore_errors=True)  # training state is no longer needed

    def reusable(self, log) -> bool:
        """True if this stage is complete and intact. Otherwise the main process holds the stage's
        lock (another run computing it is waited for first) and the caller computes it inside
        ``computing``; a corrupt one is set aside and recomputed. Every process gets the verdict."""
        from robustmo.core.distributed import barrier, broadcast, is_main

        barrier()  # no process looks before every process has arrived
        verdict = None
        if is_main():
            self.acquire(log)
            if self.is_complete():
                problem = self.verify()
                if problem is None:
                    verdict = True
                    self.release()
                else:
                    aside = self.set_aside()
                    log(f"warning: cached {self.kind} stage {self.path.name} is corrupt ({problem}); moved to {aside} "
                        "and recomputing it")
        return bool(broadcast(verdict))

    @contextmanager
    def computing(self, inputs: dict):
        """Compute this stage after ``reusable`` said no: the main process records what it is,
        every process starts together, and the lock is released at the end, also on failure. The
        body writes the outputs and calls ``finish`` (main process)."""
        from robustmo.core.distributed import barrier, is_main

        try:
            if is_main():
                self.begin(inputs)
            barrier()
            yield self
        finally:
            self.release()

    def json_once(self, inputs: dict, name: str, compute, log) -> tuple[Any, bool]:
        """The JSON value this stage keeps in file ``name``, and whether it was reused: read back
        when the stage is complete and intact; else ``compute()`` on every process (under
        ``accelerate launch`` they compute it together), written by the main one, and the stage
        marked complete."""
        from robustmo.core.distributed import barrier, is_main

        out = self.path / name
        if self.reusable(log):
            return json.loads(out.read_text()), True
        with self.computing(inputs):
            value = compute()
            if is_main():
                atomic_write_json(out, value)
                self.finish({})
            barrier()
        return value, False

    def set_aside(self) -> Path:
        """Move a corrupt stage out of the way (kept for inspection, never deleted silently)."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(self.path, aside)
        return aside


class StageCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def stage(self, kind: str, inputs: dict, label: str) -> Stage:
        key = digest({"kind": kind, "inputs": inputs, "versions": code_versions()})
        return Stage(kind, key, self.stage_path(kind, key), label)

    def stage_path(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key[:16]}"

    def entries(self) -> list[dict]:
        """Every stage directory under the root, for ``robustmo cache ls``."""
        out = []
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.iterdir()):
            if not path.is_dir():
                continue
            try:
                meta = json.loads((path / "stage.json").read_text())
                meta = meta if isinstance(meta, dict) else {}
            except (OSError, ValueError):
                meta = {}
            state = ("corrupt (set aside)" if ".corrupt-" in path.name else
                     "complete" if (path / MARKER).exists() else
                     "running" if _locked(path.with_name(f"{path.name}.lock")) else
                     "partial" if (path / "train").exists() else "empty")
            size = 0
            for f in path.rglob("*"):
                try:
                    size += f.stat().st_size if f.is_file() else 0
                except OSError:  # a checkpoint rotated away while we looked
                    pass
            out.append({"id": path.name, "kind": meta.get("kind", path.name.split("-")[0]),
                        "label": meta.get("label", "?"), "created": meta.get("created", "?"), "state": state,
                        "bytes": size, "path": str(path)})
        return out

    def remove(self, ids: list[str]) -> list[str]:
        """Delete stage directories by id or unique id prefix; unknown ids are an error (nothing deleted)."""
        entries = {e["id"]: e for e in self.entries()}
        chosen = []
        for wanted in ids:
            matches = [i for i in entries if i == wanted or i.startswith(wanted)]
            if not matches:
                raise RobustmoError(f"no cache entry {wanted!r} under {self.root}; 'robustmo cache ls' lists them")
            if len(matches) > 1 and wanted not in matches:
                raise RobustmoError(f"cache id prefix {wanted!r} is ambiguous ({', '.join(matches[:3])}, ...); "
                                    "give more characters")
            chosen.append(wanted if wanted in matches else matches[0])
        busy = [i for i in chosen if entries[i]["state"] == "running"]
        if busy:
            raise RobustmoError(f"cache entry {busy[0]} is being computed by a running robustmo process; "
                                "wait for it to finish (nothing was removed)")
        for i in chosen:
            try:
                shutil.rmtree(entries[i]["path"])
                Path(f"{entries[i]['path']}.lock").unlink(missing_ok=True)
            except OSError as exc:
                raise RobustmoError(f"cannot remove {entries[i]['path']}: {exc.strerror}") from None
        return chosen


def _locked(lock_file: Path) -> bool:
    """True while another process holds this stage's lock."""
    if not lock_file.exists():
        return False
    try:
        with open(lock_file, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def link_or_copy_tree(src: Path, dst: Path) -> None:
    """Put a stage's output into a run directory: hard links where the filesystem allows
    (no second copy of the weights), else copies; atomic (temp dir, then rename). The first
    failing file raises its own OSError (e.g. ENOSPC), and the temp dir is removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for f in sorted(Path(src).rglob("*")):
            target = tmp / f.relative_to(src)
            if f.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, target)
            except OSError:
                shutil.copyfile(f, target)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
