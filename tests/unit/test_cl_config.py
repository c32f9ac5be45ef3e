"""Parsing and validation of the data_efficiency / legacy curriculum_learning DeepSpeed JSON blocks."""
import copy

import pytest

from megatron.data_efficiency.config import (DataEfficiencyConfigError, parse_data_efficiency_config,
                                             parse_deepspeed_config, parse_legacy_curriculum_config,
                                             strip_data_efficiency_blocks)
from megatron.data_efficiency.random_ltd_config import RandomLTDConfig

CL = "data_efficiency.data_sampling.curriculum_learning"
# An enabled curriculum's analyzed metrics must name analyzer files that exist: relative prefixes, created (empty:
# only their existence is checked at parse time) in each test's own directory by the autouse fixture below.
VOC_SAMPLES = "vocab_rarity/vocab_rarity_index_to_sample_percentile_merged"
VOC_METRIC = "vocab_rarity/vocab_rarity_index_to_metric"


@pytest.fixture(autouse=True)
def analyzer_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vocab_rarity").mkdir()
    for prefix in (VOC_SAMPLES, VOC_METRIC):
        for ext in (".idx", ".bin"):
            (tmp_path / (prefix + ext)).touch()
    return tmp_path


def metric(**overrides):
    block = {
        "index_to_sample_path": VOC_SAMPLES,
        "index_to_metric_path": VOC_METRIC,
        "difficulty_type": "percentile",
        "clustering_type": "schedule_based",
        "min_difficulty": 1,
        "max_difficulty": 100,
        "schedule_type": "fixed_root",
        "schedule_config": {"total_curriculum_step": 110000, "difficulty_step": 1, "root_degree": 2},
    }
    block.update(overrides)
    return block


def truncate_metric():
    return {"index_to_sample_path": "dummy", "index_to_metric_path": "dummy", "difficulty_type": "value",
            "clustering_type": "single_cluster", "min_difficulty": 80, "max_difficulty": 2048,
            "schedule_type": "fixed_root",
            "schedule_config": {"total_curriculum_step": 110000, "difficulty_step": 8, "root_degree": 1}}


def template():
    """The 2-metric GPT template of the recipes, filled in."""
    return {
        "train_batch_size": 512, "train_micro_batch_size_per_gpu": 4, "dataloader_drop_last": True,
        "data_efficiency": {
            "enabled": True, "seed": 1234,
            "data_routing": {"enabled": True, "random_ltd": {
                "enabled": True, "total_layer_num": 24, "random_ltd_layer_num": 22,
                "random_ltd_layer_id": list(range(1, 23)), "model_mask_name": "attention_mask",
                "model_type": "decoder", "hidden_state_order": "seq_batch_dim",
                "random_ltd_schedule": {"min_value": 128, "max_value": 2048, "schedule_type": "fixed_linear",
                                        "schedule_config": {"require_steps": 200000, "seq_per_step": 16}}}},
            "data_sampling": {"enabled": True, "num_workers": 0, "curriculum_learning": {
                "enabled": True, "data_cluster_path": "/tmp/clusters",
                "curriculum_metrics": {"voc": metric(), "seqlen_truncate": truncate_metric()}}},
        },
    }


def error_of(cfg, source=None):
    with pytest.raises(DataEfficiencyConfigError) as info:
        parse_deepspeed_config(cfg, source)
    return str(info.value)


def test_recipe_template_parses():
    settings = parse_deepspeed_config(template(), "ds_config.json")
    de = settings.data_efficiency
    assert de.enabled and de.seed == 1234
    cl = de.data_sampling.curriculum_learning
    assert cl.enabled and cl.data_cluster_path == "/tmp/clusters"
    assert [m.name for m in cl.metrics] == ["voc", "seqlen_truncate"]
    voc, trunc = cl.metrics
    assert voc.difficulty_type == "percentile" and voc.schedule_based
    assert voc.schedule.schedule_type == "fixed_root" and voc.schedule.root_degree == 2.0
    assert voc.schedule.total_curriculum_step == 110000 and voc.schedule.difficulty_step == 1
    assert not trunc.schedule_based and trunc.schedule.min_difficulty == 80 and trunc.schedule.difficulty_step == 8
    assert cl.seqlen_mode == "truncate" and cl.seqlen_metric == "seqlen_truncate"
    ltd = de.data_routing.random_ltd
    assert isinstance(ltd, RandomLTDConfig) and ltd.enabled and ltd.random_ltd_layer_num == 22
    assert not settings.legacy_curriculum.enabled


def test_defaults_of_spec_3_1():
    de = parse_data_efficiency_config({})
    assert (de.enabled, de.seed) == (False, 1234)
    ds = de.data_sampling
    assert (ds.enabled, ds.num_epochs, ds.num_workers, ds.pin_memory) == (False, 1000, 0, False)
    assert not ds.curriculum_learning.enabled and ds.curriculum_learning.metrics == ()
    de2 = parse_data_efficiency_config({"data_efficiency": {"data_sampling": {"curriculum_learning": {
        "enabled": True, "curriculum_metrics": {"seqlen_reshape": truncate_metric()}}}}})
    assert de2.data_sampling.num_epochs == 1000 and de2.seed == 1234
    assert de2.data_sampling.curriculum_learning.data_cluster_path is None
    assert de2.data_sampling.curriculum_learning.seqlen_mode == "reshape"


def test_misspelled_key_names_full_path_and_suggestion():
    cfg = template()
    voc = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"]
    voc["schedule_confg"] = voc.pop("schedule_config")
    assert error_of(cfg, "ds_config.json") == (
        f"ds_config.json: {CL}.curriculum_metrics.voc.schedule_confg: unknown key (did you mean schedule_config?)")


@pytest.mark.parametrize("where, key, hint", [
    (("data_efficiency",), "seeed", "seed"),
    (("data_efficiency", "data_sampling"), "num_epoch", "num_epochs"),
    (("data_efficiency", "data_sampling", "curriculum_learning"), "data_cluster_pth", "data_cluster_path"),
    (("data_efficiency", "data_sampling", "curriculum_learning", "curriculum_metrics", "voc", "schedule_config"),
     "total_step", "total_curriculum_step"),
])
def test_unknown_keys_at_every_level(where, key, hint):
    cfg = template()
    block = cfg
    for part in where:
        block = block[part]
    block[key] = 1
    msg = error_of(cfg)
    assert f"{'.'.join(where)}.{key}: unknown key" in msg and f"did you mean {hint}?" in msg


def test_unknown_key_inside_random_ltd_is_reported_by_its_parser():
    cfg = template()
    cfg["data_efficiency"]["data_routing"]["random_ltd"]["random_ltd_layer_nm"] = 3
    with pytest.raises(ValueError, match=r"data_efficiency\.data_routing\.random_ltd\.random_ltd_layer_nm: unknown"):
        parse_deepspeed_config(cfg)


@pytest.mark.parametrize("field, value, expected", [
    ("min_difficulty", "1", "min_difficulty: expected an integer, got '1'"),
    ("min_difficulty", True, "min_difficulty: expected an integer, got true"),
    ("min_difficulty", 1.5, "min_difficulty: expected an integer, got 1.5"),
    ("difficulty_type", "values", "difficulty_type: expected one of value, percentile, got 'values' (did you mean value?)"),
    ("clustering_type", "single", "clustering_type: expected one of schedule_based, single_cluster"),
    ("schedule_type", "linear", "schedule_type: expected one of fixed_linear, fixed_root, fixed_discrete, custom"),
    ("min_difficulty", 101, "min_difficulty 101 is larger than max_difficulty 100"),
])
def test_bad_metric_values(field, value, expected):
    cfg = template()
    cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"][field] = value
    msg = error_of(cfg)
    assert f"{CL}.curriculum_metrics.voc." in msg and expected in msg


def test_missing_required_keys():
    cfg = template()
    del cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"]["schedule_type"]
    assert error_of(cfg).endswith(f"{CL}.curriculum_metrics.voc.schedule_type: required key is missing")
    cfg = template()
    sc = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"]["schedule_config"]
    del sc["root_degree"]
    assert "voc.schedule_config.root_degree: required key is missing" in error_of(cfg)
    cfg = template()
    del cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    assert error_of(cfg).endswith(f"{CL}.curriculum_metrics: required when curriculum_learning is enabled")
    cfg = template()
    del cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"][
        "index_to_sample_path"]
    assert "voc.index_to_sample_path: required for clustering_type schedule_based" in error_of(cfg)


def test_schedule_config_keys_must_match_the_schedule_type():
    cfg = template()
    voc = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"]
    voc["schedule_type"] = "fixed_linear"  # root_degree 2 would be silently ignored
    assert "voc.schedule_config.root_degree: not used by schedule_type fixed_linear" in error_of(cfg)
    voc["schedule_type"] = "fixed_discrete"
    voc["schedule_config"] = {"difficulty": [1, 50, 100], "max_step": [10]}
    assert "voc.schedule_config.max_step: expected one element fewer than difficulty (2), got 1" in error_of(cfg)
    voc["schedule_config"] = {"difficulty": [1, 50, 100], "max_step": [10, 5]}
    assert "expected strictly increasing steps" in error_of(cfg)
    voc["schedule_config"] = {"difficulty": [1, 50, 100], "max_step": [10, 20]}
    parsed = parse_deepspeed_config(cfg).data_efficiency.data_sampling.curriculum_learning.metrics[0]
    assert parsed.schedule.difficulty == (1, 50, 100) and parsed.schedule.max_step == (10, 20)
    voc["schedule_type"] = "custom"
    voc["schedule_config"] = {}
    assert parse_deepspeed_config(cfg).data_efficiency.data_sampling.curriculum_learning.metrics[0].schedule \
        .schedule_type == "custom"


def test_integral_floats_accepted_and_ranges_checked():
    cfg = template()
    sc = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"]["schedule_config"]
    sc["total_curriculum_step"] = 1.1e5
    parsed = parse_deepspeed_config(cfg).data_efficiency.data_sampling.curriculum_learning.metrics[0]
    assert parsed.schedule.total_curriculum_step == 110000
    sc["difficulty_step"] = 0
    assert "voc.schedule_config.difficulty_step: expected an integer >= 1, got 0" in error_of(cfg)
    cfg = template()
    cfg["data_efficiency"]["data_sampling"]["num_epochs"] = 0
    assert "data_efficiency.data_sampling.num_epochs: expected an integer >= 1, got 0" in error_of(cfg)
    cfg = template()
    cfg["data_efficiency"]["seed"] = -1
    assert "data_efficiency.seed: expected an integer >= 0" in error_of(cfg)
    cfg = template()
    cfg["data_efficiency"]["enabled"] = "true"
    assert "data_efficiency.enabled: expected true or false, got 'true'" in error_of(cfg)


def test_seqlen_metric_rules():
    cfg = template()
    metrics = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    metrics["seqlen_truncate"]["difficulty_type"] = "percentile"
    assert "seqlen_truncate.difficulty_type: metric seqlen_truncate is a sequence length" in error_of(cfg)
    cfg = template()
    metrics = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    metrics["seqlen_reshape"] = truncate_metric()
    assert "at most one of seqlen_truncate / seqlen_reshape" in error_of(cfg)


def test_dynamic_batching_enabled_is_a_clear_error():
    cfg = template()
    cfg["data_efficiency"]["data_sampling"]["dynamic_batching"] = {"enabled": True, "max_tokens": 100}
    assert "data_sampling.dynamic_batching.enabled: dynamic_batching is not supported" in error_of(cfg)
    cfg["data_efficiency"]["data_sampling"]["dynamic_batching"] = {"enabled": False, "max_tokens": 100}
    parse_deepspeed_config(cfg)


def test_legacy_block():
    legacy = {"curriculum_learning": {"enabled": True, "curriculum_type": "seqlen", "min_difficulty": 8,
                                      "max_difficulty": 1024, "schedule_type": "fixed_linear",
                                      "schedule_config": {"total_curriculum_step": 40000, "difficulty_step": 8}}}
    cfg = parse_legacy_curriculum_config(legacy)
    assert cfg.enabled and cfg.curriculum_type == "seqlen"
    assert (cfg.schedule.min_difficulty, cfg.schedule.max_difficulty, cfg.schedule.total_curriculum_step) == (
        8, 1024, 40000)
    assert not parse_legacy_curriculum_config({"curriculum_learning": {"enabled": False}}).enabled
    bad = copy.deepcopy(legacy)
    bad["curriculum_learning"]["curriculum_type"] = "vocab"
    assert "curriculum_learning.curriculum_type: only 'seqlen' is supported" in error_of(bad)
    bad = copy.deepcopy(legacy)
    bad["curriculum_learning"]["max_dificulty"] = 5
    assert "curriculum_learning.max_dificulty: unknown key (did you mean max_difficulty?)" in error_of(bad)
    both = template()
    both.update(legacy)
    assert "enable only one" in error_of(both)


def test_strip_blocks_before_deepspeed_initialize():
    cfg = template()
    cfg["curriculum_learning"] = {"enabled": False}
    stripped = strip_data_efficiency_blocks(cfg)
    assert "data_efficiency" not in stripped and "curriculum_learning" not in stripped
    assert stripped["train_batch_size"] == 512 and "data_efficiency" in cfg


def test_not_an_object():
    assert "data_efficiency: expected a JSON object, got a list" in error_of({"data_efficiency": []})


def seqlen_only(name, **overrides):
    block = truncate_metric()
    block.update(overrides)
    return {"data_efficiency": {"data_sampling": {"curriculum_learning": {
        "enabled": True, "curriculum_metrics": {name: block}}}}}


def test_misspelled_seqlen_metric_with_dummy_paths_is_one_error_with_suggestion():
    msg = error_of(seqlen_only("seqlen_trunc"), "ds_config.json")
    assert msg.startswith(f"ds_config.json: {CL}.curriculum_metrics.seqlen_trunc: curriculum metric 'seqlen_trunc' "
                          "(did you mean seqlen_truncate?) is neither seqlen_truncate nor seqlen_reshape")
    assert "index_to_sample_path 'dummy' is not an analyzer output (dummy.idx not found)" in msg
    assert "(did you mean seqlen_reshape?)" in error_of(seqlen_only("seqlen_reshap"))
    # a free name with no close match: the same error, without a suggestion
    msg = error_of(seqlen_only("rarity"))
    assert "curriculum metric 'rarity' is neither" in msg and "did you mean" not in msg
    # the two seqlen metrics still take dummy paths
    for name in ("seqlen_truncate", "seqlen_reshape"):
        parse_deepspeed_config(seqlen_only(name), seq_length=2048)
    # a disabled block is validated, but its index files are not required
    cfg = seqlen_only("seqlen_trunc")
    cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["enabled"] = False
    parse_deepspeed_config(cfg)
    # tools that only read the schedules may skip the file check
    parse_deepspeed_config(seqlen_only("seqlen_trunc"), check_index_files=False)


def test_analyzed_metric_needs_existing_index_files(analyzer_files):
    cfg = template()
    metrics = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    metrics["voc"]["index_to_sample_path"] = "vocab_rarity/vocab_rarity_index_to_sample"  # unmerged: not written
    msg = error_of(cfg)
    assert f"{CL}.curriculum_metrics.voc: curriculum metric 'voc' is neither" in msg
    assert "vocab_rarity/vocab_rarity_index_to_sample.idx not found" in msg and "did you mean" not in msg
    # value mode also reads index_to_metric_path: its .bin must exist too
    cfg = template()
    metrics = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    metrics["voc"].update(difficulty_type="value", min_difficulty=1, max_difficulty=10)
    (analyzer_files / (VOC_METRIC + ".bin")).unlink()
    assert f"index_to_metric_path '{VOC_METRIC}' is not an analyzer output ({VOC_METRIC}.bin not found)" \
        in error_of(cfg)
    # percentile mode does not read index_to_metric_path
    cfg = template()
    parse_deepspeed_config(cfg)
    # a single_cluster analyzed metric without paths is refused too (it would do nothing)
    cfg = seqlen_only("voc", clustering_type="single_cluster")
    del cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"][
        "index_to_sample_path"]
    assert "but index_to_sample_path is not given" in error_of(cfg)


def test_seqlen_max_difficulty_above_seq_length_is_an_error():
    with pytest.raises(DataEfficiencyConfigError) as info:
        parse_deepspeed_config(seqlen_only("seqlen_truncate", max_difficulty=4096), "ds.json", seq_length=2048)
    assert str(info.value) == (f"ds.json: {CL}.curriculum_metrics.seqlen_truncate.max_difficulty: is 4096 but "
                               "--seq-length is 2048; expected max_difficulty <= seq_length")
    with pytest.raises(DataEfficiencyConfigError, match="seqlen_reshape.max_difficulty: is 2049 but --seq-length"):
        parse_deepspeed_config(seqlen_only("seqlen_reshape", max_difficulty=2049), seq_length=2048)
    parse_deepspeed_config(seqlen_only("seqlen_truncate", max_difficulty=2048), seq_length=2048)  # equal: fine
    parse_deepspeed_config(seqlen_only("seqlen_truncate", max_difficulty=4096))  # no --seq-length: not checked
