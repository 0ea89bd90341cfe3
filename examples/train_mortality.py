"""Train a small model for `mortality_in_icu_first_24h` and report held-out AUROC and AUPRC.

    python examples/train_mortality.py --version trajectories/v1          # a built version
    python examples/train_mortality.py --data-dir /data/mimiciv/3.1       # build it first
    python examples/train_mortality.py --demo --patients 600 --death-rate 0.5   # synthetic

Steps: open (or build) a version; make the task's labels (`jobs.tasks.run_tasks`, skipped when
`tasks/<task>.parquet` exists); read task-cut samples, `TrajectoryDataset(version, task=...)`,
so a sample holds only what was known at its prediction time (ICU admission + 24 h); turn the
sample's ICU-stay windows (hourly [T, F, S] blocks, docs/FORMAT.md) into features; fit
logistic regression in PyTorch on the `train` split; report AUROC and AUPRC on the held-out
subjects (`val` and `test` together: nothing is tuned on `val`, and pooling gives a usable
number of positives on small sets). Splits go by subject (`trajectory.splits.split_of`).

Features, per concept of `dataset.json["concepts"]`, from the window `mean` statistic of the
sample's stay (rows up to the prediction time): the last observed value, the mean over the
stay so far, and last minus first observed value (the trend: the synthetic generator's
planted signal is a falling mean arterial pressure and a rising lactate, trajectory/synth/),
plus the number of observations. Missing values are filled with the training mean after
standardising (so 0). A few seconds on a laptop CPU for the MIMIC-IV demo; minutes for full
MIMIC-IV (reading the samples dominates).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

TASK = "mortality_in_icu_first_24h"


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney statistic, ties counted half. NaN when
    only one class is present."""
    y = np.asarray(y, bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    return float((r[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (the step-wise area under the precision-recall curve, as
    scikit-learn's average_precision_score): mean precision at each positive, scores tied
    taken together. NaN without positives."""
    y = np.asarray(y, bool)
    if not y.any():
        return float("nan")
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, t = np.asarray(score)[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]  # end of each group of tied scores
    tp = np.cumsum(t)[last]
    seen = (np.flatnonzero(last) + 1)
    precision = tp / seen
    recall_step = np.diff(np.r_[0, tp]) / y.sum()
    return float((precision * recall_step).sum())


def open_or_build(args) -> Path:
    """The version directory: --version as is, else built from --data-dir or --demo data
    (reused when already built)."""
    if args.version:
        return Path(args.version)
    import config
    from jobs.driver import run_build

    out = Path(args.out_dir)
    if args.demo:
        from trajectory import synth

        data = out / "_demo_data"
        if not (data / "hosp" / "patients.csv.gz").exists():
            print(f"generating {args.patients} synthetic patients in {data} "
                  f"(death rate {args.death_rate})")
            synth.generate(data, n_patients=args.patients, seed=args.seed,
                           death_rate=args.death_rate)
    else:
        data = Path(args.data_dir)
    cfg = config.load({"DATA_DIR": str(data), "OUT_DIR": str(out), "MAX_CPUS": args.max_cpus,
                       "RUNNER": args.runner})
    if not (cfg.version_dir / "dataset.json").exists():
        t0 = time.perf_counter()
        run_build(cfg, progress=False)
        print(f"built {cfg.version_dir} in {time.perf_counter() - t0:.1f} s")
    return cfg.version_dir


def features(ds, concepts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One row per sample: per concept last / mean / trend of the window mean, and count."""
    n_c = len(concepts)
    X = np.full((len(ds), 4 * n_c), np.nan, dtype=np.float64)
    y = np.zeros(len(ds), dtype=bool)
    for i in range(len(ds)):
        item = ds[i]
        y[i] = bool(item["label"])
        block = next((w for w in item["windows"]
                      if w["kind"] == "stay" and int(w["id"]) == item["stay_id"]), None)
        if block is None:  # no window of the stay ended by the prediction time
            continue
        stats = block["stats"]
        data = block["data"].numpy()  # [T, F, S], only rows ending by the prediction time
        mean, count = data[:, :, stats.index("mean")], data[:, :, stats.index("count")]
        for f, c in enumerate(block["features"]):
            col = mean[:, f]
            seen = col[~np.isnan(col)]
            X[i, 3 * n_c + c] = np.nansum(count[:, f])
            if len(seen):
                X[i, c], X[i, n_c + c], X[i, 2 * n_c + c] = seen[-1], seen.mean(), \
                    seen[-1] - seen[0]
    return X, y


def train_logistic(X, y, epochs: int, seed: int, lr: float = 0.05, weight_decay: float = 1e-3):
    """Full-batch logistic regression (Adam, L2), classes weighted to balance."""
    import torch

    torch.manual_seed(seed)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    model = torch.nn.Linear(X.shape[1], 1)
    pos = max(float(yt.sum()), 1.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(yt) - pos) / pos))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(model(Xt).squeeze(1), yt)
        loss.backward()
        opt.step()
    return model


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--version", help="a built version directory (OUT_DIR/TRAJECTORY_VERSION)")
    src.add_argument("--data-dir", help="raw MIMIC-IV to build from (into --out-dir)")
    src.add_argument("--demo", action="store_true", help="build synthetic data (into --out-dir)")
    ap.add_argument("--out-dir", default="trajectories_example",
                    help="where --data-dir/--demo builds go [trajectories_example]")
    ap.add_argument("--patients", type=int, default=600, help="synthetic patients [600]")
    ap.add_argument("--death-rate", type=float, default=0.5,
                    help="synthetic share of patients who die in their last admission [0.5]")
    ap.add_argument("--max-cpus", type=int, default=2, help="build workers [2]")
    ap.add_argument("--runner", choices=("serial", "dask"), default=None,
                    help="build runner [config.py's RUNNER]")
    ap.add_argument("--epochs", type=int, default=300, help="full-batch optimiser steps [300]")
    ap.add_argument("--seed", type=int, default=0, help="model and synthetic-data seed [0]")
    args = ap.parse_args(argv)

    from jobs.tasks import run_tasks
    from trajectory.torch import TrajectoryDataset

    t0 = time.perf_counter()
    vdir = open_or_build(args)
    if not (vdir / "tasks" / f"{TASK}.parquet").exists():
        run_tasks(vdir, [TASK], progress=False)
    concepts = json.loads((vdir / "dataset.json").read_text())["concepts"]
    train = TrajectoryDataset(vdir, task=TASK, split="train")
    held = [TrajectoryDataset(vdir, task=TASK, split=s) for s in ("val", "test")]
    Xtr, ytr = features(train, concepts)
    parts = [features(d, concepts) for d in held]
    Xte, yte = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    with warnings.catch_warnings():  # a concept no training sample has: mean 0, sd 1
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nan_to_num(np.nanmean(Xtr, axis=0))
        sd = np.nan_to_num(np.nanstd(Xtr, axis=0))
    sd = np.where(sd > 0, sd, 1.0)

    def prep(X):
        return np.nan_to_num((X - mu) / sd)  # NaN -> the training mean (0)

    import torch

    model = train_logistic(prep(Xtr), ytr, args.epochs, args.seed)
    with torch.no_grad():
        score = model(torch.tensor(prep(Xte), dtype=torch.float32)).squeeze(1).numpy()
    result = {"task": TASK, "version": str(vdir), "train_samples": int(len(ytr)),
              "train_positives": int(ytr.sum()), "heldout_samples": int(len(yte)),
              "heldout_positives": int(yte.sum()), "auroc": auroc(yte, score),
              "auprc": auprc(yte, score), "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{TASK}: train {result['train_samples']} samples ({result['train_positives']} "
          f"positive); held-out (val+test) {result['heldout_samples']} samples "
          f"({result['heldout_positives']} positive): AUROC {result['auroc']:.3f}, "
          f"AUPRC {result['auprc']:.3f} (prevalence "
          f"{yte.mean() if len(yte) else float('nan'):.3f}); {result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
