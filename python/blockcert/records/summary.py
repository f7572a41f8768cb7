"""RUN_DIR/summary.json: the run manifest, the one sealed root of trust of a run.

It indexes the run's blocks and verdicts (fields other tools read), states what every certificate of the
run must agree with (model, prompt set, thresholds, policy, tool and interpreter version), and lists every
file of the run with its SHA-256 (`files`: certificates, tensors, reports and plots; everything but the
manifest itself). It is sealed by its own digest. Sealing needs no secret, so the seal only proves that the
manifest is intact: `blockcert verify` cross-checks every certificate against it and re-derives what it can.

Schema 1 (no `files`, no seal) is refused by the readers with a line that says how to upgrade.
"""

from __future__ import annotations

from typing import Literal

from blockcert.core.digest import canonical_json, sha256_bytes
from blockcert.core.metrics import Policy, Thresholds
from blockcert.core.schema import Frozen, Sealed
from blockcert.records.certificate import BlockCertificate, ModelInfo, PromptInfo, ToolInfo

SUMMARY_SCHEMA = "blockcert.summary/2"
OLD_SUMMARY_SCHEMAS = ("blockcert.summary/1",)


class BlockEntry(Frozen):
    index: int
    certified: bool
    epsilon: float | None
    mae: float | None
    max_relative_error: float | None
    cov_act: float
    cov_path: float
    cov_loss: float
    n_tokens: int
    certificate: str  # relative path
    digest: str


class RunSummary(Sealed):
    schema_version: Literal["blockcert.summary/2"] = SUMMARY_SCHEMA
    tool: ToolInfo = ToolInfo()
    model: ModelInfo
    prompts: PromptInfo
    thresholds: Thresholds
    policy: Policy
    blocks: tuple[BlockEntry, ...]
    all_certified: bool
    files: dict[str, str] = {}  # every file of the run (path relative to it) -> SHA-256; not summary.json
    digest: str = ""

    def run_id(self) -> str:
        """The run's identity: the digest of everything but `files` and the seal, so it stays the same when a
        later command (stitch, bound, lean) records its outputs in the manifest. Lean module names use it."""
        body = self.model_dump(mode="json", exclude={"files", "digest"})
        return sha256_bytes(canonical_json(body).encode("utf-8"))

    def with_files(self, files: dict[str, str]) -> RunSummary:
        return self.model_copy(update={"files": dict(sorted(files.items()))}).sealed()


def entry_of(cert: BlockCertificate) -> BlockEntry:
    """The manifest's entry for a block certificate: every field is the certificate's own (nothing else)."""
    m = cert.metrics
    return BlockEntry(
        index=cert.block_index, certified=cert.certified, epsilon=m.epsilon, mae=m.mae,
        max_relative_error=m.max_relative_error, cov_act=m.cov_act, cov_path=m.cov_path, cov_loss=m.cov_loss,
        n_tokens=m.n_tokens, certificate=f"block_{cert.block_index:03d}/certificate.json", digest=cert.digest,
    )


# What every block certificate of a run must share with the manifest: a block from another model, another
# prompt set, other thresholds or policy, or another interpreter is a different experiment.
SHARED = ("model", "prompts", "thresholds", "policy")


def disagreements(summary: RunSummary, cert: BlockCertificate, entry: BlockEntry) -> list[str]:
    """One line per field where a block certificate and the manifest (or its entry) differ, naming both values."""
    out = []
    for name in SHARED:
        mine, theirs = getattr(summary, name), getattr(cert, name)
        if mine != theirs:
            a, b = mine.model_dump(mode="json"), theirs.model_dump(mode="json")
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    out.append(f"certificate field {name}.{key} = {_short(b.get(key))}, "
                               f"summary.json says {_short(a.get(key))}")
    if cert.tool.interpreter != summary.tool.interpreter:
        out.append(f"certificate field tool.interpreter = {cert.tool.interpreter!r}, summary.json says "
                   f"{summary.tool.interpreter!r}")
    want = entry_of(cert).model_dump(mode="json")
    have = entry.model_dump(mode="json")
    for key in want:
        if want[key] != have[key]:
            out.append(f"summary.json field blocks[{entry.index}].{key} = {_short(have[key])}, "
                       f"the certificate gives {_short(want[key])}")
    return out


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "…"
