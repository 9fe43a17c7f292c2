"""The results store: every evaluated configuration, written the moment it finishes (SQLite, standard library).

A row is keyed by a hash of (context, plan): the context names the model (content hash of the checkpoint),
the data (spec, size, frames) and the protocol (flip, mean, batch, calibration frames, ...); the plan is the
resolved per-layer assignment (multiplier name + table hash per layer). A run that dies loses at most the
configuration in flight; rerunning skips every stored key. One writer at a time (the driver); WAL journal.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..io.atomic import write_obstacle

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contexts (context TEXT PRIMARY KEY, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, context TEXT NOT NULL, kind TEXT NOT NULL, label TEXT NOT NULL,
    record TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS results_context ON results (context);
CREATE TABLE IF NOT EXISTS evaluations (key TEXT NOT NULL, finished REAL NOT NULL, seconds REAL);
"""


def digest(obj: Any) -> str:
    """A stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _encode(value: Any) -> Any:
    """JSON with non-finite floats as strings ("inf", "nan"), so the stored text is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class StoreError(OSError):
    """The store cannot be created or written (reported before any evaluation starts)."""


#: The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def check_path(path: Union[str, Path]) -> Path:
    """``path`` as a results store, checked without creating or changing anything (StoreError if not): an
    existing SQLite database (an empty file or any other file is refused and left untouched), or a new file
    whose nearest existing folder is writable."""
    p = Path(path)
    if p.is_dir():
        raise StoreError(f"{p}: is a folder, expected the results store's file name")
    if p.exists():
        try:
            with open(p, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as e:
            raise StoreError(f"{p}: cannot read the results store ({e.strerror or e})") from None
        if head != SQLITE_HEADER:
            what = "an empty file" if not head else "a file that is not an SQLite database"
            raise StoreError(f"{p}: not a results store ({what}; left untouched)")
        foreign = _foreign_tables(p)
        if foreign:
            raise StoreError(f"{p}: an SQLite database of something else (tables {', '.join(foreign[:5])}), not a "
                             "results store; left untouched")
        if not os.access(p, os.R_OK | os.W_OK):
            raise StoreError(f"{p}: the results store is not writable")
        return p
    obstacle = write_obstacle(p)
    if obstacle is not None:
        raise StoreError(f"{p}: cannot create the results store ({obstacle})")
    return p


def _foreign_tables(path: Path) -> list[str]:
    """Tables of the database at ``path`` that a results store does not have (read-only look)."""
    ours = {"contexts", "results", "evaluations", "_probe"}
    try:
        # closed explicitly (``with connection`` only commits): an open reader would keep the -wal / -shm files
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot read the results store ({e})") from None
    return sorted(n for n in names if n not in ours and not n.startswith("sqlite_"))


class ResultStore:
    """SQLite file of results; ``put`` commits immediately. An existing file must be an SQLite database
    (`check_path`): anything else is refused, not overwritten."""

    def __init__(self, path: Union[str, Path]):
        self.path = check_path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("CREATE TABLE IF NOT EXISTS _probe (x)")   # proves the file is writable now
            self._db.execute("DROP TABLE _probe")
            self._db.commit()
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot write the results store {self.path}: {e}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add_context(self, context: str, description: dict) -> None:
        self._db.execute("INSERT OR IGNORE INTO contexts VALUES (?, ?)", (context, json.dumps(description)))
        self._db.commit()

    def has(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM results WHERE key = ?", (key,)).fetchone() is not None

    def get(self, key: str) -> Optional[dict]:
        row = self._db.execute("SELECT record FROM results WHERE key = ?", (key,)).fetchone()
        return _decode(json.loads(row[0])) if row else None

    def put(self, key: str, context: str, record: dict) -> None:
        """Store one finished configuration (first write wins) and log the evaluation (`evaluations`)."""
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                             (key, context, record.get("kind", ""), record.get("label", ""),
                              json.dumps(_encode(record)), time.time()))
            self._db.execute("INSERT INTO evaluations VALUES (?, ?, ?)", (key, time.time(), record.get("seconds")))

    def evaluation_log(self) -> list[tuple[str, float]]:
        """(key, finish time) of every evaluation ever stored, in order (a key twice = evaluated twice)."""
        return [tuple(r) for r in self._db.execute("SELECT key, finished FROM evaluations ORDER BY rowid")]

    def records(self, context: Optional[str] = None, kinds: Optional[Iterable[str]] = None) -> list[dict]:
        """Stored records (oldest first), optionally of one context and some kinds."""
        sql, args = "SELECT record FROM results", []
        where = []
        if context is not None:
            where.append("context = ?")
            args.append(context)
        if kinds is not None:
            kinds = list(kinds)
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args += kinds
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created, rowid"
        return [_decode(json.loads(r[0])) for r in self._db.execute(sql, args).fetchall()]

    def count(self, context: Optional[str] = None) -> int:
        if context is None:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM results WHERE context = ?", (context,)).fetchone()[0]
