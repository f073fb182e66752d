"""The zoo table in README: Hugging Face architectures built from small configs by
transformers' own init code, saved with save_pretrained (safetensors + config.json), and
inspected; one row per model with the verdicts counted. No download: configs only.

    python tests/benchmarks/inspect_zoo.py            # markdown table on stdout
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
import warnings
from pathlib import Path

D, FF, HEADS, VOCAB, POS = 64, 256, 4, 500, 64


def configs(t):
    """(name, model class, config) for every architecture in the table: small sizes, each
    library's defaults otherwise, so the init is the one its authors wrote."""
    text = dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=2, num_attention_heads=HEADS,
                intermediate_size=FF, max_position_embeddings=POS)
    decoder = dict(vocab_size=VOCAB, d_model=D, encoder_layers=2, decoder_layers=2, encoder_attention_heads=HEADS,
                   decoder_attention_heads=HEADS, encoder_ffn_dim=FF, decoder_ffn_dim=FF, max_position_embeddings=POS)
    vision = dict(hidden_size=D, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=FF,
                  image_size=32, patch_size=8)
    return [
        ("bert", t.BertForMaskedLM, t.BertConfig(**text)),
        ("roberta", t.RobertaForMaskedLM, t.RobertaConfig(**text)),
        ("distilbert", t.DistilBertForMaskedLM, t.DistilBertConfig(vocab_size=VOCAB, dim=D, n_layers=2, n_heads=HEADS,
                                                                     hidden_dim=FF, max_position_embeddings=POS)),
        ("albert", t.AlbertForMaskedLM, t.AlbertConfig(embedding_size=32, **text)),
        ("electra", t.ElectraForPreTraining, t.ElectraConfig(embedding_size=32, **text)),
        ("gpt2", t.GPT2LMHeadModel, t.GPT2Config(vocab_size=VOCAB, n_embd=D, n_layer=3, n_head=HEADS, n_positions=POS,
                                                 bos_token_id=0, eos_token_id=0)),
        ("gpt_neox", t.GPTNeoXForCausalLM, t.GPTNeoXConfig(**text)),
        ("opt", t.OPTForCausalLM, t.OPTConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=2,
                                              num_attention_heads=HEADS, ffn_dim=FF, max_position_embeddings=POS,
                                              word_embed_proj_dim=D)),
        ("llama", t.LlamaForCausalLM, t.LlamaConfig(num_key_value_heads=2, **text)),
        ("mistral", t.MistralForCausalLM, t.MistralConfig(num_key_value_heads=2, **text)),
        ("qwen2", t.Qwen2ForCausalLM, t.Qwen2Config(num_key_value_heads=2, **text)),
        ("gemma", t.GemmaForCausalLM, t.GemmaConfig(num_key_value_heads=1, head_dim=16, **text)),
        ("phi", t.PhiForCausalLM, t.PhiConfig(**text)),
        ("t5", t.T5ForConditionalGeneration, t.T5Config(vocab_size=VOCAB, d_model=D, d_kv=16, d_ff=FF, num_layers=2,
                                                        num_heads=HEADS)),
        ("bart", t.BartForConditionalGeneration, t.BartConfig(**decoder)),
        ("pegasus", t.PegasusModel, t.PegasusConfig(**decoder)),
        ("funnel", t.FunnelModel, t.FunnelConfig(vocab_size=VOCAB, d_model=D, n_head=HEADS, d_head=16, d_inner=FF,
                                                  block_sizes=[1, 1], num_decoder_layers=1)),
        ("mamba", t.MambaForCausalLM, t.MambaConfig(vocab_size=VOCAB, hidden_size=D, state_size=8,
                                                     num_hidden_layers=2)),
        ("vit", t.ViTForImageClassification, t.ViTConfig(num_labels=10, **vision)),
        ("deit", t.DeiTForImageClassification, t.DeiTConfig(num_labels=10, **vision)),
        ("beit", t.BeitForImageClassification, t.BeitConfig(num_labels=10, use_relative_position_bias=True,
                                                              layer_scale_init_value=0.1, **vision)),
        ("swin", t.SwinForImageClassification, t.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                              num_heads=[2, 4], window_size=4, num_labels=10)),
        ("resnet", t.ResNetForImageClassification, t.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64],
                                                                    depths=[2, 2], layer_type="bottleneck",
                                                                    num_labels=10)),
        ("convnext", t.ConvNextForImageClassification, t.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1],
                                                                          num_stages=2, num_labels=10)),
        ("efficientnet", t.EfficientNetModel, t.EfficientNetConfig(width_coefficient=0.2, depth_coefficient=0.1,
                                                                    hidden_dim=64, image_size=32)),
        ("mobilevit", t.MobileViTModel, t.MobileViTConfig(image_size=32, hidden_sizes=[16, 24, 32],
                                                          neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64])),
        ("wav2vec2", t.Wav2Vec2Model, t.Wav2Vec2Config(hidden_size=D, num_hidden_layers=2, num_attention_heads=HEADS,
                                                       intermediate_size=FF, conv_dim=(16, 16), conv_stride=(5, 2),
                                                       conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                                                       num_conv_pos_embedding_groups=4)),
    ]


def main() -> int:
    import torch
    import transformers

    from initcli.inspection import inspect

    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore")
    rows, totals = [], collections.Counter()
    with tempfile.TemporaryDirectory() as folder:
        for name, cls, config in configs(transformers):
            torch.manual_seed(0)
            try:
                model = cls(config)
            except Exception as exc:  # an architecture this transformers version lacks or builds otherwise
                print(f"{name}: not built ({type(exc).__name__}: {exc})", file=sys.stderr)
                continue
            target = Path(folder) / name
            model.save_pretrained(target)
            start = time.perf_counter()
            result = inspect(target)
            seconds = time.perf_counter() - start
            counts = collections.Counter(t.verdict for t in result.tensors)
            flagged = [f"{t.name} ({t.verdict})" for t in result.tensors if t.verdict not in ("ok",)]
            totals.update(counts)
            totals["models"] += 1
            rows.append((name, len(result.tensors), counts, seconds, flagged))
    print("| model | tensors | ok | unusual | suspicious | trained | not ok |")
    print("|---|---|---|---|---|---|---|")
    for name, n, counts, _seconds, flagged in rows:
        shown = ", ".join(flagged[:3]) + (f" and {len(flagged) - 3} more" if len(flagged) > 3 else "")
        print(f"| {name} | {n} | {counts['ok']} | {counts['unusual']} | {counts['suspicious']} | {counts['trained']} "
              f"| {shown or '-'} |")
    n = sum(r[1] for r in rows)
    print(f"| **{totals['models']} models** | {n} | {totals['ok']} | {totals['unusual']} | {totals['suspicious']} "
          f"| {totals['trained']} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
