"""The ``csv`` callback: every epoch's row of metrics also as a CSV file in the run folder."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from vaecli.plugin import Callback, TrainingRun, UsageError


class CsvLog(Callback):
    """Writes RUN/FILE (option ``file``, default metrics.csv): one row per epoch, a column per
    number. Rewritten whole from the run's history each epoch, so a resumed run's file holds
    exactly its epochs."""

    def __init__(self, file: str = "metrics.csv") -> None:
        if not file or Path(file).name != file:
            raise UsageError(f"option file must be a plain file name, got '{file}'")
        self.file = file
        self.run: TrainingRun | None = None

    def on_train_start(self, run: TrainingRun) -> None:
        self.run = run

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        assert self.run is not None
        rows = self.run.history
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path = self.run.run_dir / self.file
        partial = path.with_name(f".{path.name}.tmp")
        partial.write_text(buffer.getvalue(), encoding="utf-8")
        partial.replace(path)
