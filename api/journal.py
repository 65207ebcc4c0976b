"""The SSE event journal: which Kafka record each recent event id was, so ids survive an API restart.

Every event the hub publishes gets the next integer id; the journal appends one
line ``id topic partition offset`` for it (flushed with every batch, so a killed
process loses nothing the clients were sent). A restarted API loads the last
``keep`` lines: ids continue after the last one, the feed starts each partition
early enough to re-read every journaled record, and each re-read record gets its
old id back and goes into the ring buffer (not to live clients: they had it).
So a client reconnecting with ``Last-Event-ID`` after a restart gets exactly
the events it missed, as if the API had never gone away. Records older than the
journal's newest offset of their partition that are not in it update the live
state only. The file is compacted to ``keep`` lines when it grows past twice that.

The journal names records by topic, partition and offset: a topic deleted and
created again under the same name starts its offsets over, so delete the
journal with it (the API then starts its ids at 1, and clients get a snapshot).
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import IO

__all__ = ["EventJournal", "Position"]

Position = tuple[str, int, int]  # topic, partition, offset


class EventJournal:
    """The journal file of one API process (see the module doc)."""

    def __init__(self, path: Path, keep: int) -> None:
        self.path = Path(path)
        self.keep = keep
        entries: deque[tuple[int, Position]] = deque(maxlen=keep)
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                parts = line.split("\t")
                if len(parts) == 4 and parts[0].isdigit():  # a torn last line (killed mid-write) is skipped
                    entries.append((int(parts[0]), (parts[1], int(parts[2]), int(parts[3]))))
        self.restoring: dict[Position, int] = {position: event_id for event_id, position in entries}
        self.last_id = entries[-1][0] if entries else 0
        self.newest: dict[tuple[str, int], int] = {}  # (topic, partition) -> newest journaled offset
        self.oldest: dict[tuple[str, int], int] = {}
        for _, (topic, partition, offset) in entries:
            key = (topic, partition)
            self.newest[key] = max(self.newest.get(key, offset), offset)
            self.oldest[key] = min(self.oldest.get(key, offset), offset)
        self._lines = len(entries)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._compact(entries)
        self._file: IO[str] = self.path.open("a")

    def known(self, position: Position) -> int | None:
        """The id a re-read record had before the restart, or None."""
        return self.restoring.pop(position, None)

    def is_old(self, position: Position) -> bool:
        """Whether a record not in the journal was already past when it was written (state only, no event)."""
        topic, partition, offset = position
        newest = self.newest.get((topic, partition))
        return newest is not None and offset <= newest

    def append(self, entries: list[tuple[int, Position]]) -> None:
        """Record newly published events (one flush per batch)."""
        if not entries:
            return
        self._file.write("".join(f"{i}\t{t}\t{p}\t{o}\n" for i, (t, p, o) in entries))
        self._file.flush()
        self._lines += len(entries)
        for _, (topic, partition, offset) in entries:
            self.newest[(topic, partition)] = offset
        if self._lines > 2 * self.keep:
            self._file.close()
            tail: deque[str] = deque(self.path.read_text().splitlines(), maxlen=self.keep)
            self._write(tail)
            self._lines = len(tail)
            self._file = self.path.open("a")

    def _compact(self, entries: deque[tuple[int, Position]]) -> None:
        self._write([f"{i}\t{t}\t{p}\t{o}" for i, (t, p, o) in entries])

    def _write(self, lines) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text("".join(f"{line}\n" for line in lines))
        os.replace(temporary, self.path)

    def close(self) -> None:
        self._file.close()
