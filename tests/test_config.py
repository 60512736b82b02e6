from __future__ import annotations

from pathlib import Path

import pytest

from innerloop.config import Config, config_from_dict, load_config
from innerloop.errors import ConfigError

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_defaults_are_valid():
    assert isinstance(config_from_dict({}), Config)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(recipe):
    if recipe.parent.name == "rl":
        from innerloop.rl.config import load_rl_config

        config = load_rl_config(recipe)
        with pytest.raises(ConfigError, match="meta-RL recipe"):
            load_config(recipe)
    elif recipe.parent.name == "bilevel":
        from innerloop.bilevel.recipe import load_recipe

        config = load_recipe(recipe)
        with pytest.raises(ConfigError, match="hyperparameter-learning recipe"):
            load_config(recipe)
    else:
        config = load_config(recipe)
    assert config.name in recipe.read_text()


def test_there_are_the_four_omniglot_protonet_recipes():
    names = {p.name for p in RECIPES}
    assert {f"protonet-{w}w{s}s.yaml" for w in (5, 20) for s in (1, 5)} <= names


def test_unknown_key_names_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'train\.stepz'; keys allowed at 'train': steps, "):
        config_from_dict({"train": {"stepz": 3}})
    with pytest.raises(ConfigError, match="unknown key 'optimiser'; keys allowed at the top level"):
        config_from_dict({"optimiser": {}})


def test_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match=r"train\.steps: expected int, got 'many'"):
        config_from_dict({"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"train\.steps: expected int, got 1.5"):
        config_from_dict({"train": {"steps": 1.5}})
    with pytest.raises(ConfigError, match=r"data\.rotations\[1\]: expected int"):
        config_from_dict({"data": {"rotations": [0, "ninety"]}})


def test_floats_accept_integers_and_optional_accepts_null():
    config = config_from_dict({"optim": {"lr": 1, "grad_clip": None}})
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.optim.grad_clip is None


def test_unknown_names_list_the_choices():
    with pytest.raises(ConfigError, match="model.algorithm: 'mamal' is not one of protonet"):
        config_from_dict({"model": {"algorithm": "mamal"}})
    with pytest.raises(ConfigError, match="data.test_split: 'tset' is not one of train, val"):
        config_from_dict({"data": {"test_split": "tset"}})


def test_impossible_episode_shapes_are_rejected_before_any_work():
    with pytest.raises(ConfigError, match=r"eval.ways/shots/queries: 500-way episodes need 500 classes "
                                          r"but split 'val' has 400"):
        config_from_dict({"eval": {"ways": 500}})
    with pytest.raises(ConfigError, match=r"train.ways/shots/queries: shots \+ queries = 5 \+ 16 = 21"):
        config_from_dict({"train": {"shots": 5, "queries": 16}})
    with pytest.raises(ConfigError, match="optim.lr must be > 0"):
        config_from_dict({"optim": {"lr": 0}})
    with pytest.raises(ConfigError, match="data.rotations must be a non-empty list of multiples of 90"):
        config_from_dict({"data": {"rotations": [0, 45]}})


def test_overrides_are_parsed_as_yaml_values():
    config = config_from_dict({}, ["train.steps=7", "optim.lr=0.01", "data.rotations=[0]",
                                   "optim.grad_clip=null", "name=quick"])
    assert (config.train.steps, config.optim.lr, config.data.rotations) == (7, 0.01, [0])
    assert config.optim.grad_clip is None and config.name == "quick"
    with pytest.raises(ConfigError, match="--set expects key=value"):
        config_from_dict({}, ["train.steps"])


def test_missing_and_malformed_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_yaml_quirks_and_bad_override_values_are_config_errors():
    assert config_from_dict({"optim": {"lr": "1e-3"}}).optim.lr == 1e-3  # YAML 1.1 reads 1e-3 as text
    with pytest.raises(ConfigError, match=r"optim.lr: expected float, got 'fast'"):
        config_from_dict({"optim": {"lr": "fast"}})
    for bad in ("nan", "inf", float("nan"), float("-inf")):
        with pytest.raises(ConfigError, match="optim.grad_clip: expected a finite number"):
            config_from_dict({"optim": {"grad_clip": bad}})
    with pytest.raises(ConfigError, match=r"--set data.rotations: '\[0, 90' is not a valid YAML value"):
        config_from_dict({}, ["data.rotations=[0, 90"])


def test_episodes_without_queries_and_oversized_images_are_rejected():
    with pytest.raises(ConfigError, match="train.queries must be >= 1, got 0"):
        config_from_dict({"train": {"queries": 0}})
    with pytest.raises(ConfigError, match="data.image_size must be <= 105 for omniglot"):
        config_from_dict({"data": {"image_size": 128}})


def test_text_datasets_take_mlp_backbones_and_no_rotations():
    text = {"data": {"dataset": "banking77", "rotations": [0]}, "model": {"backbone": "mlp"},
            "train": {"ways": 5, "shots": 1, "queries": 15}}
    config = config_from_dict(text)
    assert config.data.dataset == "banking77"
    with pytest.raises(ConfigError, match=r"data.rotations must be \[0\] for banking77"):
        config_from_dict({**text, "data": {"dataset": "banking77"}})
    with pytest.raises(ConfigError, match="banking77 holds 384-d sentence embeddings; use mlp or residual-mlp"):
        config_from_dict({**text, "model": {"backbone": "conv4"}})
    with pytest.raises(ConfigError, match="16-way episodes need 16 classes but split 'val' has 15"):
        config_from_dict({**text, "eval": {"ways": 16}})
    cross_domain = config_from_dict({**text, "data": {"dataset": "clinc150-cross-domain", "rotations": [0]}})
    assert cross_domain.data.dataset == "clinc150-cross-domain"
