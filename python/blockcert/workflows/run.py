"""`Run`: one run of BlockCert, in memory or on disk — its manifest, its block certificates, its files.

A run made by `blockcert.extract` without an output directory holds every file's bytes in memory until
`save(path)` writes exactly those bytes (the certificates hash them). A run extracted into a directory
(`out=`), or read by `load_run`, refers to that directory: its `files` are read from disk when asked for
(each checked against the digest the manifest records), so it holds no tensor and no file's bytes;
`save` to its own directory does nothing, and to another copies the files one at a time. Either displays
as the block table in a terminal (`__rich__`) and in a notebook (`_repr_html_`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from blockcert.errors import BlockCertError
from blockcert.present.tables import block_table, render_html
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary
from blockcert.store.run_files import DiskFiles, save_files
from blockcert.store.run_reader import block_certificate, load_run_summary


@dataclass(frozen=True)
class Run:
    summary: RunSummary
    certificates: dict[int, BlockCertificate]
    # path -> bytes: in memory (`path` None), or the files at `path` read on access (store.run_files.DiskFiles)
    files: Mapping[str, bytes] | None = field(default=None, repr=False)
    path: Path | None = None

    @property
    def blocks(self) -> list[int]:
        return sorted(self.certificates)

    @property
    def all_certified(self) -> bool:
        return self.summary.all_certified

    def save(self, path: Path | str) -> Run:
        """Write the run's files under `path` (the same files `blockcert extract --out path` writes).

        A run already on disk at `path` is returned as it is; one on disk elsewhere is copied, file by file."""
        path = Path(path)
        if self.path is not None and path.resolve() == self.path.resolve():
            return self
        files = self.files if self.files is not None else DiskFiles(self.require_path("save"), self.summary.files)
        save_files(files, path)
        return replace(self, files=DiskFiles(path, self.summary.files), path=path)

    def require_path(self, what: str) -> Path:
        if self.path is None:
            raise BlockCertError(f"{what} works on a saved run: call run.save(path) first")
        return self.path

    def __rich__(self):
        return block_table(self.summary)

    def _repr_html_(self) -> str:
        return render_html(block_table(self.summary))


def load_run(path: Path | str) -> Run:
    """A run directory, its manifest and every block certificate checked against their digests."""
    path = Path(path)
    summary = load_run_summary(path)
    certs = {e.index: block_certificate(path, summary, e.index) for e in summary.blocks}
    return Run(summary=summary, certificates=certs, files=DiskFiles(path, summary.files), path=path)
