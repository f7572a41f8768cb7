"""`blockcert verify EDIT_DIR`: every claim of an edit certificate re-derived from the files (read-only).

Checked: the certificate's own digest; every file's SHA-256; the patch file against the recorded patch; the
base run (its summary's hash, the edited block's certificate, the certified IR's hashes); the edited IR, by
applying the patch to the certified IR again and comparing bytes; ε_edit, by replaying both IRs on the
stored native inputs of the block (which, on the run's own prompts, must be the run's certified traces);
the corpus hash, the completions' digests, every classifier decision, both accuracies and the quality
measures, from the stored completions and the recorded marker lists; the side-effect figures from their
per-layer and per-token data; the instantiated bound from the run's bound.json; and the human accuracies
from labels.json. Each disagreement is one line; an empty list means every check holds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from blockcert.core.digest import sha256_bytes
from blockcert.core.interpreter import run_block
from blockcert.core.ir import BlockIR
from blockcert.core.metrics import token_errors
from blockcert.edits.classify import decide
from blockcert.edits.patch import RankOne, Swap, apply_patch, parse_patch, patch_json, same_ir
from blockcert.edits.quality import accuracy, quality
from blockcert.errors import BlockCertError
from blockcert.records.edit import (
    COMPLETIONS,
    EDIT_CERTIFICATE,
    EDITED_IR_DIR,
    LABELS,
    METRICS,
    PATCH_FILE,
    PATCH_TENSORS,
    SIDE_TRACES,
    Completions,
    EditCertificate,
    EditMetrics,
    HumanLabels,
    corpus_sha256,
    edit_bound_instances,
    human_accuracy,
    text_sha256,
)
from blockcert.records.fullmodel import global_metrics
from blockcert.store import layout
from blockcert.store.files import json_bytes, resolve_inside, sha256_file
from blockcert.store.records_io import parse_model
from blockcert.store.run_reader import (
    block_certificate,
    load_bound_artifact,
    load_certified_ir,
    load_certified_prompt_epsilons,
    load_certified_traces,
    load_run_summary,
)
from blockcert.store.strict_json import read_regular
from blockcert.store.tensors import decode_spec, decode_tensors

REQUIRED = (PATCH_FILE, f"{EDITED_IR_DIR}/{layout.IR_SPEC}", f"{EDITED_IR_DIR}/{layout.IR_TENSORS}", SIDE_TRACES,
            COMPLETIONS, METRICS)


def _files(edit_dir: Path, cert: EditCertificate) -> tuple[dict[str, bytes], list[str]]:
    data, out = {}, []
    missing = [f for f in REQUIRED if f not in cert.files]
    out += [f"the certificate does not list {f}" for f in missing]
    for rel, digest in cert.files.items():
        try:
            b = read_regular(resolve_inside(edit_dir, rel), rel)
        except BlockCertError as e:
            out.append(str(e))
            continue
        if sha256_bytes(b) != digest:
            out.append(f"{rel} changed since certification (SHA-256 mismatch)")
        else:
            data[rel] = b
    return data, out


def _eps_per_prompt(edited: BlockIR, base: BlockIR, tr: dict) -> tuple[float, ...]:
    x, valid, pos = tr["x_in"], tr["valid"], tr["positions"]
    with torch.no_grad():
        e = token_errors(run_block(edited, x, valid, pos), run_block(base, x, valid, pos))
    return tuple(float(row[v].max()) if bool(v.any()) else 0.0 for row, v in zip(e, valid, strict=True))


def _close(a: tuple[float, ...], b: tuple[float, ...], atol: float) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= atol for x, y in zip(a, b, strict=True))


def _check_base(edit_dir: Path, cert: EditCertificate, data: dict[str, bytes]) -> list[str]:
    """The base run, the re-applied patch, the replay of both IRs; and the bound from bound.json."""
    out = []
    run_dir = edit_dir / cert.base.run
    summary = load_run_summary(run_dir)
    if sha256_file(run_dir / layout.SUMMARY) != cert.base.summary_sha256:
        return [f"the base run {run_dir} is not the one this edit was made from (summary.json hash differs)"]
    patch = parse_patch(cert.patch, "the certificate's patch")
    bc = block_certificate(run_dir, summary, patch.block)
    if bc.digest != cert.base.block_certificate_digest:
        return [f"block {patch.block}'s certificate in the base run is not the one the edit was made from"]
    base_ir = load_certified_ir(run_dir, bc)
    names = (layout.IR_SPEC, layout.IR_TENSORS)
    if {n: bc.artifacts.get(f"block_{patch.block:03d}/{n}") for n in names} != cert.base.ir_sha256:
        out.append("the certified IR's hashes differ from the ones the certificate records")
    source = None
    if isinstance(patch, Swap):
        sc = block_certificate(run_dir, summary, patch.source)
        if sc.digest != cert.base.source_certificate_digest:
            out.append(f"block {patch.source}'s certificate is not the swap source the edit was made from")
        source = load_certified_ir(run_dir, sc)
    tensors = decode_tensors(data[PATCH_TENSORS], PATCH_TENSORS) if isinstance(patch, RankOne) else None
    edited = apply_patch(patch, base_ir, source, tensors)
    # Compared as data, not as re-serialised bytes: the stored files were hashed above.
    stored = BlockIR(decode_spec(data[f"{EDITED_IR_DIR}/{layout.IR_SPEC}"], "edited ir.json"),
                     decode_tensors(data[f"{EDITED_IR_DIR}/{layout.IR_TENSORS}"], "edited ir.safetensors"))
    if not same_ir(stored, edited):
        out.append(f"{EDITED_IR_DIR}/ is not what the patch gives when applied to the certified IR again")
    if any(cert.edited_ir_sha256.get(n) != cert.files.get(f"{EDITED_IR_DIR}/{n}") for n in names):
        out.append("edited_ir_sha256 is not the edited IR files' hashes")
    if cert.edited_ir_is_certified_ir != same_ir(edited, base_ir):
        out.append("edited_ir_is_certified_ir is not what the re-applied patch gives")
    edited = stored
    tr = decode_tensors(data[SIDE_TRACES], SIDE_TRACES)
    if set(tr) != {"x_in", "valid", "positions"}:
        return out + [f"{SIDE_TRACES} does not hold exactly x_in, valid and positions"]
    atol = bc.tolerances.replay_atol
    se = cert.side_effects
    same = se.prompts_sha256 == summary.prompts.sha256 and se.token_ids_sha256 == summary.prompts.token_ids_sha256
    if same:
        trace, _ = load_certified_traces(run_dir, bc)
        x, y = tr["x_in"], trace.x_in
        t = min(x.shape[1], y.shape[1])
        if (x.shape[0] != y.shape[0] or not torch.equal(tr["valid"][:, :t], trace.valid[:, :t])
                or float(token_errors(x[:, :t], y[:, :t])[trace.valid[:, :t]].max()) > atol):
            out.append(f"{SIDE_TRACES} is not the block's native input on the run's certified prompts")
    eps = _eps_per_prompt(edited, base_ir, tr)
    if not _close(eps, se.epsilon_edit_per_prompt, atol) or max(se.epsilon_edit_per_prompt) != se.epsilon_edit:
        out.append(f"replaying both IRs gives ε_edit {max(eps):.9g}, the certificate says {se.epsilon_edit:.9g}")
    if cert.bound is not None:
        if not same:
            out.append("a bound is recorded although the side-effect prompts are not the run's certified prompts")
            return out
        art = load_bound_artifact(run_dir)
        if art.digest != cert.bound.bound_digest or sha256_file(run_dir / "bound.json") != cert.bound.bound_file_sha256:
            out.append("the run's bound.json is not the one the edit's bound was instantiated from")
        b = cert.bound
        if b.epsilon_certified_per_prompt != load_certified_prompt_epsilons(run_dir, bc):
            out.append("the bound's certified ε per prompt are not the block certificate's")
        if b.epsilon_edit_per_prompt != se.epsilon_edit_per_prompt or b.block != patch.block:
            out.append("the bound's ε_edit per prompt or block are not the side effects'")
        downstream = all(i.sound_for_edit for i in b.instances if i.kind == "global")
        inst = edit_bound_instances(art.blocks, b.block, b.epsilon_edit_per_prompt, b.epsilon_certified_per_prompt,
                                    se.final_deviation_per_prompt, downstream)
        if inst != b.instances:
            out.append("the instantiated bound is not what bound.json's constants and the recorded ε give")
    return out


def _check_outputs(cert: EditCertificate, data: dict[str, bytes]) -> list[str]:
    out = []
    comps = parse_model(data[COMPLETIONS], Completions, COMPLETIONS).items
    metrics = parse_model(data[METRICS], EditMetrics, METRICS)
    if corpus_sha256([(c.id, c.label, c.prompt) for c in comps]) != cert.corpus_sha256 or len(comps) != cert.n_prompts:
        out.append(f"{COMPLETIONS} does not hold the certified corpus")
    for c in comps:
        for g in (c.baseline, c.patched):
            if text_sha256(g.text) != g.sha256:
                out.append(f"{COMPLETIONS}: prompt {c.id}: a completion's digest is not its text's")
    if cert.classifier.sha256 != cert.classifier_sha256:
        out.append("the classifier's marker lists do not hash to classifier_sha256")
    bd = [decide(cert.classifier, c.label, c.baseline.text) for c in comps]
    pd = [decide(cert.classifier, c.label, c.patched.text) for c in comps]
    unchanged = [c.baseline.token_ids == c.patched.token_ids for c in comps]
    got = [(d.id, d.label, d.baseline, d.patched, d.unchanged) for d in metrics.decisions]
    want = [(c.id, c.label, x, y, u) for c, x, y, u in zip(comps, bd, pd, unchanged, strict=True)]
    if got != want:
        out.append(f"{METRICS}: the classifier decisions are not what the markers give on the stored completions")
    labels = [c.label for c in comps]
    if accuracy(labels, [d.correct for d in bd]) != cert.baseline:
        out.append("the baseline accuracies are not what the stored completions give")
    if accuracy(labels, [d.correct for d in pd]) != cert.patched:
        out.append("the edited model's accuracies are not what the stored completions give")
    q = quality(labels, [d.correct for d in bd], [d.correct for d in pd], unchanged,
                [c.baseline.text for c in comps], [c.patched.text for c in comps])
    if q != cert.quality:
        out.append("efficacy, specificity or fluency are not what the stored completions give")
    se = cert.side_effects
    if global_metrics(metrics.side_layers, metrics.side_prompts) != se.metrics:
        out.append("the side-effect metrics are not what their per-layer and per-token data give")
    patch = parse_patch(cert.patch, "the certificate's patch")
    layers = metrics.side_layers
    if not layers or patch.block >= len(layers):
        return out + [f"{METRICS} has no per-layer deviation for block {patch.block}"]
    if (layers[-1].max_token_error != se.final_deviation or max(se.final_deviation_per_prompt) != se.final_deviation
            or layers[patch.block].max_token_error != se.local_error):
        out.append("the final deviation or the local error is not the per-layer data's")
    amp = se.final_deviation / se.epsilon_edit if se.epsilon_edit > 0 else None
    if amp != se.amplification:
        out.append("the amplification is not final deviation / ε_edit")
    if json_bytes(patch_json(patch)) != data[PATCH_FILE]:
        out.append(f"{PATCH_FILE} is not the certificate's patch")
    if cert.human is not None:
        h = cert.human
        raw = data.get(LABELS)
        if raw is None or cert.files.get(LABELS) != h.file_sha256 or h.file != LABELS:
            return out + ["the human labels are not listed with their hash"]
        rows = parse_model(raw, HumanLabels, LABELS).rows
        keys = {(c.id, g.sha256) for c in comps for g in (c.baseline, c.patched)}
        if any((r.prompt_id, r.completion_sha256) not in keys for r in rows):
            out.append(f"{LABELS} labels a completion this edit does not hold")
        if (human_accuracy(comps, rows, "baseline") != h.baseline
                or human_accuracy(comps, rows, "patched") != h.patched):
            out.append("the human accuracies are not what labels.json gives")
    return out


def verify_edit(edit_dir: Path | str) -> list[str]:
    """Every problem with an edit directory, one line each; [] when every check holds."""
    edit_dir = Path(edit_dir)
    path = edit_dir / EDIT_CERTIFICATE
    try:
        if not path.is_file():
            return [f"{edit_dir} holds no {EDIT_CERTIFICATE}: not a finished edit; rerun `blockcert edit`"]
        cert = parse_model(read_regular(path, "edit certificate"), EditCertificate, f"edit certificate {path}")
        if cert.body_digest() != cert.digest:
            return [f"{EDIT_CERTIFICATE} does not match its own digest (edited?)"]
        data, problems = _files(edit_dir, cert)
        if problems:
            return problems
        problems += _check_outputs(cert, data)
        problems += _check_base(edit_dir, cert, data)
        return problems
    except BlockCertError as e:
        return [str(e)]
