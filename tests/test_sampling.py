"""sample (stacks, tensors, bias vectors, LSUV) and the weight files it writes and propagate reads."""

import json
import os
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

import initcli.checks as checks
import initcli.propagation as propagation
from initcli.errors import InitcliError
from initcli.sampling import inspect_npz, load_npz, sample, save_npz


def _good(tmp_path, sizes=(6, 5, 4)):
    path = tmp_path / "good.npz"
    save_npz(sample("he-normal", sizes=list(sizes), bias_std=0.1), str(path))
    with np.load(path, allow_pickle=False) as data:
        return path, {k: data[k] for k in data.files}


def _refused(path, *, reserve=0):
    with pytest.raises(InitcliError) as info:
        load_npz(str(path), reserve=reserve)
    assert info.value.option == "--weights", info.value
    assert "\n" not in str(info.value)
    return str(info.value)


# -- sample ---------------------------------------------------------------------------------


def test_bias_vectors_are_one_dimensional_shapes(tmp_path):
    result = sample("normal", shape=[300], mean=0.5, std=0.1)
    assert result.weights[0].shape == (300,) and result.biases == ()
    row = result.rows()[0]
    assert row["fan_in"] is None and row["expected_std"] == pytest.approx(0.1, rel=1e-15)
    save_npz(result, str(tmp_path / "b.npz"))
    with np.load(tmp_path / "b.npz") as data:
        assert sorted(data.files) == ["metadata", "weight_1"]
    with pytest.raises(InitcliError) as info:
        sample("he-normal", shape=[300])
    assert info.value.option == "--shape"
    with pytest.raises(InitcliError) as info:
        sample("zeros", shape=[300], bias_std=0.1)
    assert info.value.option == "--bias-std"


def test_memory_refusal_names_the_shape(monkeypatch):
    monkeypatch.setattr(checks, "available_bytes", lambda: 1 << 20)
    with pytest.raises(InitcliError) as info:
        sample("he-normal", shape=[100_000, 100_000])
    assert "--shape" in str(info.value) and "--batch" not in str(info.value)
    with pytest.raises(InitcliError) as info:
        sample("he-normal", sizes=[4096, 4096])
    assert "--sizes" in str(info.value) and "--batch" not in str(info.value)


def test_bias_std_beyond_float32_is_refused():
    with pytest.raises(InitcliError) as info:
        sample("he-normal", sizes=[4, 3], bias_std=1e39)
    assert info.value.option == "--bias-std" and "3.4e+38" in str(info.value)


def test_tiny_std_samples_without_warnings():
    # RuntimeWarnings are errors under pytest: the 1e-300 weights round to 0 in float32
    result = sample("normal", sizes=[8, 8], std=1e-300)
    assert result.rows()[0]["std"] == 0.0 and result.rows()[0]["std_ratio"] == 0.0


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_lsuv_samples_what_propagate_calibrates(activation):
    sizes, seed, batch = [24, 32, 32, 16], 3, 64
    result = sample("lsuv", sizes=sizes, seed=seed, activation=activation, batch=batch, input_std=2.0)
    run = propagation.prepare("lsuv", activation, sizes=sizes, seed=seed, batch=batch, input_std=2.0)
    stack, _, _, iterations = propagation.run_inputs(run)
    for ours, theirs in zip(result.weights, stack.weights):
        np.testing.assert_array_equal(ours, theirs)  # the same inputs, the same arithmetic
    assert result.lsuv_iterations == iterations and result.params["lsuv_iterations"] == list(iterations)
    assert result.params["batch"] == batch and result.rows()[0]["expected_std"] is None


def test_lsuv_refuses_a_single_tensor_and_bad_batches():
    with pytest.raises(InitcliError) as info:
        sample("lsuv", shape=[8, 8])
    assert info.value.option == "--shape"
    with pytest.raises(InitcliError) as info:
        sample("lsuv", sizes=[8, 8], batch=0)
    assert info.value.option == "--batch"


# -- weight files -----------------------------------------------------------------------------


def test_round_trip_and_headers(tmp_path):
    path, arrays = _good(tmp_path)
    found = inspect_npz(str(path))
    assert found.sizes == [6, 5, 4] and found.depth == 2
    weights, biases, metadata = load_npz(str(path))
    np.testing.assert_array_equal(weights[0], arrays["weight_1"])
    assert metadata["sizes"] == [6, 5, 4]


def test_a_member_that_is_not_npy(tmp_path):
    path, _ = _good(tmp_path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "hello")
    assert "notes.txt" in _refused(path)


@pytest.mark.parametrize("sizes", [5, None, "6,5,4", [6, 5.0, 4], [True, 5, 4]])
def test_metadata_sizes_of_the_wrong_type(tmp_path, sizes):
    path, arrays = _good(tmp_path)
    metadata = json.loads(str(arrays["metadata"]))
    metadata["sizes"] = sizes
    np.savez(path, **{**arrays, "metadata": np.array(json.dumps(metadata))})
    _refused(path)


def test_deeply_nested_metadata(tmp_path):
    path, arrays = _good(tmp_path)
    np.savez(path, **{**arrays, "metadata": np.array('{"layout": "torch", "x": ' + "[" * 100_000 + "]" * 100_000
                                                     + "}")})
    _refused(path)


def _write_member(archive, name, shape, dtype="<f4", body=b"", compress=zipfile.ZIP_STORED):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    info = zipfile.ZipInfo(name + ".npy")
    info.compress_type = compress
    with archive.open(info, "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        for chunk in body if isinstance(body, list) else [body]:
            member.write(chunk)


def _crafted(path, weight_shape, *, chunks=(), compress=zipfile.ZIP_STORED):
    metadata = json.dumps({"layout": "torch (out, in, *kernel)"})
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        _write_member(archive, "weight_1", weight_shape, body=list(chunks), compress=compress)
        _write_member(archive, "bias_1", (weight_shape[0],), body=b"\0" * 4 * weight_shape[0])
        with archive.open("metadata.npy", "w") as member:
            np.lib.format.write_array(member, np.array(metadata))


def test_a_header_claiming_a_huge_array_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.npz"
    _crafted(path, (10**6, 10**6))  # 4 TB declared, nothing stored
    assert "GiB" in _refused(path)


def test_a_deflate_bomb_is_refused_before_it_is_decompressed(tmp_path, monkeypatch):
    rows, cols = 1024, 8192  # 32 MiB of float32 zeros, deflated to about 32 KiB
    path = tmp_path / "bomb.npz"
    zeros = bytes(4 * cols * 64)
    _crafted(path, (rows, cols), chunks=[zeros] * (rows // 64), compress=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    monkeypatch.setattr(checks, "available_bytes", lambda: 16 << 20)  # room for 14 MiB
    tracemalloc.start()
    try:
        _refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # headers only: nowhere near the 32 MiB the array declares


def test_arrays_shorter_than_declared(tmp_path):
    path = tmp_path / "short.npz"
    _crafted(path, (4, 3), chunks=[b"\0" * 20])  # 48 bytes declared
    _refused(path)


def test_zero_rows_are_blamed_on_the_file(tmp_path):
    path, arrays = _good(tmp_path)
    metadata = json.loads(str(arrays["metadata"]))
    del metadata["sizes"]
    np.savez(path, weight_1=np.zeros((0, 6), np.float32), bias_1=np.zeros(0, np.float32),
             metadata=np.array(json.dumps(metadata)))
    assert "0" in _refused(path)


def test_what_is_not_a_regular_file_is_refused_before_opening(tmp_path):
    _refused(tmp_path)  # a folder
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.npz"
        os.mkfifo(fifo)
        outcome = []
        reader = threading.Thread(target=lambda: outcome.append(_refused(fifo)), daemon=True)
        reader.start()
        reader.join(5)  # opening a FIFO for reading would block until a writer came
        assert outcome and "regular file" in outcome[0]
    if os.path.exists("/dev/zero"):
        _refused("/dev/zero")


def test_object_arrays_and_bad_metadata_types(tmp_path):
    path, arrays = _good(tmp_path)
    np.savez(path, **{**arrays, "weight_1": np.array([object()] * 30, dtype=object).reshape(5, 6)})
    _refused(path)
    for field, value in [("seed", "7"), ("scheme", ["x"]), ("layout", None)]:
        metadata = json.loads(str(arrays["metadata"]))
        metadata[field] = value
        np.savez(path, **{**arrays, "metadata": np.array(json.dumps(metadata))})
        _refused(path)
