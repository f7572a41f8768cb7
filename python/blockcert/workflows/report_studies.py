"""The studies section of `blockcert report`: a registry from a study file's schema to its table and reading.

A new study plugs in with one `register(Study(...))`: its schema (a pydantic model whose `schema_version`
field names it), the table, and a one-line reading of what the table shows. The report finds study files
by their `schema_version`, whatever their name, so `shift_other.json` and a future `edits.json` both land
here; a JSON file with an unknown schema is listed as such, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from blockcert.present.report_view import Table
from blockcert.records.semantic import SemanticEvaluation, is_correct
from blockcert.workflows.sensitivity import PromptSizeReport, ShiftReport, ThresholdReport

Rows = tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]  # (header, rows)


@dataclass(frozen=True)
class Study:
    title: str
    schema: type[BaseModel]
    table: Callable[[BaseModel], Rows]
    reading: Callable[[BaseModel], str]

    @property
    def schema_version(self) -> str:
        return self.schema.model_fields["schema_version"].default


STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    STUDIES[study.schema_version] = study
    return study


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _yes(b: bool) -> str:
    return "yes" if b else "no"


# ---------------------------------------------------------------- prompt shift


def _shift_table(r: ShiftReport) -> Rows:
    head = ("block", "ε before", "ε after", "MAE before", "MAE after", "cov_act", "cov_loss", "certified")
    rows = tuple(
        (str(b.index), _g(b.before.epsilon), _g(b.after.epsilon), _g(b.before.mae), _g(b.after.mae),
         f"{b.before.cov_act:.3f} → {b.after.cov_act:.3f}", f"{b.before.cov_loss:.3f} → {b.after.cov_loss:.3f}",
         f"{_yes(b.certified_before)} → {_yes(b.certified_after)}")
        for b in r.blocks
    )
    return head, rows


def _shift_reading(r: ShiftReport) -> str:
    n = len(r.blocks)
    before, after = sum(b.certified_before for b in r.blocks), sum(b.certified_after for b in r.blocks)
    grew = sum((b.after.epsilon or 0) > (b.before.epsilon or 0) for b in r.blocks)
    return (f"Moved from '{r.certified_prompts.name}' to '{r.shifted_prompts.name}', the unchanged surrogates stay "
            f"certified on {after}/{n} blocks (were {before}/{n}); ε grows on {grew}/{n}.")


register(Study("Prompt shift (§6.7)", ShiftReport, _shift_table, _shift_reading))


# ---------------------------------------------------------------- threshold sensitivity (Table 4)


def _threshold_table(r: ThresholdReport) -> Rows:
    head = ("block", *(f"cov_act ≥ {a:g}" for a in r.levels))
    return head, tuple((str(w.index), *(f"{c}/{w.n_prompts}" for c in w.passing)) for w in r.rows)


def _threshold_reading(r: ThresholdReport) -> str:
    total = sum(w.n_prompts for w in r.rows)
    counts = [sum(w.passing[i] for w in r.rows) for i in range(len(r.levels))]
    parts = ", ".join(f"{c}/{total} at {a:g}" for a, c in zip(r.levels, counts, strict=True))
    return f"Block-prompt pairs reaching each activation-coverage level with cov_loss ≥ {r.min_cov_loss:g}: {parts}."


register(Study("Threshold sensitivity (Table 4)", ThresholdReport, _threshold_table, _threshold_reading))


# ---------------------------------------------------------------- prompt-set size (Table 5)


def _size_table(r: PromptSizeReport) -> Rows:
    head = ("block", *(f"k = {k}" for k in r.ks))
    return head, tuple((str(w.index), *(f"{v:.3f}" for v in w.min_cov_act)) for w in r.rows)


def _size_reading(r: PromptSizeReport) -> str:
    dropped = sum(w.min_cov_act[-1] < w.min_cov_act[0] for w in r.rows)
    return (f"The minimum activation coverage over the first k prompts falls from k = {r.ks[0]} to k = {r.ks[-1]} "
            f"on {dropped}/{len(r.rows)} blocks: a small prompt set overstates coverage there.")


register(Study("Prompt-set size (Table 5)", PromptSizeReport, _size_table, _size_reading))


# ---------------------------------------------------------------- semantic probe


def _semantic_table(r: SemanticEvaluation) -> Rows:
    head = ("#", "category", "label", "baseline", "stitched", "same", "baseline ok", "stitched ok")
    rows = tuple(
        (str(i.index), i.category, repr(i.label_token), repr(i.baseline_answer), repr(i.stitched_answer),
         _yes(i.stitched_token == i.baseline_token), _yes(is_correct(i.baseline_answer, i.label_token)),
         _yes(is_correct(i.stitched_answer, i.label_token)))
        for i in r.items
    )
    return head, rows


def _semantic_reading(r: SemanticEvaluation) -> str:
    m = r.metrics
    return (f"Fidelity {m.fidelity_agreed}/{m.n_prompts}: the stitched model answers as the baseline does; "
            f"correctness against the labels, apart: baseline {m.baseline_correct}/{m.n_prompts}, "
            f"stitched {m.stitched_correct}/{m.n_prompts}.")


register(Study("Semantic probe (§6.7)", SemanticEvaluation, _semantic_table, _semantic_reading))


def study_table(study: Study, record: BaseModel, source: str, notes: tuple[str, ...] = ()) -> Table:
    head, rows = study.table(record)
    return Table(study.title, study.reading(record), head, rows, source, notes)


def certificate_digests(record: BaseModel) -> dict[int, str]:
    """block index -> the certificate digest a study row says it was computed from (none for the semantic probe)."""
    rows = getattr(record, "rows", None) or getattr(record, "blocks", None) or ()
    return {r.index: r.certificate_digest for r in rows if hasattr(r, "certificate_digest")}
