"""save_pretrained -> from_pretrained round trip; from_base on a tiny stock-SD-format directory."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from suti.errors import ModelLoadError
from suti.models.base import build_base
from suti.models.subject_attn import SubjectAttnProcessor
from suti.pipeline import SuTIPipeline

from _tiny import demo_images, run, tiny_config, tiny_latent_config, tiny_pipe


@pytest.mark.parametrize("make_cfg", [tiny_config, tiny_latent_config])
def test_save_load_gives_identical_images_and_clean_base_weights(tmp_path, make_cfg):
    cfg = make_cfg()
    pipe = tiny_pipe(cfg)
    before = run(pipe, "a red circle", demo_images(3))
    pipe.save_pretrained(tmp_path)

    # the pipeline is unchanged by saving (subject layers reinstalled, same images)
    assert isinstance(pipe.unet.attn_processors[pipe.subject.paths[0] + ".processor"], SubjectAttnProcessor)
    assert np.array_equal(run(pipe, "a red circle", demo_images(3)), before)

    # unet/ holds exactly the base weights: no subject keys, equal to a freshly built base
    saved = load_file(str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    base = build_base(cfg).unet.state_dict()
    assert set(saved) == set(base) and all(torch.equal(saved[k], base[k]) for k in base)
    assert not any("processor" in k or "demo" in k for k in saved)
    subject = load_file(str(tmp_path / "subject" / "subject_layers.safetensors"))
    assert subject and all(k.startswith(("subject.attn.", "subject.demo_encoder.")) for k in subject)
    meta = json.loads((tmp_path / "subject" / "config.json").read_text())
    assert meta["subject"]["levels"] == ["mid"] and meta["model"]["name"] == cfg.name

    loaded = SuTIPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.suti_config == cfg and loaded.subject.gates() == pipe.subject.gates()
    assert np.array_equal(run(loaded, "a red circle", demo_images(3)), before)


def test_fp16_files_load_in_float32_unless_asked(tmp_path):
    pipe = tiny_pipe(tiny_config())
    pipe.to(torch.float16)
    pipe.save_pretrained(tmp_path)  # what `suti train export` ships: fp16 files

    def dtypes(p):
        return {p.unet.dtype, p.text_encoder.dtype, *(w.dtype for w in p.subject.parameters())}

    # every component in float32 (transformers alone would keep the text encoder in fp16)
    assert dtypes(SuTIPipeline.from_pretrained(tmp_path)) == {torch.float32}
    assert dtypes(SuTIPipeline.from_pretrained(tmp_path, dtype=torch.float16)) == {torch.float16}
    assert dtypes(SuTIPipeline.from_pretrained(tmp_path, torch_dtype=torch.float16)) == {torch.float16}


def test_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="model_index.json"):
        SuTIPipeline.from_pretrained(tmp_path / "missing")
    pipe = tiny_pipe()
    pipe.save_pretrained(tmp_path)
    (tmp_path / "subject" / "subject_layers.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="subject"):
        SuTIPipeline.from_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="missing"):
        SuTIPipeline.from_base(tmp_path / "nowhere")


def _write_tiny_sd_dir(path):
    """A stock-SD-layout directory (what diffusers' StableDiffusionPipeline.save_pretrained writes), tiny."""
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=16,
    ).save_pretrained(path / "unet")
    AutoencoderKL(block_out_channels=(16, 32), latent_channels=4, layers_per_block=1, norm_num_groups=8,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  sample_size=16).save_pretrained(path / "vae")
    # a real byte-level-BPE CLIP tokenizer from a tiny vocab + merges written here
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for tok in ["a</w>", "r", "e", "d</w>", "c", "a", "t</w>", "re", "red</w>", "ca", "cat</w>", "o", "g</w>",
                "do", "dog</w>", "d", "t", "g", "s", "u", "n</w>", "su", "sun</w>"]:
        vocab.setdefault(tok, len(vocab))
    merges = [tuple(m.split()) for m in ["r e", "re d</w>", "c a", "ca t</w>", "d o", "do g</w>", "s u", "su n</w>"]]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=12)
    tokenizer.save_pretrained(path / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=12,
                                 bos_token_id=0, eos_token_id=1, pad_token_id=1)).save_pretrained(path / "text_encoder")
    PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True,
                  steps_offset=1).save_pretrained(path / "scheduler")
    (path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))


def test_from_base_on_a_stock_sd_directory(tmp_path):
    sd = tmp_path / "sd"
    _write_tiny_sd_dir(sd)
    pipe = SuTIPipeline.from_base(sd)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.tokenizer, CLIPTokenizer) and pipe.vae is not None and pipe.image_size == 16
    assert set(pipe.subject.gates().values()) == {0.0}  # fresh, zero-gated
    assert pipe.subject.blocks == ("down.0", "mid", "up.1")  # lowest-res cross-attention blocks of this layout
    demos = demo_images(3)
    out = run(pipe, "a red cat", demos, subject_captions=["a red cat", "a cat", "red"])
    assert out.shape == (1, 16, 16, 3) and np.isfinite(out).all()
    np.testing.assert_allclose(out, run(pipe, "a red cat", None), atol=1e-5, rtol=0)  # zero gate = the base

    pipe.subject.set_gates(0.5)
    with_gate = run(pipe, "a red cat", demos)
    pipe.save_pretrained(tmp_path / "suti")
    loaded = SuTIPipeline.from_pretrained(tmp_path / "suti")
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(run(loaded, "a red cat", demos), with_gate)
    # the base weights in the new directory equal the stock ones
    a = load_file(str(sd / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "suti" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_detach_and_attach_subject_layers():
    pipe = tiny_pipe()
    original = {k: type(p).__name__ for k, p in build_base(tiny_config()).unet.attn_processors.items()}
    assert pipe.to("cpu") is pipe and pipe.subject.demo_encoder.level_emb.device.type == "cpu"
    with_demos = run(pipe, "a red circle", demo_images(3))
    layers = pipe.detach_subject()
    assert {k: type(p).__name__ for k, p in pipe.unet.attn_processors.items()} == original
    assert not any("processor" in k for k in pipe.unet.state_dict())
    pipe.attach_subject(layers)
    assert np.array_equal(run(pipe, "a red circle", demo_images(3)), with_demos)
