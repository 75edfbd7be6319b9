"""The checkpoint format (``hwnas._ckpt``): a search's whole state round-trips bit for bit through
safetensors + JSON, and anything else (pickles, random bytes, truncated files, other kinds) is a one-line
``HwnasError`` naming the file and the fix."""

from __future__ import annotations

import json
import math
import pickle
import struct

import pytest
import torch

from hwnas._ckpt import checkpoint_kind, load_state, save_state
from hwnas.config import SearchConfig
from hwnas.errors import HwnasError
from hwnas.run import CHECKPOINT, LEGACY_CHECKPOINT, checkpoint_of
from hwnas.search.loop import SearchState, arch_step, weight_step

FIX = "do the fix"


def same(a, b, where: str = "state") -> None:
    """``a`` and ``b`` are equal bit for bit: same types, keys, tensor dtypes/shapes/bytes, float bits."""
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        assert list(a) == list(b), where
        assert [type(k) for k in a] == [type(k) for k in b], f"{where}: key types"
        for k in a:
            same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}/{i}")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert (a.dtype, a.shape, b.device.type) == (b.dtype, b.shape, "cpu"), where
        assert a.detach().cpu().contiguous().flatten().view(torch.uint8).tolist() == \
            b.contiguous().flatten().view(torch.uint8).tolist(), where
    elif isinstance(a, float):
        assert type(b) is float, where
        assert (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b), where
    else:
        assert type(a) is type(b) and a == b, where


@pytest.fixture(scope="module")
def search_state() -> dict:
    """The state of a real search after a few weight, architecture and dropout steps (every optimiser has
    per-parameter state), with a history holding floats that JSON alone would lose."""
    torch.manual_seed(0)
    cfg = SearchConfig(relaxation="gumbel", epochs=2, warmup_epochs=1, learn_dropout=True, threads=1)
    st = SearchState(cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        x, y = torch.randn(8, 1, 28, 28, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        weight_step(st, x, y)
        arch_step(st, x, y, train_batch=(x, y), seed=3)
    st.epoch, st.step = 1, 2
    st.history = [{"epoch": 0, "train_loss": 0.1 + 0.2, "lr": 1 / 3, "nan": float("nan"), "inf": float("inf"),
                   "ninf": float("-inf"), "neg_zero": -0.0, "tiny": 5e-324, "arch": {"C_i": 16, "act": "relu"},
                   "probs": {"k": [0.25, 0.75]}, "none": None, "flag": True}]
    state = st.state_dict()
    assert state["w_opt"]["state"] and state["a_opt"]["state"] and state["h_opt"]["state"]
    assert all(isinstance(k, int) for k in state["w_opt"]["state"])
    assert isinstance(state["a_opt"]["param_groups"][0]["betas"], tuple)
    assert state["gen"].dtype == torch.uint8 and state["torch_rng"].dtype == torch.uint8
    return state


def test_a_search_state_round_trips_bit_for_bit(search_state, tmp_path):
    path = save_state(tmp_path / CHECKPOINT, search_state, kind="search", meta={"space": "seed-cnn", "epoch": 1})
    state, meta = load_state(path, kind="search", what="checkpoint", fix=FIX)
    same(search_state, state)
    assert meta == {"space": "seed-cnn", "epoch": 1}
    assert checkpoint_kind(path) == "search"
    assert not list(tmp_path.glob("*.tmp")), "the temp file was renamed into place"
    # and it loads into a fresh search state, which then holds exactly the saved state
    cfg = SearchConfig(relaxation="gumbel", epochs=2, warmup_epochs=1, learn_dropout=True, threads=1)
    fresh = SearchState(cfg, torch.device("cpu"))
    fresh.load_state_dict(state)
    same(search_state, fresh.state_dict())


def test_int_keys_tuples_odd_tensors_and_floats_come_back_as_saved(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {1: (1.5, -0.0, float("inf"), float("nan")), "1": [None, True, False, "s", 7, -2**62],
             "views": {"t": base.t(), "row": base[1], "same": base},  # shared storage, non-contiguous
             "dtypes": [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([True, False]),
                        torch.tensor(3.5, dtype=torch.bfloat16), torch.tensor([1.0], dtype=torch.float64),
                        torch.zeros(0, 3)],
             "a/b": torch.ones(1), "a": {"b": torch.zeros(1)}, "empty": {}, "nested": ((), [[]])}
    path = save_state(tmp_path / "x.safetensors", state, kind="search")
    back, meta = load_state(path, kind="search", what="checkpoint", fix=FIX)
    same(state, back)
    assert meta is None
    assert list(back) == [1, "1", "views", "dtypes", "a/b", "a", "empty", "nested"]


def test_a_weights_file_is_a_plain_safetensors_state_dict(tmp_path):
    from safetensors.torch import load_file

    sd = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).state_dict()
    path = save_state(tmp_path / "w.safetensors", sd, kind="weights",
                      meta={"space": "seed-cnn", "space_args": {}, "arch": {"k": 3}, "hparams": {}})
    plain = load_file(path)  # any safetensors reader sees the state dict under its own names
    assert set(plain) == set(sd) and all(torch.equal(plain[k], sd[k]) for k in sd)
    assert checkpoint_kind(path) == "weights"


def test_values_it_cannot_store_are_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="net/x"):
        save_state(tmp_path / "c.safetensors", {"net": {"x": object()}}, kind="search")
    with pytest.raises(TypeError, match="key"):
        save_state(tmp_path / "c.safetensors", {(1, 2): 3}, kind="search")
    with pytest.raises(ValueError, match="kind"):
        save_state(tmp_path / "c.safetensors", {}, kind="pickle")
    assert not (tmp_path / "c.safetensors").exists()


# ---- what is refused: one line naming the file, the problem and the fix ---------------------------------

class _Payload:
    def __reduce__(self):
        return (print, ("unpickled",))


def _one_line(err: HwnasError, path, *fragments: str) -> None:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg and msg.endswith(FIX), msg
    for f in fragments:
        assert f in msg, msg


def _refused(path, *fragments: str, kind: str = "search") -> None:
    with pytest.raises(HwnasError) as info:
        load_state(path, kind=kind, what="checkpoint", fix=FIX)
    _one_line(info.value, path, *fragments)
    assert checkpoint_kind(path) in (None, "search", "weights")


@pytest.fixture
def good(tmp_path, search_state):
    return save_state(tmp_path / "good.safetensors", search_state, kind="search")


def test_pickles_are_refused_by_their_first_bytes(tmp_path, monkeypatch):
    def no_unpickling(*a, **k):
        raise AssertionError("load_state unpickled something")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    zipped, raw, legacy = tmp_path / "a.safetensors", tmp_path / "b.pt", tmp_path / "c.pt"
    torch.save({"net": _Payload()}, zipped)  # the zip format torch.save writes by default
    raw.write_bytes(pickle.dumps({"net": _Payload()}, protocol=4))
    torch.save({"net": _Payload()}, legacy, _use_new_zipfile_serialization=False)
    assert zipped.read_bytes()[:4] == b"PK\x03\x04" and raw.read_bytes()[:1] == legacy.read_bytes()[:1] == b"\x80"
    for path in (zipped, raw, legacy):
        _refused(path, "a pickled checkpoint", "never loads pickles because they can run code")
        assert checkpoint_kind(path) is None


def test_random_bytes_truncated_and_missing_files(good, tmp_path):
    rnd = tmp_path / "random.safetensors"
    rnd.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                  dtype=torch.uint8).numpy().tobytes())
    _refused(rnd, "corrupted")
    data = good.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 200, 9, 3, 0):
        short = tmp_path / f"cut{cut}.safetensors"
        short.write_bytes(data[:cut])
        _refused(short, "checkpoint")
    _refused(tmp_path / "missing.safetensors", "does not exist")


def test_other_safetensors_files_kinds_and_versions(good, tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(plain))
    _refused(plain, "not an hwnas checkpoint")
    _refused(good, "a search checkpoint, not a weights file", kind="weights")

    def rewrite(name: str, **changes) -> object:
        """``good`` with its hwnas record changed (same tensors)."""
        from safetensors import safe_open

        with safe_open(good, "pt") as f:
            record = json.loads(f.metadata()["hwnas"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        path = tmp_path / name
        save_file(tensors, str(path), metadata={"hwnas": json.dumps({**record, **changes})})
        return path

    _refused(rewrite("v2.safetensors", version=2), "version 2")
    _refused(rewrite("fmt.safetensors", format="other"), "not an hwnas checkpoint")
    _refused(rewrite("kind.safetensors", kind="model"), "unknown kind")
    _refused(rewrite("tag.safetensors", state={"set": [1]}), "corrupted")
    _refused(rewrite("ref.safetensors", state={"tensor": "nope"}), "'nope' is missing")


def test_a_run_folder_with_only_the_legacy_checkpoint_is_refused(tmp_path, good):
    assert checkpoint_of(tmp_path, what="checkpoint") is None
    (tmp_path / LEGACY_CHECKPOINT).write_bytes(b"PK\x03\x04 whatever")
    with pytest.raises(HwnasError) as info:
        checkpoint_of(tmp_path, what="checkpoint")
    msg = str(info.value)
    assert "\n" not in msg and LEGACY_CHECKPOINT in msg and "pickled" in msg and "new --out" in msg
    good.rename(tmp_path / CHECKPOINT)  # the new file wins; the legacy one is never read
    assert checkpoint_of(tmp_path, what="checkpoint") == tmp_path / CHECKPOINT
