"""Settings: config.py < environment < flags, validated with messages naming the setting."""
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
    ({"OUTLIER_METHOD": "zscore"}, "OUTLIER_METHOD must be 'iqr', 'mad' or 'none'"),
    ({"TRAJECTORY_VERSION": "../x"}, "TRAJECTORY_VERSION must be a plain directory name"),
    ({"CLIP_TO_RANGE": "maybe"}, "CLIP_TO_RANGE: expected bool"),
    ({"LAYOUT": "zip"}, "LAYOUT must be 'files' or 'shards'"),
])
def test_bad_values_are_named(env, match):
    with pytest.raises(ValueError, match=match):
        config.load({}, environ=env)
