"""Per-token errors for `blockcert report`: every block's surrogate replayed on its certified traces.

The numbers come from the same certified readers (hash-checked bytes) and the same `replay` the verifier
uses, never from a file that records them, so the heatmap shows what the certificate stands on. A block
whose tensors are absent, or whose files fail their hashes, is left out with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blockcert.arch.loading import load_run_model
from blockcert.arch.native import encode
from blockcert.core.digest import canonical_json, sha256_bytes
from blockcert.core.replay import replay
from blockcert.errors import BlockCertError
from blockcert.present.progress import say, track
from blockcert.present.report_plots import colour_legend, heat_scale
from blockcert.present.report_view import HeatCell, HeatRow, Image, PromptHeatmap, TokenSection
from blockcert.records.certificate import BlockCertificate
from blockcert.records.summary import RunSummary
from blockcert.store import layout
from blockcert.store.files import read_json
from blockcert.store.run_reader import certified_token_ids, load_certified_ir, load_certified_traces


@dataclass(frozen=True)
class Prompts:
    texts: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]


def certified_prompts(run_dir: Path, summary: RunSummary) -> Prompts:
    """The prompt texts and token ids, refused unless both hash to what the run certified."""
    ids = certified_token_ids(run_dir, summary)
    texts = read_json(run_dir / layout.PROMPTS, "prompts file").get("prompts")
    if not isinstance(texts, list) or sha256_bytes(canonical_json(texts).encode()) != summary.prompts.sha256:
        raise BlockCertError(f"{layout.PROMPTS}: the prompt texts do not hash to the certified prompt set")
    return Prompts(tuple(str(t) for t in texts), tuple(tuple(int(i) for i in row) for row in ids))


def missing_tensors(run_dir: Path, cert: BlockCertificate) -> list[str]:
    """The tensor files the certificate lists that this copy of the run does not hold (JSON-only copies)."""
    return [rel for rel in sorted(cert.artifacts) if rel.endswith(".safetensors") and not (run_dir / rel).exists()]


def token_texts(summary: RunSummary, prompts: Prompts, model: str | None) -> tuple[list[list[str]], str | None]:
    """Each token as text, decoded by the run's tokenizer when `model` is given (checked by weights hash, and
    by re-encoding the texts to exactly the certified ids); token ids otherwise. -> (tokens, note)."""
    ids_as_text = [[str(i) for i in row] for row in prompts.ids]
    if model is None:
        return ids_as_text, None
    say(f"loading {model} for its tokenizer")
    lm = load_run_model(summary, model, "cpu")
    batch = encode(lm, prompts.texts)
    again = tuple(tuple(row[m].tolist()) for row, m in zip(batch.ids, batch.valid, strict=True))
    if again != prompts.ids:
        return ids_as_text, (f"the tokenizer of {model} does not encode the prompts to the certified token ids; "
                             "tokens are shown as ids")
    tok = lm.tokenizer
    return [[tok.decode([i]) for i in row] for row in prompts.ids], None


def block_errors(run_dir: Path, certs: dict[int, BlockCertificate]) -> tuple[dict[int, list[list[float]]], list[str]]:
    """block -> e(p, t) for every real token (ragged: one list per prompt), and a note per block left out."""
    out, notes, absent = {}, [], []
    for i in track(sorted(certs), "replaying surrogates for per-token errors", total=len(certs)):
        cert = certs[i]
        if missing_tensors(run_dir, cert):
            absent.append(i)
            continue
        try:
            ir = load_certified_ir(run_dir, cert)
            trace, _loss = load_certified_traces(run_dir, cert)
        except BlockCertError as e:
            notes.append(f"block {i} left out: {e}")
            continue
        errors = replay(ir, trace).errors
        out[i] = [[float(v) for v in errors[p][trace.valid[p]]] for p in range(errors.shape[0])]
    if absent:
        notes.insert(0, f"block(s) {', '.join(map(str, absent))}: tensors not shipped with this copy (the traces and "
                        "surrogate weights are needed to replay per-token errors)")
    return out, notes


def _reading(prompt: int, tokens: list[str], errs: dict[int, list[float]], tau: float) -> str:
    cells = [(e, b, t) for b, row in errs.items() for t, e in enumerate(row)]
    if not cells:
        return "no token"
    worst, wb, wt = max(cells)
    over = sum(e > tau for e, _, _ in cells)
    by_block = {b: sum(e > tau for e in row) for b, row in errs.items()}
    most = max(by_block, key=lambda b: (by_block[b], -b))
    line = (f"Largest error {worst:.3g} at block {wb}, token {wt} ({tokens[wt]!r}); "
            f"{over}/{len(cells)} block-token pairs above τ_act = {tau:g}")
    if by_block[most]:
        line += f", most of them in block {most} ({by_block[most]}/{len(tokens)} tokens)"
    return line + "."


def token_section(errors: dict[int, list[list[float]]], texts: tuple[str, ...], tokens: list[list[str]], tau: float,
                  tokens_are_ids: bool, notes: list[str]) -> TokenSection:
    scale = heat_scale([e for rows in errors.values() for row in rows for e in row], tau)
    maps = []
    for p, toks in enumerate(tokens):
        per_block = {b: rows[p] for b, rows in errors.items()}
        rows = tuple(
            HeatRow(b, tuple(
                HeatCell(e, scale.colour(e), scale.ink(e), e > tau,
                         f"block {b}, token {t} ({toks[t]!r}): error {e:.4g}" + (" > τ_act" if e > tau else ""))
                for t, e in enumerate(row)))
            for b, row in per_block.items()
        )
        maps.append(PromptHeatmap(p, texts[p], tuple(toks), rows, _reading(p, toks, per_block, tau)))
    legend = None
    if errors:
        legend = Image("token_scale", "colour scale of the per-token heatmaps", colour_legend(scale, tau))
    return TokenSection(tokens_are_ids, tuple(maps) if errors else (), legend, tuple(notes))
