"""The run directory: every file is written atomically (temp file, fsync, rename),
so a crash leaves either the previous complete version or the new one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from robustmo.core.errors import RobustmoError


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
    flush: small at this scale, and never left with a torn last line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._jsonl: dict[str, list[dict]] = {}

    def ensure_new(self) -> "RunStore":
        """Refuse a run directory that already holds something: a run never overwrites another."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise RobustmoError(f"run directory {self.path} already exists and is not empty; "
                                "pass a new --out (nothing was overwritten)")
        return self

    def create(self) -> "RunStore":
        self.ensure_new()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RobustmoError(f"cannot create run directory {self.path}: {exc.strerror}") from None
        return self

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.file(name), obj)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.file(name), text)

    def append(self, name: str, records: Iterable[dict]) -> None:
        rows = self._jsonl.setdefault(name, [])
        rows.extend(records)
        atomic_write_text(self.file(name), "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
