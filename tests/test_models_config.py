"""SuTIConfig: presets, JSON round-trip, validation errors that name the field."""

import dataclasses
import json

import pytest
import torch

from configs import load_preset, preset_names
from suti.errors import ConfigError
from suti.models.base import build_base, build_unet, build_vae
from suti.models.config import SubjectConfig, SuTIConfig, TextConfig, UNetConfig
from suti.models.subject_layers import SubjectLayers


def test_presets_exist_and_round_trip(tmp_path):
    assert {"tiny", "world", "sd15"} <= set(preset_names())
    for name in ("tiny", "world", "sd15"):
        cfg = load_preset(name)
        assert cfg.name == name
        assert SuTIConfig.from_json(cfg.to_json()) == cfg
        assert SuTIConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        path = tmp_path / f"{name}.json"
        cfg.to_json(path)
        assert load_preset(str(path)) == cfg  # a path works as well as a name


def test_tiny_preset_is_tiny_and_fast():
    cfg = load_preset("tiny")
    assert cfg.vae is None and cfg.unet.sample_size in (16, 32) and cfg.image_size == cfg.unet.sample_size
    assert cfg.unet.block_out_channels == (32, 64) and cfg.unet.layers_per_block == 1
    assert cfg.unet.cross_attention_dim == 32 and cfg.text.hidden_size == 32 and cfg.text.num_layers == 2
    base = build_base(cfg)
    x = torch.randn(2, 3, cfg.unet.sample_size, cfg.unet.sample_size)
    with torch.no_grad():
        text = base.text_encoder(torch.zeros(2, cfg.text.max_length, dtype=torch.long))[0]
        assert base.unet(x, 10, encoder_hidden_states=text).sample.shape == x.shape


def test_world_preset_layout():
    cfg = load_preset("world")
    assert cfg.vae is None and cfg.image_size == 32
    assert cfg.unet.block_out_channels == (64, 128, 128)
    assert set(cfg.unet.down_block_types) == {"CrossAttnDownBlock2D"}
    assert cfg.unet.cross_attention_dim == 128 and cfg.text.hidden_size == 128 and cfg.text.num_layers == 4
    assert cfg.text.vocab == "world" and 16 <= cfg.text.max_length <= 32
    assert cfg.scheduler.beta_schedule == "squaredcos_cap_v2"
    assert cfg.scheduler.prediction_type == "v_prediction"


def test_world_preset_builds_with_world_vocabulary():
    from suti.world import vocabulary

    base = build_base(load_preset("world"))
    assert len(base.tokenizer) == len(set(vocabulary())) + 4
    ids = base.tokenizer(" ".join(vocabulary()[:10])).input_ids
    assert base.tokenizer.unk_token_id not in ids
    assert 5e6 < sum(p.numel() for p in base.unet.parameters()) < 10e6


def test_sd15_preset_is_the_stock_layout_and_never_built_randomly():
    cfg = load_preset("sd15")
    assert cfg.init == "pretrained" and cfg.unet.in_channels == 4 and cfg.image_size == 512
    assert cfg.unet.block_out_channels == (320, 640, 1280, 1280) and cfg.unet.cross_attention_dim == 768
    with pytest.raises(ConfigError, match="from_base"):
        build_base(cfg)
    with torch.device("meta"):  # layout check without allocating 3.4 GB
        unet, vae = build_unet(cfg.unet), build_vae(cfg.vae, cfg.image_size)
        layers = SubjectLayers(unet, cfg.subject)
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD-1.5 UNet
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # SD VAE
    assert layers.blocks == ("down.2", "mid", "up.1") and len(layers.paths) == 6  # the 8x8/16x16 latent blocks


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"unet": {"block_out_channels": []}}, "unet.block_out_channels"),
        ({"unet": {"sample_size": "16"}}, "unet.sample_size"),
        ({"unet": {"down_block_types": ["CrossAttnDownBlock2D"]}}, "unet.down_block_types"),
        ({"unet": {"norm_num_groups": 7}}, "unet.norm_num_groups"),
        ({"text": {"hidden_size": 64, "num_heads": 2}}, "text.hidden_size"),
        ({"text": {"vocab": ["two words"]}}, "text.vocab"),
        ({"scheduler": {"prediction_type": "x0"}}, "scheduler.prediction_type"),
        ({"scheduler": {"beta_schedule": "cosine"}}, "scheduler.beta_schedule"),
        ({"subject": {"levels": ["down.7"]}}, "subject.levels"),
        ({"subject": {"levels": ["up.0"]}}, "subject.levels"),
        ({"subject": {"max_demos": 9}}, "subject.max_demos"),
        ({"subject": {"attn_blocks": ["side.1"]}}, "subject.attn_blocks"),
        ({"subject": {"colour": 1}}, "subject.colour"),
        ({"init": "magic"}, "init"),
        ({"vae": {"latent_channels": 4}}, "unet.in_channels"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(patch, field):
    data = load_preset("tiny").to_dict()
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k].update(v)
        else:
            data[k] = v
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        SuTIConfig.from_dict(data)


def test_bad_json_and_unknown_preset():
    with pytest.raises(ConfigError, match="JSON"):
        SuTIConfig.from_json("{not json")
    with pytest.raises(ConfigError, match="preset"):
        load_preset("no-such-preset")


def test_dataclasses_validate_directly():
    with pytest.raises(ConfigError, match="text.max_length"):
        TextConfig(max_length=2).validate()
    with pytest.raises(ConfigError, match="unet.sample_size"):
        UNetConfig(sample_size=15).validate()
    cfg = load_preset("tiny")
    with pytest.raises(ConfigError, match="text.hidden_size"):
        dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, hidden_size=64))
    assert SubjectConfig().levels == ("mid",)
