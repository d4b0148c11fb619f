"""Results that travel between hosts: a file stored as an MLflow artifact of a run tagged with its key.

A stage-1 checkpoint or an ablation cell's result trained on one host is found by any other through
the tracking store alone (``search_runs`` on the key's tag, then the artifact downloaded), so hosts
share nothing but an MLflow tracking server (or, on one host, the embedded store). A run's
``bnn.stored`` tag is set only once its artifact is complete, so a reader never sees half a file;
the local caches in ``.cache/`` stay in front of it.

Only through a tracking server (an ``http(s)://`` URI): with the embedded SQLite store every worker
is on the host whose ``.cache/`` already holds the result (a copy under ``mlartifacts/`` would double
the disk, a stage-1 checkpoint per key), and a PostgreSQL store without a server keeps artifacts in
each host's own folder, which other hosts cannot read.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from study.artifacts import atomic_write
from study.tracking import Tracker

STORED_TAG = "bnn.stored"


def travels(uri: str) -> bool:
    """Whether results stored in the tracking store ``uri`` reach other hosts: only through a server."""
    return uri.startswith(("http://", "https://"))


class SharedResults:
    """Files named ``artifact`` in runs of ``tracker``'s experiment, one per value of the tag ``key_tag``."""

    def __init__(self, tracker: Tracker, key_tag: str, artifact: str):
        self.tracker = tracker
        self.key_tag = key_tag
        self.artifact = artifact

    def find(self, key: str) -> str | None:
        """The run holding ``key``'s file (the earliest, if several hosts stored it), None when none does."""
        found = self.tracker.client.search_runs(
            [self.tracker.experiment_id],
            filter_string=f"tags.`{self.key_tag}` = '{key}' and tags.`{STORED_TAG}` = 'true'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def fetch(self, key: str, dest: Path) -> bool:
        """Download ``key``'s file to ``dest`` (atomically); False when no run holds it."""
        run_id = self.find(key)
        if run_id is None:
            return False
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
            local = Path(self.tracker.client.download_artifacts(run_id, self.artifact, tmp))
            atomic_write(dest, lambda target: shutil.copyfile(local, target))
        return True

    def store(self, key: str, path: Path, run_name: str, tags: dict[str, str]) -> str:
        """Store ``path`` in a run of its own (FINISHED once stored); its id."""
        client = self.tracker.client
        run_id = client.create_run(self.tracker.experiment_id, run_name=run_name, tags=tags).info.run_id
        try:
            self.publish(run_id, key, path)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        return run_id

    def publish(self, run_id: str, key: str, path: Path) -> None:
        """Store ``path`` as the artifact of ``run_id`` (a run of this experiment), findable by ``key``."""
        with tempfile.TemporaryDirectory(prefix="bnn-publish-") as tmp:
            named = Path(tmp) / self.artifact
            shutil.copyfile(path, named)
            self.tracker.client.log_artifact(run_id, str(named))
        self.tracker.client.set_tag(run_id, self.key_tag, key)
        self.tracker.client.set_tag(run_id, STORED_TAG, "true")
