import pickle
from dataclasses import dataclass, field, fields

import pytest

from raymotion.config import (
    BodyConfig,
    Config,
    ConfigError,
    RenderConfig,
    RunConfig,
    apply_overrides,
    SynthConfig,
    config_keys,
    describe,
    from_dict,
    load_config,
    parse_set_args,
    save_config,
    to_dict,
)


@dataclass(kw_only=True, slots=True)
class Toy:
    """A section with the field types the real tree does not use yet, to test coercion."""

    sizes: tuple[int, ...] = field(default=(1, 2), metadata={"help": "sizes", "range": None})
    pair: tuple[float, float] = field(default=(0.0, 1.0), metadata={"help": "pair", "range": None})
    flag: bool = field(default=False, metadata={"help": "flag", "range": None})
    lr: float = field(default=1e-3, metadata={"help": "lr", "range": (0.0, None)})
    tag: str | None = field(default=None, metadata={"help": "tag", "range": None})


def test_defaults():
    cfg = Config()
    assert cfg.body == BodyConfig(model="anny_lowres", smpl_dir="body_models/smpl", gender="neutral",
                                  h36m_regressor="../J_regressor_h36m.npy", num_betas=10)
    assert cfg.run == RunConfig(output_dir="runs", name="embedded-default", seed=0, device="auto")
    assert cfg.render == RenderConfig(image_size=512, motion="walk", phase=0.25, output="raymotion_body.png")


def test_the_defaults_are_the_main_jobs_recipe_the_shipped_base_model_was_pretrained_with():
    from raymotion.train.launch import shipped_base_model

    cfg = Config()
    assert (cfg.data.crop_size, cfg.train.fraction, cfg.train.video_gap, cfg.loss.flow_weight,
            cfg.train.refine_steps) == (64, 0.05, 3, 0.3, 600)
    assert shipped_base_model(cfg).name == "small_cnn64_f05.pt"


def test_every_field_has_help_text():
    for section in (Config, BodyConfig, RunConfig, RenderConfig, SynthConfig):
        for f in fields(section):
            assert f.metadata["help"].strip(), f"{section.__name__}.{f.name} has no help text"


def test_config_keys_and_describe():
    assert config_keys()[:13] == [
        "body.model", "body.smpl_dir", "body.gender", "body.h36m_regressor", "body.num_betas",
        "run.output_dir", "run.name", "run.seed", "run.device",
        "render.image_size", "render.motion", "render.phase", "render.output",
    ]
    assert "synth.image_size" in config_keys()
    text = describe()
    assert "body.num_betas: int = 10  (range [1, 300])\n    Number of shape coefficients (betas)." in text
    assert "body.gender: 'neutral' | 'male' | 'female' = 'neutral'\n" in text
    assert "run.seed: int = 0  (range >= 0)" in text


def test_to_dict_from_dict_round_trip():
    cfg = apply_overrides(Config(), {"body.model": "smpl", "body.gender": "female", "run.seed": 7})
    d = to_dict(cfg)
    assert d["body"] == {"model": "smpl", "smpl_dir": "body_models/smpl", "gender": "female",
                         "h36m_regressor": "../J_regressor_h36m.npy", "num_betas": 10}
    assert Config.from_dict(d) == cfg
    assert from_dict(Config, d) == cfg
    assert to_dict(Config.from_dict(d)) == d


def test_to_dict_makes_lists_and_round_trips_tuples():
    toy = Toy(sizes=(3, 4, 5))
    assert to_dict(toy) == {"sizes": [3, 4, 5], "pair": [0.0, 1.0], "flag": False, "lr": 1e-3, "tag": None}
    assert from_dict(Toy, to_dict(toy)) == toy


def test_from_dict_partial_keeps_defaults():
    assert Config.from_dict({"run": {"seed": 3}}) == Config(run=RunConfig(seed=3))


def test_config_error_pickles():
    err = pickle.loads(pickle.dumps(ConfigError("body.gender", "x", "expected one of: a, b")))
    assert str(err) == ("body.gender='x' is invalid: expected one of: a, b. "
                        "Fix it in the config file or with --set body.gender=<value>.")


def test_yaml_nested_and_dotted(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("body:\n  model: smpl\n  gender: male\nrun.seed: 5\nrender.phase: 1e-4\n")
    cfg = load_config(path)
    assert (cfg.body.model, cfg.body.gender, cfg.run.seed, cfg.render.phase) == ("smpl", "male", 5, 1e-4)


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_set_overrides_coerce_strings(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("run:\n  seed: 5\n")
    cfg = load_config(path, ["run.seed=9", "render.phase=1e-4", "body.num_betas=16", "render.motion=tpose"])
    assert (cfg.run.seed, cfg.render.phase, cfg.body.num_betas, cfg.render.motion) == (9, 1e-4, 16, "tpose")
    assert isinstance(cfg.render.phase, float)


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"flag": "true", "sizes": "[3,4]"}, Toy(flag=True, sizes=(3, 4), tag="x")),
    ({"flag": "0", "sizes": "5, 6, 7"}, Toy(flag=False, sizes=(5, 6, 7), tag="x")),
    ({"flag": "1", "pair": "(2, 3.5)"}, Toy(flag=True, pair=(2.0, 3.5), tag="x")),
    ({"sizes": "[]"}, Toy(sizes=(), tag="x")),
    ({"sizes": [8, "9"]}, Toy(sizes=(8, 9), tag="x")),
    ({"lr": "1e-4", "tag": "none"}, Toy(lr=1e-4, tag=None)),
    ({"tag": "null"}, Toy(tag=None)),
    ({"tag": "abc"}, Toy(tag="abc")),
])
def test_coercion_of_bool_list_float_optional(overrides, expected):
    assert apply_overrides(Toy(tag="x"), overrides) == expected


def test_parse_set_args():
    assert parse_set_args(["body.gender=male", "run.name=a=b", " run.seed = 2 "]) == {
        "body.gender": "male", "run.name": "a=b", "run.seed": "2"}
    with pytest.raises(ValueError, match=r"--set expects KEY=VALUE \(e.g. --set body.gender=male\), "
                                         r"got 'body.gender'"):
        parse_set_args(["body.gender"])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError) as exc:
        apply_overrides(Config(), {"body.gendr": "male"})
    assert str(exc.value) == ("unknown key 'body.gendr'; valid keys under 'body': gender, h36m_regressor, "
                              "model, num_betas, smpl_dir. Did you mean 'body.gender'?")
    with pytest.raises(ValueError, match=r"unknown key 'bdy'; valid keys at the top level: body, data, eval, flow, importer, loss, model, predict, render, run, scaling, synth, train\."):
        Config.from_dict({"bdy": {}})
    with pytest.raises(ValueError, match=r"unknown key 'run.colour'; valid keys under 'run': device, name, "
                                         r"output_dir, seed\.\nfrom --set run.colour=red$"):
        load_config(overrides=["run.colour=red"])


def test_section_and_value_confusion():
    with pytest.raises(ValueError, match=r"'body' is a section, not a value; set one of its keys: body.model,"):
        apply_overrides(Config(), {"body": "smpl"})
    with pytest.raises(ValueError, match=r"cannot set 'run.name.x': 'run.name' is a value, not a section"):
        apply_overrides(Config(), {"run.name.x": "1"})


def test_bad_choice_names_key_value_and_choices():
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=["body.gender=mle"])
    assert str(exc.value) == ("body.gender='mle' is invalid: expected one of: neutral, male, female "
                              "(did you mean 'male'?). Fix it in the config file or with --set body.gender=<value>.")
    assert exc.value.key == "body.gender"


def test_out_of_range_names_key_and_range():
    with pytest.raises(ConfigError) as exc:
        apply_overrides(Config(), {"body.num_betas": "0"})
    assert str(exc.value) == ("body.num_betas=0 is invalid: expected a value in range [1, 300]. "
                              "Fix it in the config file or with --set body.num_betas=<value>.")
    with pytest.raises(ConfigError, match=r"^run.seed=-1 is invalid: expected a value in range >= 0\."):
        apply_overrides(Config(), {"run.seed": -1})
    with pytest.raises(ConfigError, match=r"^render.phase=1.5 is invalid: expected a value in range \[0.0, 1.0\]"):
        apply_overrides(Config(), {"render.phase": "1.5"})


def test_bad_run_name():
    with pytest.raises(ConfigError, match=r"^run.name='../x' is invalid: expected a filesystem-safe name"):
        apply_overrides(Config(), {"run.name": "../x"})


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ConfigError, match=r"^render.image_size='big' is invalid: expected int\. "
                                          r"Fix it in the config file or with --set render.image_size=<value>\.$"):
        apply_overrides(Config(), {"render.image_size": "big"})
    with pytest.raises(ConfigError, match=r"^run.seed=1.5 is invalid: expected int\."):
        Config.from_dict({"run": {"seed": 1.5}})
    with pytest.raises(ConfigError, match=r"^run.name=2024 is invalid: expected str; quote it in YAML\."):
        Config.from_dict({"run": {"name": 2024}})
    with pytest.raises(ConfigError, match=r"^flag='maybe' is invalid: expected a bool: true/false/1/0\."):
        apply_overrides(Toy(), {"flag": "maybe"})
    with pytest.raises(ConfigError, match=r"^pair=\['1'\] is invalid: expected tuple\[float, float\]\."):
        apply_overrides(Toy(), {"pair": "1"})


def test_direct_construction_validates_types():
    with pytest.raises(ConfigError, match=r"^num_betas='10' is invalid: expected int\."):
        BodyConfig(num_betas="10")  # type: ignore[arg-type]


def test_gender_without_smpl_warns():
    with pytest.warns(UserWarning, match=r"body.gender='male' is ignored because body.model='anny_lowres'"):
        apply_overrides(Config(), {"body.gender": "male"})


def test_missing_yaml_file_names_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=f"config file not found: {path}"):
        load_config(path)


def test_invalid_or_non_mapping_yaml_names_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("body: [unclosed\n")
    with pytest.raises(ValueError, match=f"invalid YAML in config file {bad}"):
        load_config(bad)
    seq = tmp_path / "seq.yaml"
    seq.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=f"config file {seq} must hold a mapping of keys .*got a list"):
        load_config(seq)


def test_error_from_yaml_file_notes_the_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("body:\n  gender: robot\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.__notes__ == [f"while loading config file {path}"]


def test_save_load_round_trip(tmp_path):
    cfg = load_config(overrides={"body.model": "smpl", "body.gender": "female", "render.phase": 1e-7,
                                 "run.name": "exp-1.a"})
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left behind


def test_apply_overrides_does_not_mutate_input():
    cfg = Config()
    before = to_dict(cfg)
    new = apply_overrides(cfg, {"run.seed": "3", "body.num_betas": 20})
    assert (new.run.seed, new.body.num_betas) == (3, 20)
    assert to_dict(cfg) == before
    assert new.body is not cfg.body


def test_a_bad_set_item_is_blamed_on_the_set_item_not_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("run:\n  seed: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["body.gender=robot"])
    assert info.value.__notes__ == ["from --set body.gender=robot"]
    with pytest.raises(ValueError, match="unknown key 'body.gendr'") as info:
        load_config(path, ["body.gendr=male"])
    assert info.value.__notes__ == ["from --set body.gendr=male"]
    path.write_text("body:\n  gender: robot\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["run.seed=1"])
    assert info.value.__notes__ == [f"while loading config file {path}"]


def test_smpl_without_mean_params_warns_once():
    from raymotion.train import components

    components._warn_default_mean_params.cache_clear()
    cfg = load_config(overrides={"body.model": "smpl"})
    with pytest.warns(UserWarning, match="body.model=smpl and model.mean_params is empty") as record:
        components.mean_params_for(cfg)
        components.mean_params_for(cfg)
    assert len([w for w in record if "mean_params" in str(w.message)]) == 1


def test_check_values_applies_the_config_rules_to_plain_arguments():
    from raymotion.config import UnknownKeyError, check_values

    check_values({"data.crop_size": 32, "data.bbox_scale": 3.0, "flow.estimator": "farneback"})  # the limits pass
    with pytest.raises(ConfigError, match=r"data.crop_size=31 is invalid: expected a value in range \[32, 1024\]"):
        check_values({"data.crop_size": 31})
    with pytest.raises(ConfigError, match=r"data.bbox_scale=0.5 is invalid: expected a value in range \[1.0, 3.0\]"):
        check_values({"data.bbox_scale": 0.5})
    with pytest.raises(ConfigError, match="flow.estimator='pwc' is invalid: expected one of: dis, farneback"):
        check_values({"flow.estimator": "pwc"})
    with pytest.raises(UnknownKeyError, match="unknown key 'data.crop'.*Did you mean 'data.crop_size'"):
        check_values({"data.crop": 64})


def test_a_moved_key_in_a_file_or_set_is_refused_naming_its_new_key(tmp_path):
    from raymotion.config import MovedKeyError

    with pytest.raises(MovedKeyError, match=r"^scaling\.video_source is now data\.video_source: write "
                                            r"data\.video_source: local in the config file, or --set "
                                            r"data\.video_source=local") as info:
        load_config(overrides=["scaling.video_source=local"])
    assert info.value.__notes__ == ["from --set scaling.video_source=local"]
    path = tmp_path / "old.yaml"
    path.write_text("scaling:\n  pair_store: /nfs/pairs\n")
    with pytest.raises(ConfigError, match=r"scaling\.pair_store is now data\.pair_store") as info:
        load_config(path)
    assert info.value.__notes__ == [f"while loading config file {path}"]
    assert pickle.loads(pickle.dumps(info.value)).new_key == "data.pair_store"  # Ray moves exceptions


def test_a_stored_config_of_an_older_raymotion_loads_with_its_moved_keys_in_place():
    old = to_dict(Config())
    old["scaling"].update({"video_source": "local", "pair_store": "/nfs/pairs", "flow_actors": 3})
    for key in ("video_source", "pair_store", "flow_actors"):
        del old["data"][key]
    cfg = Config.from_dict(old)
    assert (cfg.data.video_source, cfg.data.pair_store, cfg.data.flow_actors) == ("local", "/nfs/pairs", 3)
