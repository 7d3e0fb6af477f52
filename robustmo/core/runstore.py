"""The run directory as files: every file is written atomically (temp file, fsync, rename),
so a crash leaves either the previous complete version or the new one, never half. What the
files hold, and reading them back, is record.py's."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from robustmo.core.errors import RobustmoError


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class RunStore:
    """One run's directory. JSONL files are kept in memory and rewritten whole on each
    flush: small at this scale, and never left with a torn last line. A store that is not
    ``enabled`` (every process but the main one under ``accelerate launch``) writes nothing."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._jsonl: dict[str, list[dict]] = {}

    @contextmanager
    def held(self):
        """Hold this run directory while writing it (an advisory ``flock``, released when the
        process ends, even by SIGKILL): two processes resuming one run at once would mix their
        writes. A store that is not ``enabled`` holds nothing."""
        if not self.enabled:
            yield self
            return
        import fcntl

        with open(self.file(".lock"), "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RobustmoError(f"run directory {self.path} is in use by another robustmo process; wait for it "
                                    "to finish, or pass a new --out") from None
            yield self

    def check_writable(self) -> "RunStore":
        """Fail now, in one line, if the run directory could not be created (read-only disk,
        no permission), rather than after training."""
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            fd, tmp = tempfile.mkstemp(dir=probe, prefix=".robustmo-probe-")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise RobustmoError(f"cannot write the run directory {self.path}: {exc.strerror} in {probe}; "
                                "pass an --out on a writable disk") from None
        return self

    def ensure_new(self) -> "RunStore":
        """Refuse a run directory that already holds something: a run never overwrites another."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise RobustmoError(f"run directory {self.path} already exists and is not empty; "
                                "pass a new --out (nothing was overwritten)")
        return self

    def create(self) -> "RunStore":
        if not self.enabled:
            return self
        self.ensure_new()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RobustmoError(f"cannot create run directory {self.path}: {exc.strerror}") from None
        return self

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        if self.enabled:
            atomic_write_json(self.file(name), obj)

    def write_text(self, name: str, text: str) -> None:
        if self.enabled:
            atomic_write_text(self.file(name), text)

    def append(self, name: str, records: Iterable[dict]) -> None:
        if not self.enabled:
            return
        rows = self._jsonl.setdefault(name, [])
        rows.extend(records)
        atomic_write_text(self.file(name), "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
