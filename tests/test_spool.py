"""Extraction into a directory writes each block's files as soon as they exist and holds one block's IR.

Memory is accounted for by the torch tensors alive (found through the garbage collector, one count per
storage, the model's own parameters and buffers left out) at every native block call and every block
certification: a count of objects, the same on every machine, never a timing or the process's RSS.
"""

from __future__ import annotations

import gc
import hashlib
import warnings

import pytest
import torch

import blockcert
import blockcert.arch.tracing as tracing
import blockcert.workflows.extract as ex
from blockcert.arch.native import NativeModel
from blockcert.core.ir import BlockIR
from blockcert.errors import BlockCertError
from blockcert.store.run_files import DiskFiles
from blockcert.verifier.run import verify_run
from blockcert.workflows.executor import RayExecutor

LAYERS = 4


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A Llama whose layers (15 MB each) dwarf its traces on the default prompts (< 1 MB a block)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from blockcert.arch.toy import byte_tokenizer

    out = tmp_path_factory.mktemp("wide") / "llama"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=260, hidden_size=512, intermediate_size=2048, num_hidden_layers=LAYERS,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256)
    LlamaForCausalLM(cfg).save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    return blockcert.load_model(str(out))


def _storages(tensors) -> dict[int, int]:
    out = {}
    for t in tensors:
        if t.device.type != "meta":
            s = t.untyped_storage()
            out[s.data_ptr()] = s.nbytes()
    return out


def _live(cls) -> list:
    with warnings.catch_warnings():  # isinstance on some torch module objects warns of deprecated names
        warnings.simplefilter("ignore")
        return [o for o in gc.get_objects() if isinstance(o, cls)]


def _live_bytes(exclude: dict[int, int]) -> int:
    """Bytes of every live tensor storage that is not the model's own."""
    return sum(n for ptr, n in _storages(_live(torch.Tensor)).items() if ptr not in exclude)


def _live_irs(before: dict[int, BlockIR]) -> set[int]:
    """Blocks with an IR alive that was not alive before (other tests' fixtures may hold IRs too)."""
    return {o.spec.block_index for o in _live(BlockIR) if before.get(id(o)) is not o}


def _watch(monkeypatch, lm) -> dict:
    """Peak live non-model tensor bytes and the most block IRs alive at once, at every native block call,
    every surrogate run of the tracing pass (where a block's IR must be alive) and every certification."""
    model = _storages([*lm.model.parameters(), *lm.model.buffers()])
    seen = {"bytes": 0, "irs": 0}
    gc.collect()
    before = {id(o): o for o in _live(BlockIR)}  # held, so that no new IR can take one of their ids

    def probe():
        gc.collect()
        seen["bytes"] = max(seen["bytes"], _live_bytes(model))
        seen["irs"] = max(seen["irs"], len(_live_irs(before)))

    block, certify, surrogate = NativeModel.block, ex._certify_block, tracing._surrogate

    def watched_block(self, i, x, ctx):
        probe()
        return block(self, i, x, ctx)

    def watched_certify(*a, **k):
        probe()
        return certify(*a, **k)

    def watched_surrogate(*a, **k):
        probe()
        return surrogate(*a, **k)

    monkeypatch.setattr(NativeModel, "block", watched_block)
    monkeypatch.setattr(tracing, "_surrogate", watched_surrogate)
    monkeypatch.setattr(ex, "_certify_block", watched_certify)
    return seen


def _ir_bytes(lm) -> int:
    return sum(p.numel() * p.element_size() for p in lm.model.model.layers[0].parameters())


def _trace_bytes(run_dir, i: int) -> int:
    return sum(p.stat().st_size for p in (run_dir / f"block_{i:03d}").glob("*.safetensors")
               if p.name != "ir.safetensors")


def test_peak_memory_of_a_spooled_extraction_does_not_grow_with_the_number_of_blocks(monkeypatch, wide_model,
                                                                                       tmp_path):
    lm, ir = wide_model, _ir_bytes(wide_model)
    peaks = {}
    for n in (1, LAYERS):
        seen = _watch(monkeypatch, lm)
        blockcert.extract(lm, "default", blocks=list(range(n)), out=tmp_path / f"n{n}")
        peaks[n] = dict(seen)
        monkeypatch.undo()
    traces = sum(_trace_bytes(tmp_path / f"n{LAYERS}", i) for i in range(LAYERS))
    assert peaks[1]["irs"] == peaks[LAYERS]["irs"] == 1  # never two blocks' IRs alive at once
    # Only the traces of the extra blocks may add to the peak; one more IR (15 MB) would not fit.
    assert peaks[LAYERS]["bytes"] <= peaks[1]["bytes"] + traces
    assert traces < ir  # so one more IR held would not fit in the slack the traces allow

    # The in-memory run, for contrast, holds every block's IR until it returns: the accounting sees it (bf16
    # surrogates: tensors of their own; an exact copy shares the model's, see below).
    seen = _watch(monkeypatch, lm)
    blockcert.extract(lm, "default", blocks=list(range(LAYERS)), surrogate="bf16")
    assert seen["irs"] == LAYERS and seen["bytes"] >= peaks[1]["bytes"] + (LAYERS - 1) * ir


def test_an_exact_copy_ir_shares_the_models_weights_instead_of_copying_them(wide_model):
    native = NativeModel(wide_model)
    ir = native.extract_ir(1)
    layer = wide_model.model.model.layers[1]
    assert ir.tensors["mlp.up.weight"].untyped_storage().data_ptr() == layer.mlp.up_proj.weight.data_ptr()
    assert ir.tensors["attn.q.weight"].untyped_storage().data_ptr() == layer.self_attn.q_proj.weight.data_ptr()
    model = _storages([*wide_model.model.parameters()])
    learned = [t for k, t in ir.tensors.items() if not k.startswith("rope.")]
    assert all(t.untyped_storage().data_ptr() in model for t in learned)  # no second copy of any weight


def _tensors_reachable(root, limit: int = 200_000) -> list[torch.Tensor]:
    found, stack, seen = [], [root], set()
    while stack and len(seen) < limit:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type):
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            found.append(o)
            continue
        stack.extend(gc.get_referents(o))
    return found


def test_a_spooled_run_holds_no_tensor_and_no_file_bytes(wide_model, tmp_path):
    run = blockcert.extract(wide_model, "default", blocks="all", out=tmp_path / "r")
    assert isinstance(run.files, DiskFiles) and run.path == tmp_path / "r"
    assert _tensors_reachable(run) == []
    assert not any(isinstance(o, bytes) and len(o) > 1 << 16 for o in gc.get_referents(run.files))


@pytest.mark.parametrize("kind", ["exact", "bf16", "int8", "lowrank:64"])
def test_spooled_files_are_byte_identical_to_the_in_memory_run(wide_model, tmp_path, kind):
    memory = blockcert.extract(wide_model, "default", blocks=[0, 2], surrogate=kind)
    disk = blockcert.extract(wide_model, "default", blocks=[0, 2], surrogate=kind, out=tmp_path / "r")
    assert sorted(disk.files) == sorted(memory.files)
    assert all(disk.files[k] == memory.files[k] for k in memory.files)  # read back from disk, byte for byte
    assert verify_run(tmp_path / "r").ok


def _digests(run_dir) -> dict[str, tuple[str, int]]:
    return {p.relative_to(run_dir).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_saving_a_spooled_run_to_its_directory_is_a_no_op_and_elsewhere_a_copy(wide_model, tmp_path):
    run = blockcert.extract(wide_model, "default", blocks=[1], surrogate="bf16", out=tmp_path / "r")
    before = _digests(tmp_path / "r")
    assert run.save(tmp_path / "r") is run
    assert _digests(tmp_path / "r") == before  # not even rewritten
    copy = run.save(tmp_path / "copy")
    assert copy.path == tmp_path / "copy" and copy.certificates == run.certificates
    assert {k: d for k, (d, _) in _digests(tmp_path / "copy").items()} == {k: d for k, (d, _) in before.items()}
    assert verify_run(tmp_path / "copy").ok
    # A loaded run copies the same way; a file changed since certification is refused, not copied.
    loaded = blockcert.load_run(tmp_path / "copy")
    loaded.save(tmp_path / "again")
    assert verify_run(tmp_path / "again").ok
    (tmp_path / "again/block_001/metrics.json").write_bytes(b"{}")
    with pytest.raises(BlockCertError, match="changed since it was written"):
        blockcert.load_run(tmp_path / "again").save(tmp_path / "bad")


def test_a_failed_spooled_extraction_leaves_no_partial_block(monkeypatch, wide_model, tmp_path):
    def boom(*a, **k):
        raise RuntimeError("certification failed")

    monkeypatch.setattr(ex, "_certify_block", boom)
    with pytest.raises(RuntimeError):
        blockcert.extract(wide_model, "default", blocks="all", out=tmp_path / "r")
    assert [p for p in (tmp_path / "r").rglob("*") if p.is_file()] == []  # the spooled IRs are removed again


def test_ray_executor_spools_the_same_bytes(wide_model, tmp_path):
    pytest.importorskip("ray")
    local = blockcert.extract(wide_model, "default", blocks=[0, 3], surrogate="bf16", out=tmp_path / "local")
    ray_exec = RayExecutor(num_cpus=2)
    try:
        remote = blockcert.extract(wide_model, "default", blocks=[0, 3], surrogate="bf16", executor=ray_exec,
                                   out=tmp_path / "ray")
    finally:
        ray_exec.shutdown()
    assert sorted(remote.files) == sorted(local.files)
    assert all(remote.files[k] == local.files[k] for k in local.files)
