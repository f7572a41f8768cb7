"""`Run`: one run of BlockCert, in memory or on disk — its manifest, its block certificates, its files.

A run made by `blockcert.extract` holds every file's bytes in memory until `save(path)` writes exactly
those bytes (the certificates hash them); a run read by `load_run` refers to its directory. Either displays
as the block table in a terminal (`__rich__`) and in a notebook (`_repr_html_`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from blockcert.errors import BlockCertError
from blockcert.present.tables import block_table, render_html
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary
from blockcert.store.run_files import save_files
from blockcert.store.run_reader import block_certificate, load_run_summary


@dataclass(frozen=True)
class Run:
    summary: RunSummary
    certificates: dict[int, BlockCertificate]
    files: dict[str, bytes] | None = field(default=None, repr=False)  # None: the files are on disk at `path`
    path: Path | None = None

    @property
    def blocks(self) -> list[int]:
        return sorted(self.certificates)

    @property
    def all_certified(self) -> bool:
        return self.summary.all_certified

    def save(self, path: Path | str) -> Run:
        """Write the run's files under `path` (the same files `blockcert extract --out path` writes)."""
        if self.files is None:
            raise BlockCertError(f"this run was read from {self.path}; copy that directory instead of saving it")
        save_files(self.files, Path(path))
        return replace(self, files=None, path=Path(path))

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
    return Run(summary=summary, certificates=certs, path=path)
