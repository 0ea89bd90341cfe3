"""What decides a cache key's code part (jobs.cache.project_imports): every project module the
stage's jobs import, found by reading the imports, so an edit of any of them is a new key. A
hand-kept list once left out the sort kernel and the record module."""
from __future__ import annotations

import shutil
from pathlib import Path

from jobs import cache

REPO = Path(__file__).resolve().parent.parent


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_imports_found_every_way_a_module_imports(tmp_path):
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/a.py", "import os\nfrom . import b\n\ndef f():\n    from .sub import c\n")
    write(tmp_path, "pkg/b.py", "import pkg.d as d\n")
    write(tmp_path, "pkg/d.py", "from pkg.sub.deep import X\n")
    write(tmp_path, "pkg/sub/__init__.py", "from ..e import Y\n")
    write(tmp_path, "pkg/sub/c.py", "x = 1\n")
    write(tmp_path, "pkg/sub/deep.py", "X = 1\n")
    write(tmp_path, "pkg/e.py", "Y = 2\n")
    write(tmp_path, "pkg/unused.py", "import pkg.a\n")  # imports a, is imported by nothing
    write(tmp_path, "other/z.py", "")
    found = cache.project_imports(tmp_path, ("pkg/a.py",), ("pkg",))
    assert found == ("pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/d.py", "pkg/e.py",
                     "pkg/sub/__init__.py", "pkg/sub/c.py", "pkg/sub/deep.py")


def test_the_real_stages_cover_the_modules_that_shape_their_bytes():
    stage1 = set(cache.project_imports(REPO, cache.STAGE1_ENTRY))
    assert {"trajectory/events/tables.py", "trajectory/events/map_rows.py",
            "trajectory/events/extra_tables.py", "jobs/extra_keys.py", "trajectory/raw/read.py",
            "trajectory/raw/gzindex.py", "trajectory/cleaning/flags.py",
            "trajectory/record.py", "trajectory/atomic.py"} <= stage1
    sorted_ = set(cache.project_imports(REPO, cache.STAGE1_ENTRY + cache.SORTED_ENTRY))
    assert {"trajectory/assembly/assemble.py", "trajectory/assembly/kernels_sort.py",
            "trajectory/cleaning/vocab.py", "jobs/build.py"} <= sorted_ - stage1
    # the trainer's side is no part of what a build caches
    assert not any(f.startswith("trajectory/torch/") for f in sorted_)


def test_an_edited_sort_kernel_is_a_new_sorted_key(tmp_path, monkeypatch):
    """The same plan and shard, with one changed line in the sort kernel: another key, so
    no version made by the edited code reads shards sorted by the old one."""
    from types import SimpleNamespace

    root = tmp_path / "repo"
    for d in ("jobs", "trajectory"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = SimpleNamespace(cache_dir=tmp_path / "cache")
    plan = SimpleNamespace(cache_keys={"labevents": "k"})

    def key():
        cache._sources_hash.cache_clear()
        return cache.sorted_dir(cfg, plan, 0, [0, 1])[1], cache.code_hash()

    monkeypatch.setattr(cache, "_ROOT", root)
    before_sorted, before_stage1 = key()
    kernel = root / "trajectory/assembly/kernels_sort.py"
    kernel.write_text(kernel.read_text() + "\n# changed\n")
    after_sorted, after_stage1 = key()
    assert after_sorted != before_sorted
    assert after_stage1 == before_stage1  # stage 1 does not sort: its entries stay
    record = root / "trajectory/record.py"
    record.write_text(record.read_text() + "\n# changed\n")
    assert key()[1] != before_stage1
    cache._sources_hash.cache_clear()
