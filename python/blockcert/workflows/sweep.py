"""`blockcert sweep RUN_DIR --blocks SPEC --alphas LIST --out DIR`: scale_mlp edits over blocks × α (paper §7.3).

Every configuration is a complete edit directory (`DIR/edits/block_NNN_alpha_A/`, certificate written last),
and a configuration counts as finished exactly when its certificate is there and is the one for that patch:
a rerun of the same command skips it and recomputes nothing that finished. The unedited baseline of each block
is computed once per process and reused by every α. The manifest refuses a rerun with other inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blockcert.arch.generate import Completion
from blockcert.core.digest import sha256_bytes
from blockcert.core.selection import parse_blocks
from blockcert.errors import BlockCertError
from blockcert.present.progress import say, track
from blockcert.records.edit import (
    BEST_RULE,
    COMPLETIONS,
    EDIT_CERTIFICATE,
    SWEEP_FILE,
    SWEEP_MANIFEST,
    SWEEP_TABLE,
    Completions,
    EditCertificate,
    SweepManifest,
    SweepResult,
    SweepRow,
    best_row,
)
from blockcert.store.files import atomic_write_bytes, ensure_writable_dir, json_bytes
from blockcert.store.records_io import load_model_file, parse_model
from blockcert.store.strict_json import read_regular
from blockcert.workflows.edit import EditSession, evaluate, load_corpus, load_markers, patch_from_spec, write_edit

DEFAULT_ALPHAS = "0,0.1,0.2,0.33,0.5,0.75,0.8,1.0"


def parse_alphas(text: str) -> tuple[float, ...]:
    out = []
    for part in text.split(","):
        try:
            a = float(part)
        except ValueError:
            raise BlockCertError(f"--alphas: {part.strip()!r} is not a number; give a list like "
                                 f"{DEFAULT_ALPHAS}") from None
        if a != a or a in (float("inf"), float("-inf")):
            raise BlockCertError(f"--alphas: {part.strip()!r} is not finite")
        out.append(a)
    if len(set(out)) != len(out):
        raise BlockCertError("--alphas: a value repeats")
    return tuple(out)


@dataclass(frozen=True)
class SweepOptions:
    run_dir: Path
    blocks: str
    out: Path
    alphas: str = DEFAULT_ALPHAS
    corpus: str = "refusal"
    side_prompts: str = "stress"
    max_new_tokens: int = 48
    markers: Path | None = None
    model: str | None = None
    device: str | None = None
    batch_size: int = 8


def config_dir(block: int, alpha: float) -> str:
    return f"edits/block_{block:03d}_alpha_{alpha!r}"


def _finished(out: Path, rel: str, patch: dict) -> EditCertificate | None:
    path = out / rel / EDIT_CERTIFICATE
    if not path.is_file():
        return None
    cert = load_model_file(path, EditCertificate, "edit certificate")
    if cert.body_digest() != cert.digest or cert.patch != patch:
        raise BlockCertError(f"{path} is not the sealed certificate of {patch}; remove {out / rel} and rerun")
    return cert


def row(cert: EditCertificate, rel: str, block: int, alpha: float) -> SweepRow:
    se = cert.side_effects
    return SweepRow(block=block, alpha=alpha, edit_dir=rel, certificate_digest=cert.digest, baseline=cert.baseline,
                    patched=cert.patched, quality=cert.quality, epsilon_edit=se.epsilon_edit,
                    final_deviation=se.final_deviation, amplification=se.amplification,
                    relative_delta_ppl=se.metrics.relative_delta_ppl,
                    next_token_agreement=se.metrics.next_token_agreement)


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def markdown(res: SweepResult) -> str:
    lines = ["| block | α | answer acc. | refuse acc. | efficacy | specificity | fluency | ε_edit | final dev. | "
             "amplification | \\|ΔPPL\\|/PPL | next-token agr. |", "|" + "---|" * 12]
    for r in res.rows:
        q = r.quality
        lines.append(
            f"| {r.block} | {r.alpha:g} | {_f(r.patched.answer_accuracy)} ({r.patched.answer_correct}/"
            f"{r.patched.answer_total}) | {_f(r.patched.refuse_accuracy)} ({r.patched.refuse_correct}/"
            f"{r.patched.refuse_total}) | {_f(q.efficacy)} | {_f(q.specificity)} | {q.fluency_patched:.3f} | "
            f"{r.epsilon_edit:.4g} | {r.final_deviation:.4g} | {_f(r.amplification, '.3g')} | "
            f"{_f(r.relative_delta_ppl, '.3g')} | {r.next_token_agreement:.4f} |")
    b = res.best
    base = res.rows[0].baseline if res.rows else None
    if base is not None:
        lines += ["", f"Baseline (unedited): answer accuracy {_f(base.answer_accuracy)} ({base.answer_correct}/"
                      f"{base.answer_total}), refuse accuracy {_f(base.refuse_accuracy)} ({base.refuse_correct}/"
                      f"{base.refuse_total})."]
    if b is None:
        lines.append("Best edit: none keeps the baseline's answer accuracy.")
    else:
        verdict = "improves on" if res.best_improves else "does not improve on"
        lines.append(f"Best edit: block {b.block}, α = {b.alpha:g} (refuse accuracy {_f(b.patched.refuse_accuracy)}, "
                     f"answer accuracy {_f(b.patched.answer_accuracy)}); it {verdict} the baseline's refuse accuracy. "
                     f"Rule: {res.best_rule}.")
    return "\n".join(lines) + "\n"


def run_sweep(opts: SweepOptions) -> SweepResult:
    alphas = parse_alphas(opts.alphas)
    corpus = load_corpus(opts.corpus)
    markers = load_markers(opts.markers)
    s = EditSession(opts.run_dir, corpus, markers, opts.side_prompts, opts.max_new_tokens, opts.model,
                    opts.device, opts.batch_size)
    blocks = parse_blocks(opts.blocks, s.summary.model.num_layers)
    configs = [(b, a) for b in blocks for a in alphas]
    prepared = {}
    for b, a in configs:  # every patch is checked before anything is written
        lp = patch_from_spec({"kind": "scale_mlp", "block": b, "alpha": a})
        prepared[(b, a)] = lp
        s.prepare(lp)
    manifest = SweepManifest(
        run_summary_sha256=_sha(opts.run_dir), blocks=tuple(blocks), alphas=alphas, corpus_sha256=corpus.sha256,
        classifier_sha256=markers.sha256, side_prompts_sha256=s.side.sha256, max_new_tokens=opts.max_new_tokens)
    mpath = opts.out / SWEEP_MANIFEST
    if mpath.is_file():
        old = load_model_file(mpath, SweepManifest, "sweep manifest")
        if old != manifest:
            raise BlockCertError(f"{opts.out} holds a sweep started with other inputs (run, blocks, α, corpus, "
                                 "markers, side prompts or max tokens); use another --out")
    ensure_writable_dir(opts.out)
    atomic_write_bytes(mpath, json_bytes(manifest.model_dump(mode="json")))
    (opts.out / SWEEP_FILE).unlink(missing_ok=True)
    rows = []
    for b, a in track(configs, "sweep configurations", total=len(configs)):
        lp = prepared[(b, a)]
        rel = config_dir(b, a)
        cert = _finished(opts.out, rel, lp.patch.model_dump(mode="json"))
        if cert is None:
            _reuse_baseline(s, opts.out, rows, b)
            cert = write_edit(evaluate(s, lp), opts.run_dir, opts.out / rel)
        else:
            say(f"block {b}, α = {a:g}: finished before, not recomputed")
        rows.append(row(cert, rel, b, a))
    rows_t = tuple(rows)
    best = best_row(rows_t)
    improves = best is not None and (best.patched.refuse_accuracy or 0) > (best.baseline.refuse_accuracy or 0)
    res = SweepResult(manifest=manifest, rows=rows_t, best=best, best_rule=BEST_RULE, best_improves=improves)
    atomic_write_bytes(opts.out / SWEEP_TABLE, markdown(res).encode("utf-8"))
    atomic_write_bytes(opts.out / SWEEP_FILE, json_bytes(res.model_dump(mode="json")))
    return res


def _sha(run_dir: Path) -> str:
    return sha256_bytes(read_regular(run_dir / "summary.json", "run summary"))


def _reuse_baseline(s: EditSession, out: Path, rows: list[SweepRow], block: int) -> None:
    """A resumed sweep takes a block's baseline from a finished configuration of it (checked against its hash)."""
    if block in s._baselines:
        return
    for r in rows:
        if r.block != block:
            continue
        cert = load_model_file(out / r.edit_dir / EDIT_CERTIFICATE, EditCertificate, "edit certificate")
        data = read_regular(out / r.edit_dir / COMPLETIONS, "completions")
        if sha256_bytes(data) != cert.files.get(COMPLETIONS):
            raise BlockCertError(f"{out / r.edit_dir / COMPLETIONS} changed since it was certified; remove "
                                 f"{out / r.edit_dir} and rerun")
        items = parse_model(data, Completions, "completions").items
        s._baselines[block] = [Completion(i.prompt_ids, i.baseline.token_ids, i.baseline.text) for i in items]
        return
