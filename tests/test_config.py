"""Settings: config.py < environment < flags, validated with messages naming the setting."""
import hashlib
import json

import pytest

import config


def test_precedence_file_env_flags():
    assert config.load({}, environ={}).max_cpus == config.MAX_CPUS
    assert config.load({}, environ={"MAX_CPUS": "3"}).max_cpus == 3
    assert config.load({"MAX_CPUS": 5}, environ={"MAX_CPUS": "3"}).max_cpus == 5


def test_output_hash_ignores_runner_settings():
    a = config.load({"MAX_CPUS": 1, "RUNNER": "serial"}, environ={})
    b = config.load({"MAX_CPUS": 8, "WORKER_MEMORY_GB": 9}, environ={})
    assert a.output_hash() == b.output_hash()
    assert a.output_hash() != config.load({"ZSTD_LEVEL": 9}, environ={}).output_hash()


@pytest.mark.parametrize("env,match", [
    ({"MAX_CPUS": "two"}, "environment variable MAX_CPUS: expected int, got 'two'"),
    ({"MAX_CPUS": "0"}, "MAX_CPUS must be > 0"),
    ({"DROP_RULES": "duplicate,nope"}, r"DROP_RULES: unknown rule\(s\) \['nope'\]"),
    ({"WINDOW_EXCLUDE": "range,outliers"},
     r"WINDOW_EXCLUDE: unknown rule\(s\) \['outliers'\] in 'range,outliers'; known: range, "),
    ({"OUTLIER_METHOD": "zscore"}, "OUTLIER_METHOD must be 'iqr', 'mad' or 'none'"),
    ({"TRAJECTORY_VERSION": "../x"}, "TRAJECTORY_VERSION must be a plain directory name"),
    ({"CLIP_TO_RANGE": "maybe"}, "CLIP_TO_RANGE: expected bool"),
    ({"LAYOUT": "zip"}, "LAYOUT must be 'files' or 'shards'"),
])
def test_bad_values_are_named(env, match):
    with pytest.raises(ValueError, match=match):
        config.load({}, environ=env)


def test_window_exclude_parsed_hashed_and_a_flag():
    """Default range+duplicate; rule order and repeats do not matter (one hash); 'none' keeps
    every event; the setting is part of the output hash, round-trips through the SLURM JSON,
    and is a build flag whose bad rule is an error naming it."""
    import build_patient_files

    default = config.load({}, environ={})
    assert default.window_exclude == ("range", "duplicate")
    same = config.load({}, environ={"WINDOW_EXCLUDE": " duplicate, range,range "})
    assert same.window_exclude == default.window_exclude
    assert same.output_hash() == default.output_hash()
    old = config.load({"WINDOW_EXCLUDE": "range,duplicate,outlier"}, environ={})
    assert old.window_exclude == ("range", "outlier", "duplicate")
    assert old.output_hash() != default.output_hash()
    assert config.load({"WINDOW_EXCLUDE": "none"}, environ={}).window_exclude == ()
    assert config.from_json(old.to_json()) == old
    assert build_patient_files.SETTINGS["--window-exclude"][0] == "WINDOW_EXCLUDE"
    with pytest.raises(ValueError, match=r"WINDOW_EXCLUDE: unknown rule\(s\) \['iqr'\]"):
        config.load({"WINDOW_EXCLUDE": "range,iqr"}, environ={})


def test_planner_sizes_shards_by_input_and_memory_budget(tmp_path):
    """More input -> more shards; a smaller worker budget -> more, smaller shards, and the
    estimate it reports fits the budget; a budget with no room is a clear error."""
    from trajectory.events.plan import BASE_RSS_MB, MEMORY_SHARE, RSS_PER_GZ_BYTE, shard_count

    gz = 1300 * 2**20  # demo x100
    big = config.load({"WORKER_MEMORY_GB": 4, "MAX_CPUS": 2}, environ={})
    small = config.load({"WORKER_MEMORY_GB": 0.8, "MAX_CPUS": 2}, environ={})
    n_big, why_big = shard_count(gz, big)
    n_small, why_small = shard_count(gz, small)
    # 109 by size (12 MB each), rounded up to a multiple of the workers the plan is cut for
    assert (n_big, why_big) == (110, "size")
    wide = config.load({"WORKER_MEMORY_GB": 4, "PLAN_WORKERS": 16}, environ={})
    assert shard_count(gz, wide) == (112, "size")
    assert why_small == "memory" and n_small > n_big
    assert BASE_RSS_MB + gz / n_small * RSS_PER_GZ_BYTE / 2**20 <= 0.8 * 1024 * MEMORY_SHARE
    assert shard_count(1 << 20, big) == (big.min_shards, "min")
    assert shard_count(gz, config.load({"N_SHARDS": 7}, environ={})) == (7, "config")
    with pytest.raises(ValueError, match="WORKER_MEMORY_GB=0.4 leaves no room"):
        shard_count(gz, config.load({"WORKER_MEMORY_GB": 0.4}, environ={}))


def test_setting_differences_in_the_users_spelling():
    """Only settings that enter the output hash, named as environment variables, values as
    a user would write them; a config kept in dataset.json (to_json, through JSON) compares
    equal to the live one."""
    from trajectory.record import FORMAT

    base = config.load({}, environ={})
    other = config.load({"OUTLIER_K": 2.5, "WINDOW_EXCLUDE": "none", "DROP_RULES": "duplicate",
                         "CLIP_TO_RANGE": "true", "MAX_CPUS": 7, "OUTLIER_METHOD": "mad"},
                        environ={})
    assert config.setting_differences(base.hash_values(), other.hash_values()) == [
        "OUTLIER_METHOD iqr -> mad", "OUTLIER_K 3.0 -> 2.5", "CLIP_TO_RANGE false -> true",
        'DROP_RULES "" -> duplicate', "WINDOW_EXCLUDE range,duplicate -> none"]
    kept = json.loads(json.dumps(base.to_json()))
    assert config.stored_hash_values(kept, FORMAT) == base.hash_values()
    assert config.setting_differences(config.stored_hash_values(kept, FORMAT),
                                      base.hash_values()) == []
    older = {k: v for k, v in kept.items() if k != "window_exclude"}
    assert config.setting_differences(config.stored_hash_values(older, FORMAT - 1),
                                      base.hash_values()) == [
        "WINDOW_EXCLUDE (not recorded) -> range,duplicate",
        f"record format {FORMAT - 1} -> {FORMAT}"]


def test_hash_values_are_what_the_hash_is_made_of():
    cfg = config.load({"OUTLIER_K": 2.5}, environ={})
    values = cfg.hash_values()
    assert "max_cpus" not in values and "data_dir" not in values
    assert values["outlier_k"] == 2.5 and values["window_exclude"] == ["range", "duplicate"]
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    assert cfg.output_hash() == hashlib.sha256(blob).hexdigest()[:16]
