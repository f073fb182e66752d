"""`probe` on architectures nobody here designed: Hugging Face's BERT, GPT-2 and Llama from small
configs, and plain-torch copies of torchvision's ResNet and ViT (tests/probe_models.py). Their
default inits, in training mode, are `stable`; deliberately broken variants are not; the same
command twice gives the same bytes; the output backpropagated from and the weights `--reinit`
redraws are the ones it says."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import probe_models  # noqa: E402

from initcli.probing import draw_inputs, probe, reinit_copy  # noqa: E402

MODELS = str(Path(__file__).with_name("probe_models.py"))
ROOT = Path(__file__).resolve().parent.parent
VOCAB, SEQ, BATCH = 64, 12, 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these models are tiny, and two threads on a busy 2-core machine spend
    their time waiting for each other (50× slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hf():
    """Builders of small Hugging Face models (4 blocks of width 32), transformers imported once."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    common = dict(vocab_size=VOCAB, use_cache=False, bos_token_id=0, eos_token_id=0)

    def gpt2():
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=4, n_head=2, n_positions=16,
                                                                    **common))

    def bert():
        return transformers.BertForSequenceClassification(transformers.BertConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, vocab_size=VOCAB,
            max_position_embeddings=16, num_labels=3))

    def llama():
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
            max_position_embeddings=16, pad_token_id=0, **common))

    return {"gpt2": gpt2, "bert": bert, "llama": llama}


def _built(builder, scale: float = 1.0, seed: int = 0):
    torch.manual_seed(seed)
    model = builder()
    probe_models._scale_weights(model, scale)
    return model


def _tokens():
    return draw_inputs(seed=0, dtype="float32", batch=BATCH, tokens=VOCAB, seq_len=SEQ)


BLOCKS = {"gpt2": "transformer.h.{}", "bert": "bert.encoder.layer.{}", "llama": "model.layers.{}"}


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_hugging_face_default_init_is_stable_judged_on_its_blocks(hf, name):
    result = probe(_built(hf[name]), _tokens())
    blocks = tuple(BLOCKS[name].format(i) for i in range(4))
    assert result.verdict == "stable", result.reason
    # the residual stream between blocks is what is judged, named in the reason
    assert result.judged == blocks
    assert f"judged 4 modules: {blocks[0]} … {blocks[-1]}" in result.reason
    # the logits, not the first tensor of the ModelOutput, and in train mode by default
    assert result.params["output"] == "logits" and result.params["train_mode"] is True
    assert result.modules[-1].output_shape in (f"{BATCH}x{SEQ}x{VOCAB}", f"{BATCH}x3")


def test_gpt2_without_its_layernorms_and_weights_x10_is_exploding(hf):
    # pre-LN blocks keep a branch's input at unit scale whatever the stream's; without ln_1/ln_2
    # each ×10 branch adds more than the stream holds, and its Jacobian multiplies the gradient
    model = _built(hf["gpt2"], 10.0)
    for block in model.transformer.h:
        block.ln_1, block.ln_2 = torch.nn.Identity(), torch.nn.Identity()
    result = probe(model, _tokens())
    assert result.verdict == "exploding", result.reason
    assert result.judged == tuple(BLOCKS["gpt2"].format(i) for i in range(4))
    # with its LayerNorms, ×10 is still stable: each branch sees a normalised stream
    assert probe(_built(hf["gpt2"], 10.0), _tokens()).verdict == "stable"


def test_resnet_default_init_stable_in_train_mode_judged_on_its_blocks():
    model = _built(probe_models.resnet)
    # 64×64 inputs: layer4 works on 2×2 maps, so its BatchNorms average over 32 values, not 8
    x = draw_inputs(seed=0, dtype="float32", batch=8, input_shape=(3, 64, 64))
    result = probe(model, x)
    assert result.verdict == "stable", result.reason
    assert result.judged == tuple(f"layer{s}.{b}" for s in range(1, 5) for b in range(2))
    rows = {r.module: r for r in result.modules}
    # train-mode statistics: a BatchNorm's output has unit variance per channel over the batch
    assert abs(rows["bn1"].channel_var - 1) < 1e-3
    # a norm's weight_std column holds its scale's mean (1 as torchvision sets it), not 0
    assert rows["bn1"].weight_std == 1.0


def test_resnet18_widths_default_init_stable():
    # at resnet18's widths the drift bound is ×10; the gradient's squared norm per input falls
    # ×16 over the 8 blocks (halving per block inside each stage) while per entry it stays within
    # ×2: each stage change (channels ×2, positions ÷4) moves one reading against the other
    model = _built(lambda: probe_models.ResNet(widths=(64, 128, 256, 512)))
    x = draw_inputs(seed=0, dtype="float32", batch=8, input_shape=(3, 64, 64))
    result = probe(model, x)
    assert result.verdict == "stable", result.reason
    assert result.judged == tuple(f"layer{s}.{b}" for s in range(1, 5) for b in range(2))
    assert "per entry" in result.reason and "3 changes of shape" in result.reason
    # the same widths broken (eval mode: each conv's ×10 compounds) are still broken
    assert probe(_built(lambda: probe_models.ResNet(widths=(64, 128, 256, 512)), 10.0), x,
                 train_mode=False).verdict == "exploding"


def test_resnet50_default_init_stable_in_train_mode():
    # torchvision's resnet50 at full width (Bottlenecks 3, 4, 6, 3; outputs 256…2048 channels),
    # 32×32 inputs. Inside each stage the stream's variance grows by about 0.35 a block and the
    # gradient per entry falls as a power of it (×5.6, ×11, ×33, ×16 over the four stages,
    # De & Smith 2020); read across stages that compounds to ×5.6e3 per entry against a bound
    # of ×10, which was `exploding` before each stage was read as the polynomial run it is
    x = draw_inputs(seed=0, dtype="float32", batch=8, input_shape=(3, 32, 32))
    model = _built(probe_models.resnet50)
    result = probe(model, x)
    blocks = tuple(f"layer{s}.{b}" for s, count in enumerate((3, 4, 6, 3), 1) for b in range(count))
    assert result.judged == blocks
    from initcli.verdicts import drift_bound

    widths = [r.width for r in result.modules if r.module in blocks]
    assert drift_bound([0] + widths) == 10.0
    assert result.verdict == "stable", result.reason
    assert "4 runs of one shape" in result.reason and "De & Smith 2020" in result.reason
    # broken, in eval mode (each BatchNorm the identity): ×10 on every conv multiplies the
    # variance by 100 per conv, about 1e6 per block, which float32 cannot hold past layer3 (an
    # `overflow` verdict); float64 holds it and reads the trend
    model = _built(probe_models.resnet50, 10.0).double()
    broken = probe(model, x.astype(np.float64), train_mode=False)
    assert broken.verdict == "exploding", broken.reason


@pytest.mark.parametrize("scale, broken", [(10.0, "exploding"), (0.1, "vanishing")])
def test_resnet_weights_scaled_broken_in_eval_mode_not_under_batch_statistics(scale, broken):
    # eval mode: an untouched BatchNorm is the identity (running mean 0, var 1), so each conv's
    # ×scale compounds, ×scale² in variance per conv; on batch statistics every BatchNorm divides
    # the scale out again (the conv–BN pair does not depend on the conv's scale)
    model = _built(probe_models.resnet, scale)
    x = draw_inputs(seed=0, dtype="float32", batch=8, input_shape=(3, 64, 64))
    assert probe(model, x, train_mode=False).verdict == broken
    assert probe(model, x).verdict == "stable"


def test_vit_zero_head_is_a_design_not_no_signal():
    model = _built(probe_models.vit)
    x = draw_inputs(seed=0, dtype="float32", batch=8, input_shape=(3, 16, 16))
    result = probe(model, x)
    assert result.verdict == "stable", result.reason
    assert result.params["zero_head"] == "heads.head" and "zero" in result.reason
    blocks = [r for r in result.modules if r.module.startswith("encoder.layers.encoder_layer_") and r.kind == "block"]
    assert [r.module for r in blocks] == [f"encoder.layers.encoder_layer_{i}" for i in range(4)]
    assert result.judged == tuple(r.module for r in blocks)
    # a unit cotangent on the head's input reaches every block
    assert all(r.grad_var > 0 for r in blocks)


def test_vit_channels_from_module_types():
    model = _built(probe_models.vit)
    x = torch.from_numpy(draw_inputs(seed=0, dtype="float32", batch=4, input_shape=(3, 16, 16)))
    seen = {}
    handles = [model.conv_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("conv", o.detach())),
               model.encoder.layers[0].register_forward_hook(lambda m, i, o: seen.__setitem__("block", o.detach()))]
    model.eval()
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    rows = {r.module: r for r in probe(model, x).modules}

    def channel_var(y, axis):
        per_channel = np.moveaxis(y.double().numpy(), axis, -1).reshape(-1, y.shape[axis])
        return float(per_channel.var(axis=0).mean())

    # Conv2d: channels at dim 1 (N, D, h, w); a block's (N, tokens, D): the last dim, features
    for key, name, axis in (("conv", "conv_proj", 1), ("block", "encoder.layers.encoder_layer_0", -1)):
        expected = channel_var(seen[key], axis)
        assert math.isclose(rows[name].channel_var, expected, rel_tol=1e-5), (name, rows[name].channel_var, expected)
        assert rows[name].width == seen[key].shape[axis]
    assert rows["encoder.layers.encoder_layer_0.ln_1"].weight_std == 1.0


def test_convnext_blocks_judged_and_channels_last_inside():
    model = _built(probe_models.convnext)
    x = torch.from_numpy(draw_inputs(seed=0, dtype="float32", batch=4, input_shape=(3, 32, 32)))
    result = probe(model, x)
    # the blocks of a stage, not the stage; a depthwise conv scaled by a 1e-6 layer scale is
    # inside a branch, not a unit of the stream
    assert result.judged == ("features.1.0", "features.1.1", "features.1.2")
    assert result.verdict == "stable", result.reason
    rows = {r.module: r for r in result.modules}
    seen = {}
    permute = model.features[1][0].block[1]
    handle = permute.register_forward_hook(lambda m, i, o: seen.__setitem__("y", o.detach()))
    model.eval()
    with torch.no_grad():
        model(x)
    handle.remove()
    # Permute([0, 2, 3, 1]) puts the channels last: its channel statistics are over them
    y = seen["y"].double().numpy()
    per_channel = y.reshape(-1, y.shape[-1])
    assert rows["features.1.0.block.1"].width == y.shape[-1]
    assert math.isclose(rows["features.1.0.block.1"].channel_var, float(per_channel.var(axis=0).mean()), rel_tol=1e-5)


def test_deep_relu_nets_without_norm():
    x = draw_inputs(seed=0, dtype="float32", batch=64, input_shape=(128,))

    def verdict(**kwargs):
        return probe(_built(lambda: probe_models.deep_relu(128, 16, **kwargs)), x)

    # He: variance kept (He et al. 2015); Xavier halves it per ReLU layer (2^-15 over 16), ×10
    # multiplies it by 100 per layer, ×0.1 divides it by 100; the bound here is ×10.7
    he = verdict(init="he")
    assert he.verdict == "stable", he.reason
    assert len(he.judged) == 16 and he.judged[0] == "0" and he.judged[-1] == "30"
    assert verdict(init="xavier").verdict == "vanishing"
    # a narrow classification head changes the gradient's scale by its shape, not by depth
    headed = probe(_built(lambda: torch.nn.Sequential(probe_models.deep_relu(128, 16, init="he"),
                                                      torch.nn.Linear(128, 10))), x)
    assert headed.verdict == "stable" and headed.judged == tuple(f"0.{i}" for i in range(0, 32, 2))
    assert verdict(init="he", scale=10.0).verdict == "exploding"
    assert verdict(init="he", scale=0.1).verdict == "vanishing"


def test_same_command_twice_gives_identical_csv():
    # two processes started together: nothing carried over but the command
    args = [sys.executable, "-m", "initcli", "probe", f"{MODELS}:unseeded", "--input-shape", "16", "--batch", "8",
            "--format", "csv"]
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
            for _ in range(2)]
    (first, first_err), (second, _) = (run.communicate(timeout=120) for run in runs)
    assert [run.returncode for run in runs] == [0, 0], first_err
    assert first == second and first
    assert "train-mode statistics" in first_err and "output 'output'" in first_err


def test_builder_seeded_and_global_state_put_back():
    from initcli.probing import run_probe

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = run_probe(f"{MODELS}:unseeded", input_shape=[16], batch=8, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(999)
    b = run_probe(f"{MODELS}:unseeded", input_shape=[16], batch=8, seed=4)
    assert a.rows() == b.rows()
    other = run_probe(f"{MODELS}:unseeded", input_shape=[16], batch=8, seed=5)
    assert other.modules[0].weight_std != a.modules[0].weight_std  # the seed reaches the builder's weights


def test_output_by_name_default_logits():
    x = draw_inputs(seed=0, dtype="float32", batch=256, input_shape=(8,))
    model = probe_models.dict_output()
    logits = probe(model, x)
    assert logits.params["output"] == "logits"
    rows = {r.module: r for r in logits.modules}
    # a unit-Gaussian cotangent on the logits: the classifier's gradient variance is that of
    # 256·3 N(0,1) draws, within 5 standard errors √(2/n) of 1
    assert abs(rows["classifier"].grad_var - 1) < 5 * math.sqrt(2 / (256 * 3))
    features = {r.module: r for r in probe(model, x, output="features").modules}
    assert abs(features["body"].grad_var - 1) < 5 * math.sqrt(2 / (256 * 16))
    assert math.isnan(features["classifier"].grad_var)
    from initcli.errors import InitcliError

    with pytest.raises(InitcliError, match="logits"):
        probe(model, x, output="logit")


def test_reinit_redraws_hf_conv1d_and_lists_what_it_leaves(hf):
    from initcli import make_init
    from initcli.probing import weight_plan

    model = _built(hf["gpt2"])
    plan, untouched = weight_plan(model)
    conv1d = [(name, pname, layout) for name, module, pname, layout in plan if type(module).__name__ == "Conv1D"]
    assert len(conv1d) == 4 * 4 and all(layout == "in_out" for *_, layout in conv1d)
    clone = reinit_copy(model, make_init("he-normal"), seed=0)
    for name, _, _ in conv1d:
        weight = clone.get_submodule(name).weight.detach().double().numpy()
        fan_in = weight.shape[0]  # Conv1D's weight is (in, out)
        # He: std √(2/fan_in); the sample std of n draws is within 5·std/√(2n) of it
        expected = math.sqrt(2 / fan_in)
        assert abs(weight.std() - expected) < 5 * expected / math.sqrt(2 * weight.size), name
    assert all("vector" in entry for entry in untouched)  # only norm scales and biases are left

    vit = _built(probe_models.vit)
    plan, untouched = weight_plan(vit)
    assert "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in {f"{n}.{p}" for n, _, p, _ in plan}
    assert {"class_token", "encoder.pos_embedding"} <= set(untouched)
