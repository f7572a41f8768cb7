"""The package's shape: the dependency rule, no import cycle, and each registry really is where a change plugs in.

The registry tests add a new family, surrogate kind, op and run check *from the outside*, touching no
package file, and run them end to end: that is what docs/architecture.md promises for each change type.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest
import torch
from importlinter.cli import lint_imports

import blockcert
from blockcert.arch import ADAPTERS
from blockcert.arch.llama import LlamaAdapter
from blockcert.arch.loading import wrap_model
from blockcert.bounds.block import GLOBAL_RULES
from blockcert.bounds.pointwise import ENCLOSURES
from blockcert.core.ops import OPS, RESIDUAL
from blockcert.errors import BlockCertError
from blockcert.surrogates import SURROGATES, SurrogateKind, register
from blockcert.verifier.run import RUN_CHECKS

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "python" / "blockcert"


def test_the_dependency_rule_holds():
    """import-linter's contracts in pyproject.toml: the layer order and the I/O-free numerics."""
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle_among_modules():
    graph = grimp.build_graph("blockcert", cache_dir=None)  # grimp sees imports inside functions too
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def test_no_package_import_hides_inside_a_function():
    """Function-level imports of BlockCert modules would be dodging a cycle; only the lazy root API may."""
    offenders = []
    for f in PKG.rglob("*.py"):
        if f == PKG / "__init__.py":
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    mod = getattr(inner, "module", None) if isinstance(inner, ast.ImportFrom) else None
                    if mod and mod.startswith("blockcert"):
                        offenders.append(f"{f.relative_to(ROOT)}:{inner.lineno}")
    assert offenders == []


def test_every_op_has_a_forward_an_enclosure_and_a_lipschitz_rule():
    for name, op in OPS.items():
        assert name in GLOBAL_RULES, f"op {name} has no Lipschitz rule"
        if name != RESIDUAL:  # the walk itself closes residual branches, in both tables
            assert op.forward is not None and name in ENCLOSURES, f"op {name} lacks a forward or an enclosure"


def test_the_public_api_is_what_the_contract_names():
    names = {"load_model", "wrap", "extract", "load_run", "stitch", "bound", "verify", "to_formal", "lean_module",
             "Run", "Report"}
    assert names <= set(blockcert.__all__)
    # The root's lazy list and the API module's own list are one list (the root adds only its versions).
    from blockcert import api  # the root imports it lazily, on first attribute use

    assert set(blockcert.__all__) - {"INTERPRETER_VERSION", "__version__"} == set(api.__all__)
    for n in names:
        assert getattr(blockcert, n).__doc__ or n in ("Report",), n


# ---- change types, made from outside the package --------------------------------------------------------


def _tiny_mistral():
    from transformers import MistralConfig, MistralForCausalLM

    from blockcert.arch.toy import byte_tokenizer

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=260, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        sliding_window=None, rms_norm_eps=1e-5)
    return MistralForCausalLM(cfg).eval(), byte_tokenizer()


def test_a_new_llama_like_family_is_one_subclass(monkeypatch):
    """Mistral without a sliding window is Llama numerics: the adapter states only its model_type."""

    class MistralAdapter(LlamaAdapter):
        model_type = "mistral"
        architecture = "MistralForCausalLM"
        label = "Mistral (no sliding window)"

    monkeypatch.delitem(ADAPTERS, "mistral")  # the registered one, to show the subclass alone suffices
    monkeypatch.setitem(ADAPTERS, "mistral", MistralAdapter())
    model, tok = _tiny_mistral()
    run = blockcert.extract(wrap_model(model, tok, "tiny-mistral"), ["hello there", "a b c d e f"], blocks="all")
    assert [c.metrics.epsilon for c in run.certificates.values()] == [0.0, 0.0]  # bit-exact replay
    assert blockcert.verify(run)


def test_an_unregistered_family_fails_with_the_supported_list():
    from transformers import OPTConfig, OPTForCausalLM

    from blockcert.arch.toy import byte_tokenizer

    model = OPTForCausalLM(OPTConfig(vocab_size=260, hidden_size=32, num_hidden_layers=1, ffn_dim=64,
                                     num_attention_heads=4, word_embed_proj_dim=32)).eval()
    with pytest.raises(BlockCertError, match="unsupported architecture .*'opt'.*supported: .*Llama.*Phi-3"):
        wrap_model(model, byte_tokenizer())


def test_a_new_surrogate_kind_is_one_registration(monkeypatch, toy_models):
    def zero_mlp(ir, _args):
        ts = {k: torch.zeros_like(v) if k == "mlp.down.weight" else v for k, v in ir.tensors.items()}
        return type(ir)(ir.spec, ts)

    monkeypatch.setitem(SURROGATES, "no-mlp", SurrogateKind("no-mlp", "MLP output zeroed", zero_mlp))
    run = blockcert.extract(str(toy_models["llama-gqa"]), "default", blocks=[0], surrogate="no-mlp")
    cert = run.certificates[0]
    assert cert.metrics.epsilon > 0 and run.summary.blocks[0].epsilon == cert.metrics.epsilon
    assert blockcert.verify(run)  # the verifier replays the new kind from the IR alone


def test_a_new_run_check_is_one_registration(monkeypatch, toy_run):
    monkeypatch.setitem(RUN_CHECKS, "always fails", lambda run_dir, model: ["the new check fired"])
    report = blockcert.verify(toy_run)
    assert not report and "the new check fired" in report.lines()


def test_register_is_the_public_way_to_add_a_kind():
    before = dict(SURROGATES)
    try:
        register(SurrogateKind("identity-test", "copy", lambda ir, a: ir))
        assert "identity-test" in SURROGATES
    finally:
        SURROGATES.clear()
        SURROGATES.update(before)


def test_architecture_doc_names_only_files_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:python/blockcert|tests|docs|bench)/[\w/.-]+\.(?:py|md))`", text))
    assert paths, "the change-type table names no files"
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []
