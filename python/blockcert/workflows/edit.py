"""`blockcert edit RUN_DIR --patch PATCH.json --out EDIT_DIR`: a certified local edit (paper §7).

Everything that can be refused is refused before anything is written: the patch (schema, blocks, heads,
shapes: it is applied in memory first), the corpus, the marker lists, the side-effect prompts, the model.
Then, for the corpus, greedy completions of the unedited and the edited model (the edited block through
the interpreter, arch/generate.py), classified; on the side-effect prompts, the paired replay of the
native and the edited model (arch/stitched.py), ε_edit from both IRs at the native input of the block, and
the global bound instantiated with it when the run has bound.json. The certificate is removed first and
written last, so an interrupted edit never leaves one that looks valid.

`EditSession` holds what a sweep shares between configurations (the model, the corpus ids, the baselines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from blockcert.arch.generate import Completion, block_inputs, greedy, prompt_ids, uses_chat_template
from blockcert.arch.loading import load_run_model
from blockcert.arch.native import NativeModel, encode
from blockcert.arch.stitched import layer_deviations, paired_replay, prompt_evaluations
from blockcert.core.batch import Batch
from blockcert.core.digest import canonical_json, sha256_bytes
from blockcert.core.interpreter import run_block
from blockcert.core.ir import BlockIR
from blockcert.core.metrics import token_errors
from blockcert.edits.classify import DEFAULT_MARKERS, Markers, decide
from blockcert.edits.patch import RankOne, Swap, apply_patch, check_block, parse_patch, patch_json, same_ir
from blockcert.edits.quality import accuracy, quality
from blockcert.errors import BlockCertError
from blockcert.present.progress import say, track
from blockcert.records.certificate import BlockCertificate
from blockcert.records.edit import (
    COMPLETIONS,
    EDIT_CERTIFICATE,
    EDITED_IR_DIR,
    METRICS,
    PATCH_FILE,
    PATCH_TENSORS,
    SIDE_TRACES,
    BaseRef,
    CompletionPair,
    Completions,
    Corpus,
    Decoding,
    EditBound,
    EditCertificate,
    EditMetrics,
    Generated,
    PromptDecision,
    SideEffects,
    edit_bound_instances,
    text_sha256,
)
from blockcert.records.fullmodel import global_metrics
from blockcert.store import layout
from blockcert.store.files import (
    atomic_write_bytes,
    ensure_writable_dir,
    json_bytes,
    read_json,
    resolve_inside,
    sha256_file,
)
from blockcert.store.prompts import load_prompts
from blockcert.store.records_io import load_model_file, parse_model
from blockcert.store.run_reader import (
    block_certificate,
    certified_batch,
    certified_bytes,
    load_bound_artifact,
    load_certified_ir,
    load_certified_prompt_epsilons,
    load_run_summary,
)
from blockcert.store.strict_json import read_regular
from blockcert.store.tensors import decode_spec, decode_tensors, ir_files, tensor_bytes

BUNDLED_CORPORA = ("refusal",)


def load_corpus(spec: str) -> Corpus:
    """`refusal` (bundled) or a JSON file of the same form; one error line for anything else."""
    if spec in BUNDLED_CORPORA:
        data = resources.files("blockcert").joinpath(f"data/{spec}_corpus.json").read_bytes()
        return parse_model(data, Corpus, f"bundled corpus {spec}")
    path = Path(spec)
    if not path.is_file():
        raise BlockCertError(f"corpus {spec!r} is neither a bundled corpus ({', '.join(BUNDLED_CORPORA)}) "
                             "nor an existing JSON file")
    return load_model_file(path, Corpus, "corpus")


def load_markers(path: Path | None) -> Markers:
    return DEFAULT_MARKERS if path is None else load_model_file(path, Markers, "classifier markers")


@dataclass(frozen=True)
class LoadedPatch:
    patch: object
    spec_bytes: bytes  # patch.json as the edit directory records it (canonical)
    tensors: dict[str, torch.Tensor] | None
    tensor_bytes: bytes | None


def load_patch(path: Path) -> LoadedPatch:
    obj = read_json(path, "patch file")
    patch = parse_patch(obj, f"patch {path}")
    tensors = data = None
    if isinstance(patch, RankOne):
        data = read_regular(resolve_inside(path.parent, patch.tensors), f"patch tensors {patch.tensors}")
        tensors = decode_tensors(data, f"patch tensors {patch.tensors}")
    return LoadedPatch(patch, json_bytes(patch_json(patch)), tensors, data)


def patch_from_spec(obj: dict) -> LoadedPatch:
    """A patch given as data (the sweep's scale_mlp configurations)."""
    patch = parse_patch(obj, "patch")
    return LoadedPatch(patch, json_bytes(patch_json(patch)), None, None)


@dataclass(frozen=True)
class EditOptions:
    run_dir: Path
    patch: Path
    out: Path
    corpus: str = "refusal"
    side_prompts: str = "stress"
    max_new_tokens: int = 48
    markers: Path | None = None
    model: str | None = None
    device: str | None = None
    batch_size: int = 8


@dataclass
class EditSession:
    """A run, its model and the inputs every edit of one command (or one sweep) shares."""

    run_dir: Path
    corpus: Corpus
    markers: Markers
    side_spec: str
    max_new_tokens: int
    model: str | None = None
    device: str | None = None
    batch_size: int = 8
    _baselines: dict[int, list[Completion]] = field(default_factory=dict)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise BlockCertError("--max-new-tokens must be at least 1")
        if self.batch_size < 1:
            raise BlockCertError("--batch-size must be at least 1")
        self.summary = load_run_summary(self.run_dir)
        self.have = sorted(e.index for e in self.summary.blocks)
        self.side = load_prompts(self.side_spec)
        say(f"loading {self.model or self.summary.model.name} ({self.summary.model.dtype})")
        self.lm = load_run_model(self.summary, self.model, self.device)
        self.native = NativeModel(self.lm)
        self.same_prompts = self.side.sha256 == self.summary.prompts.sha256
        # The run's own prompts are taken as the exact ids it was certified on, never re-tokenised.
        self.side_batch: Batch = (certified_batch(self.run_dir, self.summary, self.lm.pad_token_id)
                                  if self.same_prompts else encode(self.lm, self.side.prompts))
        ids = [row[m].tolist() for row, m in zip(self.side_batch.ids, self.side_batch.valid, strict=True)]
        self.side_ids_sha256 = sha256_bytes(canonical_json(ids).encode())
        self.corpus_ids = [prompt_ids(self.lm, p.text) for p in self.corpus.prompts]
        self._certs: dict[int, BlockCertificate] = {}
        self._irs: dict[int, BlockIR] = {}

    def cert(self, i: int) -> BlockCertificate:
        if i not in self._certs:
            self._certs[i] = block_certificate(self.run_dir, self.summary, i)
        return self._certs[i]

    def ir(self, i: int) -> BlockIR:
        if i not in self._irs:
            if len(self._irs) > 1:  # at most two blocks' tensors beside the model (a swap needs two)
                self._irs.clear()
            self._irs[i] = load_certified_ir(self.run_dir, self.cert(i), self.native.device)
        return self._irs[i]

    def prepare(self, lp: LoadedPatch) -> BlockIR:
        """The edited IR, in memory: every refusal of the patch happens here, before anything is written."""
        p = lp.patch
        check_block(p, self.summary.model.num_layers, self.have)
        source = self.ir(p.source) if isinstance(p, Swap) else None
        ir = self.ir(p.block)
        return apply_patch(p, ir, source, lp.tensors)

    def complete(self, block: int, ir: BlockIR, label: str) -> list[Completion]:
        return [greedy(self.native, ids, self.max_new_tokens, block, ir)
                for ids in track(self.corpus_ids, label, total=len(self.corpus_ids))]

    def baseline(self, block: int) -> list[Completion]:
        if block not in self._baselines:
            self._baselines[block] = self.complete(block, self.ir(block), f"baseline completions (block {block})")
        return self._baselines[block]


@dataclass(frozen=True)
class EditOutcome:
    patch: LoadedPatch
    edited: BlockIR
    files: dict[str, bytes]
    certificate: EditCertificate


def _generated(c: Completion) -> Generated:
    return Generated(token_ids=c.token_ids, text=c.text, sha256=text_sha256(c.text))


def _max_per_prompt(e: torch.Tensor, valid: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(row[v].max()) if bool(v.any()) else 0.0 for row, v in zip(e, valid, strict=True))


def _exact_downstream(s: EditSession, block: int) -> bool:
    for j in range(block + 1, s.summary.model.num_layers):
        if j in s.have:
            spec = decode_spec(certified_bytes(s.run_dir, s.cert(j), layout.IR_SPEC), f"block {j}: ir.json")
            if spec.surrogate != "exact" or spec.derivation is not None:
                return False
    return True


def _bound(s: EditSession, block: int, eps_edit, measured) -> tuple[EditBound | None, str]:
    if not s.same_prompts:
        return None, ("no bound: the side-effect prompts are not the run's certified prompts, on which bound.json's "
                      "constants were computed")
    try:
        art = load_bound_artifact(s.run_dir)
    except BlockCertError as e:
        return None, f"no bound: {e}"
    eps_cert = load_certified_prompt_epsilons(s.run_dir, s.cert(block))
    inst = edit_bound_instances(art.blocks, block, eps_edit, eps_cert, measured, _exact_downstream(s, block))
    eb = EditBound(bound_file_sha256=sha256_file(s.run_dir / "bound.json"), bound_digest=art.digest, block=block,
                   epsilon_edit_per_prompt=eps_edit, epsilon_certified_per_prompt=eps_cert, instances=inst)
    return eb, "global bound Σ ε_i Π_{j>i} L_j with ε_i = 0 except at the edited block, from bound.json's constants"


def side_effects(s: EditSession, block: int, edited: BlockIR):
    """(SideEffects, per-layer deviations, per-prompt evaluations, side traces) of the edited model."""
    b = s.side_batch
    dev = s.native.device
    x, _ctx = block_inputs(s.native, b, block)
    valid, pos = b.valid.to(dev), b.positions.to(dev)
    with torch.no_grad():
        e = token_errors(run_block(edited, x, valid, pos), run_block(s.ir(block), x, valid, pos))
    e = torch.where(b.valid, e, 0.0)
    eps_edit = _max_per_prompt(e, b.valid)
    pr = paired_replay(s.native, b, {block}, lambda i: edited, s.batch_size, label="side effects")
    layers = layer_deviations(pr, {block}, s.lm.config.hidden_size)
    per_prompt = prompt_evaluations(pr)
    metrics = global_metrics(layers, per_prompt)
    final = _max_per_prompt(pr.errors[-1], b.valid)
    eps, fin = max(eps_edit), max(final)
    se = SideEffects(
        prompts_name=s.side.name, prompts_sha256=s.side.sha256, token_ids_sha256=s.side_ids_sha256,
        n_prompts=len(s.side.prompts), metrics=metrics, epsilon_edit=eps, epsilon_edit_per_prompt=eps_edit,
        local_error=float(layers[block].max_token_error), final_deviation=fin, final_deviation_per_prompt=final,
        amplification=fin / eps if eps > 0 else None,
    )
    traces = {"x_in": x.cpu(), "valid": b.valid.clone(), "positions": b.positions.clone()}
    return se, layers, per_prompt, traces


def evaluate(s: EditSession, lp: LoadedPatch, edited: BlockIR | None = None) -> EditOutcome:
    """Apply, generate, classify, measure: the edit directory's files as bytes, and its certificate."""
    p = lp.patch
    edited = edited if edited is not None else s.prepare(lp)
    base = s.baseline(p.block)
    patched = s.complete(p.block, edited, f"edited completions ({p.kind}, block {p.block})")
    labels = [c.label for c in s.corpus.prompts]
    bd = [decide(s.markers, c.label, g.text) for c, g in zip(s.corpus.prompts, base, strict=True)]
    pd = [decide(s.markers, c.label, g.text) for c, g in zip(s.corpus.prompts, patched, strict=True)]
    unchanged = [a.token_ids == b.token_ids for a, b in zip(base, patched, strict=True)]
    se, layers, per_prompt, traces = side_effects(s, p.block, edited)
    bound, note = _bound(s, p.block, se.epsilon_edit_per_prompt, se.final_deviation_per_prompt)

    pairs = tuple(
        CompletionPair(id=c.id, label=c.label, prompt=c.text, prompt_ids=a.prompt_ids, baseline=_generated(a),
                       patched=_generated(b))
        for c, a, b in zip(s.corpus.prompts, base, patched, strict=True)
    )
    decisions = tuple(PromptDecision(id=c.id, label=c.label, baseline=x, patched=y, unchanged=u)
                      for c, x, y, u in zip(s.corpus.prompts, bd, pd, unchanged, strict=True))
    bc = s.cert(p.block)
    certified_ir = {n: bc.artifacts[f"block_{p.block:03d}/{n}"] for n in (layout.IR_SPEC, layout.IR_TENSORS)}
    edited_files = ir_files(edited)
    files = {
        PATCH_FILE: lp.spec_bytes,
        f"{EDITED_IR_DIR}/{layout.IR_SPEC}": edited_files[layout.IR_SPEC],
        f"{EDITED_IR_DIR}/{layout.IR_TENSORS}": edited_files[layout.IR_TENSORS],
        SIDE_TRACES: tensor_bytes(traces),
        COMPLETIONS: json_bytes(Completions(items=pairs).model_dump(mode="json")),
        METRICS: json_bytes(EditMetrics(decisions=decisions, side_layers=layers, side_prompts=per_prompt)
                            .model_dump(mode="json")),
    }
    if lp.tensor_bytes is not None:
        files[PATCH_TENSORS] = lp.tensor_bytes
    hashes = {k: sha256_bytes(v) for k, v in files.items()}
    cert = EditCertificate(
        model=s.summary.model,
        base=BaseRef(
            run="", summary_sha256=sha256_bytes(read_regular(s.run_dir / layout.SUMMARY, "run summary")),
            block_certificate_digest=s.cert(p.block).digest,
            source_certificate_digest=s.cert(p.source).digest if isinstance(p, Swap) else None,
            ir_sha256=certified_ir,
        ),
        patch=patch_json(p), patch_sha256=hashes[PATCH_FILE], patch_tensors_sha256=hashes.get(PATCH_TENSORS),
        edited_ir_sha256={k: sha256_bytes(v) for k, v in edited_files.items()},
        edited_ir_is_certified_ir=same_ir(edited, s.ir(p.block)),
        corpus_name=s.corpus.name, corpus_sha256=s.corpus.sha256, n_prompts=len(s.corpus.prompts),
        classifier=s.markers, classifier_sha256=s.markers.sha256,
        decoding=Decoding(max_new_tokens=s.max_new_tokens, chat_template=uses_chat_template(s.lm)),
        files=hashes,
        baseline=accuracy(labels, [d.correct for d in bd]),
        patched=accuracy(labels, [d.correct for d in pd]),
        quality=quality(labels, [d.correct for d in bd], [d.correct for d in pd], unchanged,
                        [g.text for g in base], [g.text for g in patched]),
        side_effects=se, bound=bound, bound_note=note,
    )
    return EditOutcome(lp, edited, files, cert)


def write_edit(outcome: EditOutcome, run_dir: Path, out: Path) -> EditCertificate:
    """The edit directory: every file, then the certificate (sealed, with the base run's path relative to it)."""
    if out.resolve() == run_dir.resolve():
        raise BlockCertError("--out is the run directory itself; an edit never writes into a certified run")
    ensure_writable_dir(out)
    (out / EDIT_CERTIFICATE).unlink(missing_ok=True)
    for rel, data in outcome.files.items():
        atomic_write_bytes(out / rel, data)
    rel_run = os.path.relpath(run_dir.resolve(), out.resolve())
    base = outcome.certificate.base.model_copy(update={"run": Path(rel_run).as_posix()})
    cert = outcome.certificate.model_copy(update={"base": base}).sealed()
    atomic_write_bytes(out / EDIT_CERTIFICATE, json_bytes(cert.model_dump(mode="json")))
    return cert


def run_edit(opts: EditOptions) -> EditCertificate:
    lp = load_patch(opts.patch)
    corpus = load_corpus(opts.corpus)
    markers = load_markers(opts.markers)
    if opts.out.exists() and not opts.out.is_dir():
        raise BlockCertError(f"--out {opts.out} exists and is not a directory")
    s = EditSession(opts.run_dir, corpus, markers, opts.side_prompts, opts.max_new_tokens, opts.model,
                    opts.device, opts.batch_size)
    edited = s.prepare(lp)
    outcome = evaluate(s, lp, edited)
    return write_edit(outcome, opts.run_dir, opts.out)
