"""Reading weight files as they are crafted or really ship (issue 22's file items, issue 20's
ONNX graphs and checkpoint wrappers): every crafted file is built here, refused in one line
naming it (never a traceback, never read outside its folder, never allocated from a header's
word), or read right; memory is measured in a child process under an address-space cap."""

import json
import math
import os
import resource
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli.cli import app
from initcli.errors import InitcliError
from initcli.inspection import inspect
from initcli.inspection.readers import open_source

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def write_safetensors(path, tensors: dict) -> None:
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    path.write_bytes(safetensors_bytes(header, b"".join(blobs)))


def he(rng, shape):
    return rng.normal(0, math.sqrt(2 / shape[1]), shape).astype(np.float32)


def in_child(script: str, *args, cap_gib: float = 3.0) -> dict:
    """Run `script` (which prints one JSON line) in a fresh interpreter whose address space is
    capped at its size after imports plus `cap_gib`; `peak_mib()` is its resident peak above
    the resident size it had before the work."""
    prelude = f"""
import json, resource, sys
def _status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
import numpy
from initcli.inspection import inspect
from initcli.inspection.readers import open_source
resource.setrlimit(resource.RLIMIT_AS, (_status('VmSize:') + int({cap_gib} * 2**30), resource.RLIM_INFINITY))
_base = _status('VmRSS:')
def peak_mib():  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent
    return (_status('VmHWM:') - _base) / 2**20
"""
    done = subprocess.run([sys.executable, "-c", prelude + script, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **ENV, "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- issue 22 item 1: an index cannot lead out of its folder --------------------------------------


def _sharded(folder, shard_name: str):
    folder.mkdir(parents=True, exist_ok=True)
    index = {"metadata": {}, "weight_map": {"w": shard_name}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "link"])
def test_an_index_naming_a_shard_outside_its_folder_is_refused(tmp_path, how):
    outside = tmp_path / "outside.safetensors"
    write_safetensors(outside, {"secret": np.ones((4, 4))})
    folder = tmp_path / "model"
    if how == "dotdot":
        _sharded(folder, "../outside.safetensors")
    elif how == "absolute":
        _sharded(folder, str(outside))
    else:  # a link inside the folder pointing out of it
        _sharded(folder, "inside.safetensors")
        os.symlink(outside, folder / "inside.safetensors")
    with pytest.raises(InitcliError, match="outside") as caught:
        inspect(folder)
    assert "model.safetensors.index.json" in str(caught.value)


def test_a_hugging_face_snapshot_reads_its_shards_from_the_blob_store(tmp_path):
    repo = tmp_path / "hub" / "models--org--m"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / "0123abc"
    blobs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_safetensors(blobs / "9f86d08", {"w": he(rng, (64, 64))})
    _sharded(snapshot, "model-00001-of-00001.safetensors")
    os.symlink(os.path.relpath(blobs / "9f86d08", snapshot), snapshot / "model-00001-of-00001.safetensors")
    assert [t.name for t in inspect(snapshot).tensors] == ["w"]


# -- items 3, 4, 5: sizes are checked before anything is widened, unpickled or allocated ----------


def _write_bf16(path, rows: int, cols: int, std: float) -> None:
    n = rows * cols
    header = {"big.weight": {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [0, 2 * n]}}
    rng = np.random.default_rng(0)
    with open(path, "wb") as handle:
        handle.write(safetensors_bytes(header))
        for start in range(0, n, 1 << 23):
            x = rng.standard_normal(min(1 << 23, n - start), dtype=np.float32) * np.float32(std)
            handle.write((x.view(np.uint32) >> 16).astype("<u2").tobytes())  # bf16: the top half, truncated


def test_bf16_is_widened_in_chunks_not_whole(tmp_path):
    path = tmp_path / "big.safetensors"
    rows, cols = 8192, 12288  # 192 MiB of bf16: 384 MiB as float32, 768 MiB with the uint32 copy of old
    _write_bf16(path, rows, cols, 0.02)
    found = in_child("r = inspect(sys.argv[1]); print(json.dumps({'std': r.tensors[0].std, 'peak': peak_mib()}))",
                     path, cap_gib=1.5)
    # truncating to bf16 rounds toward zero: a relative bias under 2^-8 on the std
    assert found["std"] == pytest.approx(0.02, rel=2**-8 + 4 / math.sqrt(2**20))
    file_mib = rows * cols * 2 / 2**20
    # the mapped file plus a few chunks of 2^24 elements (64 MiB as float32), never the 384 MiB whole
    assert found["peak"] < file_mib + 300, found


def test_widened_values_are_the_formats(tmp_path):
    torch = pytest.importorskip("torch")
    from initcli.inspection.readers import Widened

    values = torch.tensor([0.0, -0.0, 1.0, -2.5, 448.0, 1e-3, float("inf"), float("nan")])
    for dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz,
                  torch.float8_e5m2fnuz):
        stored = values.to(dtype)
        path = tmp_path / f"{str(dtype)[6:]}.pt"
        torch.save({"w": stored}, path)
        with open_source(path) as source:
            got = source.read("w")
            assert isinstance(got, Widened)
            np.testing.assert_array_equal(np.asarray(got), stored.float().numpy())
            np.testing.assert_array_equal(got[1:3], stored.float().numpy()[1:3])


def test_a_pt_whose_pickle_inflates_is_refused_from_the_archive_directory(tmp_path):
    import pickle

    path = tmp_path / "bomb.pt"
    payload = pickle.dumps({"w": [0] * (40 << 20)}, protocol=2)  # 80 MiB of pickle, 320 MiB once loaded
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", payload)
        archive.writestr("bomb/version", "3\n")
    del payload
    assert path.stat().st_size < 1 << 20
    found = in_child("""
try:
    inspect(sys.argv[1]); print(json.dumps({'error': None}))
except Exception as exc:
    print(json.dumps({'error': str(exc), 'peak': peak_mib()}))""", path)
    assert "pickle" in found["error"] and "bomb.pt" in found["error"]
    assert found["peak"] < 64, found


def _npy_header(shape, dtype="<f4") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def test_an_npz_declaring_32_gib_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", _npy_header((1 << 16, 1 << 17)) + b"\0" * 64)  # 32 GiB declared
    found = in_child("""
try:
    inspect(sys.argv[1]); print(json.dumps({'error': None}))
except Exception as exc:
    print(json.dumps({'error': f'{type(exc).__name__}: {exc}', 'peak': peak_mib()}))""", path)
    assert found["error"].startswith("InitcliError") and "huge.npz" in found["error"], found
    assert found["peak"] < 64


def test_npz_members_are_read_right_stored_compressed_and_fortran(tmp_path):
    rng = np.random.default_rng(3)
    a, b = he(rng, (64, 32)), np.asfortranarray(he(rng, (48, 16)))
    for save in (np.savez, np.savez_compressed):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, a=a, b=b)
        with open_source(path) as source:
            np.testing.assert_array_equal(source.read("a"), a)
            np.testing.assert_array_equal(source.read("b"), b)


# -- items 8, 9, 10: crafted headers and archives are one line ---------------------------------------


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def test_deeply_nested_json_is_one_error_line(tmp_path):
    deep = tmp_path / "deep.safetensors"
    text = ('{"w": ' + _deep(100_000) + "}").encode()
    deep.write_bytes(struct.pack("<Q", len(text)) + text)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ' + _deep(100_000) + "}")
    for path in (deep, folder):
        with pytest.raises(InitcliError) as caught:
            inspect(path)
        assert "\n" not in str(caught.value)
    # a config.json nested as deep beside good weights is ignored, not an error
    write_safetensors(folder / "m.safetensors", {"w": he(np.random.default_rng(0), (32, 32))})
    (folder / "model.safetensors.index.json").unlink()
    (folder / "config.json").write_text(_deep(100_000))
    with open_source(folder) as source:
        assert source.config is None and [e.name for e in source.entries] == ["w"]


@pytest.mark.parametrize("offsets", ["[0, Infinity]", "[0, 1e400]", "[NaN, 16]", "[0, 99999999999999999999999]",
                                     "[16, 0]", "[0, 8]", '["0", "16"]', "[0, 0], \"shape\": [0, 18446744073709551616]"])
def test_impossible_data_offsets_are_one_error_line(tmp_path, offsets):
    path = tmp_path / "w.safetensors"
    # the last param repeats "shape", and JSON's last one wins: a zero-size tensor with a dimension past 2^64
    text = ('{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": ' + offsets + "}}").encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 16)
    with pytest.raises(InitcliError, match="w.safetensors"):
        inspect(path)


def _patch_zip_member(path, *, flag: int | None = None, method: int | None = None) -> None:
    """Set the general-purpose flag or the compression method of every member, in the local
    headers and the central directory alike."""
    data = bytearray(path.read_bytes())
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = data.find(signature)
        while start >= 0:
            if flag is not None:
                struct.pack_into("<H", data, start + flag_at, flag)
            if method is not None:
                struct.pack_into("<H", data, start + method_at, method)
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["encrypted", "unknown method"])
def test_npz_with_an_encrypted_or_unknown_member_is_one_line(tmp_path, damage):
    path = tmp_path / "odd.npz"
    np.savez(path, w=np.ones((8, 8), np.float32))
    _patch_zip_member(path, **({"flag": 1} if damage == "encrypted" else {"method": 97}))
    with pytest.raises(InitcliError, match="odd.npz"):
        inspect(path)


# -- item 11 and 23: tensors numpy cannot hold get a row with a note --------------------------------


def test_torch_tensors_numpy_cannot_take_are_rows_with_notes(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    dense = torch.randn(8, 8)
    good = torch.nn.init.kaiming_normal_(torch.empty(64, 64))
    odd = {
        "meta.weight": torch.empty(64, 64, device="meta"),
        "coo.weight": dense.to_sparse(),
        "csr.weight": dense.to_sparse_csr(),
        "quantized.weight": torch.quantize_per_tensor(dense, 0.1, 0, torch.qint8),
        "nested.weight": torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)]),
        "half_complex.weight": torch.zeros(4, 4, dtype=torch.complex32),
        "e8m0.weight": dense.abs().to(torch.float8_e8m0fnu),
    }
    path = tmp_path / "odd.pt"
    negated = torch.complex(torch.zeros_like(good), good).conj().imag  # -good, as a view with the neg bit
    assert negated.is_neg()
    torch.save({**odd, "neg.weight": negated, "good.weight": good}, path)
    rows = {t.name: t for t in inspect(path).tensors}
    assert set(rows) == {*odd, "neg.weight", "good.weight"}
    for name in odd:
        assert rows[name].note and rows[name].std is None, name
    assert "he-normal" in rows["good.weight"].match  # the rest is still inspected
    assert rows["neg.weight"].mean == pytest.approx(-float(good.numpy().mean()), rel=1e-4)  # the bit resolved
    assert rows["neg.weight"].std == pytest.approx(float(good.numpy().std()), rel=1e-5)


def test_safetensors_dtypes_numpy_lacks_are_rows_with_notes(tmp_path):
    rng = np.random.default_rng(1)
    w = he(rng, (64, 64))
    header = {"scales": {"dtype": "F8_E8M0", "shape": [4, 4], "data_offsets": [0, 16]},
              "packed": {"dtype": "F4", "shape": [8], "data_offsets": [16, 20]},
              "w": {"dtype": "F32", "shape": [64, 64], "data_offsets": [20, 20 + w.nbytes]}}
    path = tmp_path / "mx.safetensors"
    path.write_bytes(safetensors_bytes(header, bytes(range(16)) + b"\0" * 4 + w.tobytes()))
    rows = {t.name: t for t in inspect(path).tensors}
    assert "F8_E8M0" in rows["scales"].note and "F4" in rows["packed"].note
    assert rows["w"].std == pytest.approx(float(w.std()), rel=1e-6)


# -- item 16: a re-zipped (deflated) .pt ------------------------------------------------------------


def test_a_deflated_pt_is_read_right(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    w = torch.randn(64, 32) * 0.05
    plain, deflated = tmp_path / "plain.pt", tmp_path / "deflated.pt"
    torch.save({"w": w}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info), compress_type=zipfile.ZIP_DEFLATED)
    (row,) = inspect(deflated).tensors
    assert row.std == pytest.approx(float(w.numpy().std()), rel=1e-6)


# -- item 20: read failures say which file, as read failures ----------------------------------------


@pytest.mark.parametrize("case", ["folder shard", "link loop shard", "folder index", "indexed link loop"])
def test_read_failures_inside_a_folder_name_the_file(tmp_path, case):
    folder = tmp_path / "model"
    folder.mkdir()
    write_safetensors(folder / "a.safetensors", {"w": np.ones((4, 4))})
    if case == "folder shard":
        (folder / "b.safetensors").mkdir()
        culprit = "b.safetensors"
    elif case == "link loop shard":
        os.symlink(folder / "b.safetensors", folder / "b.safetensors")
        culprit = "b.safetensors"
    elif case == "folder index":
        (folder / "model.safetensors.index.json").mkdir()
        culprit = "model.safetensors.index.json"
    else:  # named by the index, with a config.json looping too (a hint: ignored)
        _sharded(folder, "b.safetensors")
        os.symlink(folder / "b.safetensors", folder / "b.safetensors")
        os.symlink(folder / "config.json", folder / "config.json")
        culprit = "b.safetensors"
    with pytest.raises(InitcliError) as caught:
        inspect(folder)
    assert culprit in str(caught.value) and "write" not in str(caught.value)
    done = run("inspect", folder, "-f", "csv")
    assert done.exit_code == 2 and done.stdout == "" and culprit in done.stderr


# -- item 22: nothing to inspect is said -------------------------------------------------------------


def test_safetensors_without_tensors_say_so(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(safetensors_bytes({"__metadata__": {"format": "pt"}}))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text('{"metadata": {}, "weight_map": {}}')
    for path in (empty, folder):
        done = run("inspect", path, "-f", "csv")
        assert done.exit_code == 2 and "no tensors" in done.stderr, done.output


# -- items 6 and 26: the CLI checks before it works ----------------------------------------------------


def test_a_glob_naming_no_tensor_is_refused_before_the_table(tmp_path):
    path = tmp_path / "p.safetensors"
    write_safetensors(path, {"a.weight": he(np.random.default_rng(0), (64, 64))})
    done = run("inspect", path, "-f", "table", "--save-plot", tmp_path / "p.png", "--tensor", "zzz*")
    assert done.exit_code == 2 and done.stdout == "" and "--tensor" in done.stderr
    assert not (tmp_path / "p.png").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit -v")
def test_propagate_with_a_huge_batch_is_refused_by_the_memory_guard(tmp_path):
    path = tmp_path / "chain.npz"
    rng = np.random.default_rng(0)
    np.savez(path, **{f"l{i}.weight": he(rng, (256, 256)) for i in range(4)})
    done = subprocess.run(["bash", "-c", f'ulimit -v 2000000; "{sys.executable}" -m initcli inspect {path} '
                                         f'--propagate --batch 1048576 -f csv'],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **ENV})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "--batch" in done.stderr and done.stdout == ""


# -- issue 20 item 7: ONNX as it ships ---------------------------------------------------------------


def _onnx_model(tmp_path, name="m.onnx"):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    conv_w = he(rng, (16, 3, 3, 3))
    gemm_w = he(rng, (10, 64))  # transB=1: stored (out, in)
    matmul_w = he(rng, (64, 32)).T.copy()  # a MatMul's constant right operand: (in, out)
    branch_w = he(rng, (32, 32))
    body_w = he(rng, (32, 32))

    def constant(output, array):
        return helper.make_node("Constant", [], [output], value=numpy_helper.from_array(array, output + "_v"))

    then_graph = helper.make_graph(
        [constant("Constant_77_output_0", branch_w), helper.make_node("MatMul", ["h", "Constant_77_output_0"], ["t"],
                                                                      name="branch_proj")],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_graph = helper.make_graph([helper.make_node("Identity", ["h"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h", "onnx::MatMul_9"], ["b"], name="loop_proj"),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(body_w, "onnx::MatMul_9")])
    nodes = [
        helper.make_node("Conv", ["x", "onnx::Conv_1"], ["c"], name="/stem/conv/Conv"),
        constant("Constant_3_output_0", gemm_w),
        helper.make_node("Gemm", ["f", "Constant_3_output_0", "head.fc.bias"], ["g"], name="/head/fc/Gemm", transB=1),
        constant("Constant_5_output_0", matmul_w),
        helper.make_node("MatMul", ["g2", "Constant_5_output_0"], ["h"], name="/mlp/fc1/MatMul"),
        constant("shape_const", np.array([1, -1], np.int64)),
        constant("eps", np.array(1e-5, np.float32)),
        helper.make_node("If", ["flag"], ["y"], name="gate", then_branch=then_graph, else_branch=else_graph),
        helper.make_node("Loop", ["trip", "flag"], ["cond_final", "z"], name="repeat", body=body),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(conv_w, "onnx::Conv_1"),
                                           numpy_helper.from_array(np.zeros(10, np.float32), "head.fc.bias")])
    path = tmp_path / name
    onnx.save(helper.make_model(graph), str(path))
    return path, {"conv": conv_w, "gemm": gemm_w, "matmul": matmul_w, "branch": branch_w, "body": body_w}


def test_onnx_weights_in_constants_and_subgraphs_are_named_by_their_consumer(tmp_path):
    path, arrays = _onnx_model(tmp_path)
    with open_source(path) as source:
        entries = {e.name: e for e in source.entries}
        # generated names (onnx::…, Constant_…_output_0) give way to the consumer's; real names stay
        assert set(entries) == {"/stem/conv/Conv.weight", "/head/fc/Gemm.weight", "head.fc.bias",
                                "/mlp/fc1/MatMul.weight", "branch_proj.weight", "loop_proj.weight"}
        hints = {name: (e.role_hint, e.layout_hint) for name, e in entries.items()}
        assert hints["/stem/conv/Conv.weight"] == ("conv", "torch")
        assert hints["/head/fc/Gemm.weight"] == ("linear", "torch")  # transB=1
        assert hints["/mlp/fc1/MatMul.weight"] == ("linear", "keras")
        assert hints["head.fc.bias"] == ("bias", None)
        np.testing.assert_array_equal(source.read("branch_proj.weight"), arrays["branch"])
        np.testing.assert_array_equal(source.read("loop_proj.weight"), arrays["body"])
        assert any("Constant" in what and "2" in why for what, why in source.skipped)  # the shape and the epsilon
    rows = {t.name: t for t in inspect(path).tensors}
    # drawn He for fan_in 32 and stored (in, out) = (32, 64): read in that layout, not torch's
    assert rows["/mlp/fc1/MatMul.weight"].fan_in == 32 and "he-normal" in rows["/mlp/fc1/MatMul.weight"].match


def test_onnx_external_data_outside_the_folder_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    tensor = numpy_helper.from_array(np.zeros((4, 4), np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([], "g", [], [], initializer=[tensor])
    path = folder / "ext.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(InitcliError, match="ext.onnx"), open_source(path) as source:
        [source.read(e.name) for e in source.entries]


# -- issue 20 item 8: checkpoints that are more than a state_dict -------------------------------------


@pytest.fixture(scope="module")
def trained_parts():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 32)).sum().backward()
    optimizer.step()
    return model.state_dict(), optimizer.state_dict()


@pytest.mark.parametrize("wrapper", ["model_state", "state_dict", "model", "module", "lightning", "model_and_ema"])
def test_checkpoint_wrappers_yield_the_model_and_skip_the_optimizer(tmp_path, trained_parts, wrapper):
    torch = pytest.importorskip("torch")
    state, optimizer = trained_parts
    if wrapper == "lightning":
        checkpoint = {"epoch": 3, "global_step": 40, "state_dict": state, "optimizer_states": [optimizer],
                      "lr_schedulers": [], "pytorch-lightning_version": "2.4.0"}
    elif wrapper == "model_and_ema":
        checkpoint = {"model": state, "ema": {k: v.clone() for k, v in state.items()}, "optimizer": optimizer}
    else:
        checkpoint = {wrapper: state, "optimizer_state": optimizer, "epoch": 1}
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint, path)
    with open_source(path) as source:
        assert [e.name for e in source.entries] == list(state)
        skipped = dict(source.skipped)
    optimizer_key = next(k for k in skipped if "optim" in k)
    held = sum(isinstance(v, torch.Tensor) for per_param in optimizer["state"].values() for v in per_param.values())
    assert held == 12  # step, exp_avg, exp_avg_sq of 4 parameters
    assert "optimizer" in skipped[optimizer_key] and f"{held} tensors" in skipped[optimizer_key]
    if wrapper == "model_and_ema":
        assert "ema" in skipped


def test_pytorch_model_bin_index_shards(tmp_path, trained_parts):
    torch = pytest.importorskip("torch")
    state, _ = trained_parts
    names = list(state)
    torch.save({k: state[k] for k in names[:2]}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({k: state[k] for k in names[2:]}, tmp_path / "pytorch_model-00002-of-00002.bin")
    index = {"metadata": {}, "weight_map": {k: f"pytorch_model-0000{1 + (i >= 2)}-of-00002.bin"
                                            for i, k in enumerate(names)}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mlp", "initializer_range": 0.02}))
    with open_source(tmp_path) as source:
        assert sorted(e.name for e in source.entries) == sorted(names)
        assert source.config == {"model_type": "mlp", "initializer_range": 0.02}
        np.testing.assert_array_equal(source.read(names[3]), state[names[3]].numpy())
    index["weight_map"][names[0]] = "../../etc/passwd"
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(InitcliError, match="outside"):
        open_source(tmp_path)


def test_torchscript_is_refused_by_name_without_running_it(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 4)), str(path))
    with pytest.raises(InitcliError, match="TorchScript"):
        inspect(path)
    done = run("inspect", path.rename(tmp_path / "scripted.jit"), "-f", "csv")
    assert done.exit_code == 2 and "TorchScript" in done.stderr


def test_config_json_is_a_hint_never_an_error(tmp_path):
    rng = np.random.default_rng(0)
    write_safetensors(tmp_path / "m.safetensors", {"w": he(rng, (32, 32))})
    for text, expected in (('{"model_type": "gpt2", "n_layer": 2}', {"model_type": "gpt2", "n_layer": 2}),
                           ("[1, 2]", None), ("{not json", None), ('{"a": NaN}', None),
                           ('{"pad": "' + "x" * (2 << 20) + '"}', None)):
        (tmp_path / "config.json").write_text(text)
        with open_source(tmp_path / "m.safetensors") as source:
            assert source.config == expected
    assert resource.getrlimit(resource.RLIMIT_AS)  # the suite itself runs uncapped


class Hyperparameters(dict):  # a checkpoint's object (Lightning's AttributeDict is one): never unpickled
    pass


def test_a_checkpoint_holding_objects_names_their_classes(tmp_path, trained_parts):
    torch = pytest.importorskip("torch")
    import pickle

    path = tmp_path / "objects.ckpt"
    torch.save({"state_dict": trained_parts[0], "hyper_parameters": Hyperparameters(lr=0.1)}, path,
               pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(InitcliError, match="Hyperparameters") as caught:
        inspect(path)
    assert "objects.ckpt" in str(caught.value)
