"""Training and evaluation of the paper suite: :func:`run_benchmark`.

Design (one run, same pretrained weights and seeds for every method):

1. per seed, ONE small CNN is pretrained with cross-entropy on the ID data
   (``AOEDetector(outliers=None, epochs=0, pretrain_epochs=N)``);
2. per seed, outlier pools are drawn once from each source (the default mixture, a DCGAN
   trained on the ID images, the single families for the ablation, real images) and passed
   to ``fit(X, y, X_outliers=pool)``;
3. every method is fine-tuned from a deep copy of the pretrained module (``backbone=module``):
   no OE (cross-entropy only), OE, OE + Gaussian noise, AOE-FGSM, AOE-PGD;
4. every model is scored on fixed evaluation sets (chosen before any result was seen and
   identical for all methods and seeds): ID test images and five OOD sets;
5. the post-hoc peers of pytorch-ood (:mod:`.peers`) are computed on the pretrained (CE)
   backbone and on the OE and AOE-FGSM backbones of the main table (default mixture), and
   the package's own ``ood_score`` options on the AOE-FGSM backbone.

Library code never prints: progress goes to the ``log`` callable the caller passes.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
import warnings

import numpy as np
import sklearn
import torch

from aoe_detect import __version__
from aoe_detect.attacks import PGD
from aoe_detect.backbones import SmallCNN, Standardize
from aoe_detect.demo import evaluate
from aoe_detect.detector import AOEDetector
from aoe_detect.outliers import GANOutliers
from aoe_detect.metrics import auroc, ood_report
from aoe_detect.outliers import (GaussianNoise, LowDensityGMM, Mixture, PermutedID, SmoothNoise,
                                 UniformNoise, default_outliers)

from . import peers as P
from .aggregate import _aggregate_runs, _items, _jsonable
from .crosscheck import _crosscheck
from .data import _as_float_images, _sample_shape, load_data, load_user_data
from .plan import (EVAL_SEED, ITEMS, METHOD_ATTACK, METHODS, _eps_key, _hist_keys,
                   _needed_sources, get_profile, plan)
from .verdicts import conclusions


# ---------------------------------------------------------------------------- models
class SmallCNNFactory:
    """Backbone factory ``(n_classes, input_shape) -> SmallCNN`` of a given ``width``.

    The library's ``"small_cnn"`` is width 32; the benchmark uses a narrower one to fit the
    CPU budget. Inputs are standardised with the ID training statistics (as built-in
    backbones do).
    """

    def __init__(self, width, mean, std):
        self.width = int(width)
        self.mean = [float(v) for v in np.atleast_1d(mean)]
        self.std = [float(v) for v in np.atleast_1d(std)]

    def __call__(self, n_classes, input_shape):
        norm = Standardize(torch.tensor(self.mean).reshape(-1, 1, 1),
                           torch.tensor(self.std).reshape(-1, 1, 1))
        return SmallCNN(input_shape[0], n_classes, width=self.width, norm=norm)


def _backbone_for(profile, X_train):
    if profile.width == 32:
        return "small_cnn"
    x = _as_float_images(X_train)
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return SmallCNNFactory(profile.width, flat.mean(1).numpy(), flat.std(1).numpy())


def _detector(profile, seed, verbose, **params):
    # the paper's claims are about the energy score; the feature scores are compared in the
    # peer table (and in benchmarks/scores_study.py)
    base = dict(epochs=profile.epochs, batch_size=profile.batch_size, lr=profile.lr,
                random_state=seed, device=profile.device, verbose=verbose, ood_score="energy")
    eps = params.pop("eps", profile.epsilon)
    base.update(params)
    det = AOEDetector(**base)
    if det.attack not in (None, "none"):  # the radius lives on the attack (attack__eps)
        det.set_params(attack__eps=float(eps))
    return det


def _attack_param(attack, steps):
    if attack == "pgd":
        return PGD(steps=int(steps))
    return attack


# ------------------------------------------------------------------------- outliers
def _family_source(name, profile, cache_dir, shape):
    if name == "default":
        return default_outliers(shape)
    if name == "noise":
        return Mixture([("uniform", UniformNoise()), ("smooth", SmoothNoise()),
                        ("gaussian", GaussianNoise())])
    if name == "lowdensity":
        return LowDensityGMM()
    if name == "permuted":
        return PermutedID()
    if name == "gan":
        return GANOutliers(epochs=profile.gan_epochs, width=profile.gan_width,
                           sigma=profile.gan_sigma, cache_dir=cache_dir)
    raise ValueError(f"Unknown outlier family {name!r}.")


def _draw_pool(source, n, generator, shape, chunk=5000):
    parts = [source.sample(min(chunk, n - i), generator) for i in range(0, n, chunk)]
    return torch.cat(parts).reshape(n, *shape).numpy()


# ------------------------------------------------------------------------ evaluation
def _evaluate(det, data, ood_scores_out=None):
    """ID accuracy and per-set OOD metrics of a fitted detector."""
    return evaluate(det, data["X_test"], data["y_test"], data["ood"], ood_scores_out)


def _adversarial(det, s_id, data, attacks, eps_list, n_adv, pgd_steps, seed):
    """OOD inputs attacked toward low energy: metrics per attack and eps (ID stays clean)."""
    out = {}
    for att in attacks:
        adversary = "fgsm" if att == "fgsm" else PGD(steps=int(pgd_steps))
        out[att] = {}
        for eps in eps_list:
            per_set = {}
            for name in data["ood"]:
                X = data["ood"][name][:n_adv]
                if eps > 0:
                    X = det.perturb(X, attack=adversary, epsilon=float(eps), random_state=seed)
                r = ood_report(s_id, det.score_samples(X))
                per_set[name] = {"auroc": r["auroc"], "fpr95": r["fpr95"]}
            out[att][_eps_key(eps)] = {
                "auroc": float(np.mean([v["auroc"] for v in per_set.values()])),
                "fpr95": float(np.mean([v["fpr95"] for v in per_set.values()])),
                "per_set": per_set}
    return out


def _last_row(history):
    if not history:
        return {}
    row = history[-1]
    return {k: row[k] for k in ("loss", "ce", "energy_in", "energy_out", "mean_energy_id",
                                "mean_energy_outlier") if k in row}


def _convergence_chain(p, seed, verbose, module, pre, data, pool, method):
    """AUROC and loss parts versus iterations: fine-tuning in chunks with ``warm_start``.

    The ID training data is split into ``conv_chunks`` chunks per epoch; each chunk is one
    ``fit`` call with ``warm_start=True`` that adds one epoch over the chunk (``epochs`` is a
    running total under warm start) and continues the same module, so the
    learning rate follows a cosine per chunk (warm restarts). Margins are fixed after the
    first chunk. Evaluated (AUROC averaged over the OOD sets, on ``conv_eval_n`` images per
    set) before training and after every chunk.
    """
    n_eval = p.conv_eval_n
    ood = {k: v[:n_eval] for k, v in data["ood"].items()}
    X_id = data["X_test"][:max(n_eval, 1)]

    def score(det):
        s_id = det.score_samples(X_id)
        return float(np.mean([auroc(s_id, det.score_samples(X)) for X in ood.values()]))

    if method not in METHOD_ATTACK:
        raise ValueError(f"convergence needs an OE method ({sorted(METHOD_ATTACK)}), "
                         f"got {method!r}")
    attack = _attack_param(METHOD_ATTACK[method], p.pgd_steps)
    attack = None if attack == "none" else attack
    det = _detector(p, seed, verbose, backbone=module, attack=attack, epochs=1,
                    warm_start=True, validation_fraction=0.0)
    rng = np.random.RandomState(seed + 777)
    n = len(data["X_train"])
    points = [{"iteration": 0, "epoch": 0.0, "auroc": score(pre)}]
    it = 0
    for ep in range(p.epochs):
        chunks = np.array_split(rng.permutation(n), p.conv_chunks)
        for c, idx in enumerate(chunks):
            # warm_start counts epochs as totals: one more "epoch" (= this chunk) per call
            k = ep * p.conv_chunks + c
            det.set_params(random_state=seed * 1000 + k, epochs=k + 1)
            det.fit(data["X_train"][idx], data["y_train"][idx], X_outliers=pool)
            if ep == 0 and c == 0:
                det.set_params(loss__m_in=float(det.m_in_), loss__m_out=float(det.m_out_))
            row = det.history_[-1]
            it += int(row.get("steps", 0))
            points.append({"iteration": it, "epoch": ep + (c + 1) / p.conv_chunks,
                           "auroc": score(det),
                           **{k: float(row[k]) for k in ("loss", "ce", "energy_in", "energy_out",
                                                          "mean_energy_id", "mean_energy_outlier")
                              if k in row}})
    return points


# ------------------------------------------------------------------------------ run
@dataclasses.dataclass
class _Run:
    """One run's settings and its accumulators (shared by the per-seed steps)."""

    p: object
    data: dict
    specs: dict
    items: dict
    verbose: int
    cache_dir: object
    log: object
    need_adv: set
    need_robust: set
    peer_keys: dict
    X_tr_f: object = None
    backbone: object = None
    shape: tuple = ()
    per_seed: dict = dataclasses.field(default_factory=dict)
    pretrained: dict = dataclasses.field(default_factory=dict)
    convergence: dict = dataclasses.field(default_factory=dict)
    hist_scores: dict = dataclasses.field(default_factory=dict)
    peers: dict = dataclasses.field(default_factory=dict)
    warn_counts: dict = dataclasses.field(default_factory=dict)
    crosscheck: object = None
    done: int = 0


def _pools(run, seed, gen):
    """Outlier pools of one seed, drawn once from every source the specs need."""
    p, specs = run.p, run.specs
    pools, pool_info = {}, {}
    for src in _needed_sources(specs):
        t0 = time.time()
        if src == "real":
            pools[src] = _as_float_images(run.data["real"]).numpy()
            pool_info[src] = {"size": int(len(pools[src])), "seconds": 0.0}
            continue
        size = max(s["n_pool"] for s in specs.values() if s["source"] == src)
        source = _family_source(src, p, run.cache_dir, run.shape)
        fit_X = run.X_tr_f
        if src == "gan" and len(fit_X) > p.gan_max_train:
            fit_X = fit_X[torch.randperm(len(fit_X), generator=gen)[:p.gan_max_train]]
        source.fit(fit_X, gen)
        pools[src] = _draw_pool(source, size, gen, run.shape)
        pool_info[src] = {"size": int(size), "seconds": time.time() - t0}
        if src == "gan":
            pool_info[src]["gan_history"] = source.history_
            pool_info[src]["loaded_from_cache"] = bool(source.loaded_from_cache_)
        run.log(f"seed {seed}: pool '{src}' ({size}) in {time.time() - t0:.0f}s")
    return pools, pool_info


def _fine_tune(run, seed, module, key, s, pools):
    """One fine-tuning run from a copy of ``module``: ``(detector, non-finite warnings)``."""
    p, data = run.p, run.data
    if s["source"] is None:
        det = _detector(p, seed, run.verbose, backbone=module, outliers=None, attack=None)
        fit_kw = {}
    else:
        det = _detector(p, seed, run.verbose, backbone=module,
                        attack=_attack_param(s["attack"], s["steps"]), eps=s["eps"])
        fit_kw = {"X_outliers": pools[s["source"]][:s["n_pool"]]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det.fit(data["X_train"], data["y_train"], **fit_kw)
    n_warn = sum(1 for w in caught if "NonFiniteLoss" in type(w.message).__name__
                 or "Interrupted" in type(w.message).__name__)
    run.warn_counts[key] = run.warn_counts.get(key, 0) + n_warn
    return det, n_warn


def _run_spec(run, seed, module, key, s, pools):
    """Fine-tune, evaluate (and attack) one spec; the per-seed record."""
    p, data = run.p, run.data
    t0 = time.time()
    det, n_warn = _fine_tune(run, seed, module, key, s, pools)
    train_s = time.time() - t0
    scores = {} if (seed == p.seeds[0] and key in _hist_keys(run.items)) else None
    rec, s_id = _evaluate(det, data, scores)
    if scores is not None:
        run.hist_scores[key] = scores
    rec.update(train_seconds=train_s, m_in=det.m_in_, m_out=det.m_out_,
               final=_last_row(det.history_), nonfinite_warnings=n_warn)
    if key in run.need_adv:
        rec["adv"] = _adversarial(det, s_id, data, ("fgsm", "pgd"), p.adv_eps, p.n_adv,
                                  p.adv_pgd_steps, seed)
    elif key in run.need_robust:
        rec["adv"] = _adversarial(det, s_id, data, ("fgsm", "pgd"), (p.robust_eps,),
                                  p.n_adv, p.adv_pgd_steps, seed)
    rec["seconds"] = time.time() - t0
    run.done += 1
    run.log(f"seed {seed} [{run.done}/{len(run.specs) * len(p.seeds)}] {key}: acc "
            f"{rec['acc']:.4f} AUROC {rec['avg']['auroc']:.4f} FPR95 {rec['avg']['fpr95']:.4f} "
            f"({train_s:.0f}s train, {rec['seconds']:.0f}s total)")
    if 8 in p.items and run.crosscheck is None and key == run.items.get("main", {}).get(
            "default", {}).get("aoe_fgsm"):
        run.crosscheck = _crosscheck(det, data, pools["default"])
    for bb, k in run.peer_keys.items():
        if k == key:
            _peer_backbone(run, seed, bb, det.module_)
    return rec


def _peer_backbone(run, seed, name, module):
    """Peers (and, on the AOE backbone, the package's scores) on one backbone of ``seed``."""
    t0 = time.time()
    d = run.data
    split = P.fit_split(len(d["X_train"]), EVAL_SEED + 7)
    ood = {k: _as_float_images(v) for k, v in d["ood"].items()}
    run.peers.setdefault(seed, {})[name] = P.backbone_metrics(
        module, run.X_tr_f, d["y_train"], _as_float_images(d["X_test"]), ood, split,
        own=name == "aoe", seed=seed)
    run.log(f"seed {seed}: peers on the {name.upper()} backbone in {time.time() - t0:.0f}s")


def _pretrain(run, seed):
    p = run.p
    run.log(f"seed {seed}: pretraining ({p.pretrain_epochs} epochs, width {p.width})")
    pre = _detector(p, seed, run.verbose, backbone=run.backbone, outliers=None, attack=None,
                    epochs=0, pretrain_epochs=p.pretrain_epochs, lr=p.pretrain_lr)
    t0 = time.time()
    pre.fit(run.data["X_train"], run.data["y_train"])
    pre_rec, _ = _evaluate(pre, run.data)
    pre_rec["train_seconds"] = time.time() - t0
    run.pretrained[seed] = pre_rec
    run.log(f"seed {seed}: pretrained acc {pre_rec['acc']:.4f}, AUROC "
            f"{pre_rec['avg']['auroc']:.4f} ({pre_rec['train_seconds']:.0f}s)")
    return pre


def _run_seed(run, seed):
    p = run.p
    t_seed = time.time()
    pre = _pretrain(run, seed)
    module = pre.module_
    gen = torch.Generator().manual_seed(10_000 + seed)
    pools, pool_info = _pools(run, seed, gen)
    recs = {}
    for key, s in run.specs.items():
        recs[key] = _run_spec(run, seed, module, key, s, pools)
    run.per_seed[seed] = recs
    if 4 in p.items:  # convergence: chunked warm-start fine-tuning
        run.convergence[seed] = {}
        for m in p.conv_methods:
            t0 = time.time()
            run.convergence[seed][m] = _convergence_chain(p, seed, run.verbose, module, pre,
                                                          run.data, pools["default"], m)
            run.log(f"seed {seed}: convergence {m} in {time.time() - t0:.0f}s")
    if run.peer_keys:
        _peer_backbone(run, seed, "ce", module)
    run.log(f"seed {seed} done in {time.time() - t_seed:.0f}s")
    run.per_seed[seed]["_pools"] = pool_info


def _peer_keys(p, items):
    """Backbones of the peer table: ``{"oe": key, "aoe": key}`` of the main table's default
    mixture (else its first source); empty when item 1 does not run."""
    main = items.get("main", {})
    if 1 not in p.items or not main:
        return {}
    src = "default" if "default" in main else next(iter(main))
    return {"oe": main[src]["oe"], "aoe": main[src]["aoe_fgsm"]}


def _checked(profile):
    p = get_profile(profile) if isinstance(profile, str) else profile
    bad = [i for i in p.items if i not in ITEMS]
    if bad or not p.items:
        raise ValueError(f"Profile `items` must be a non-empty subset of {sorted(ITEMS)}, got "
                         f"{list(p.items)!r}.")
    if not p.seeds:
        raise ValueError("Profile `seeds` must hold at least one seed.")
    return p


def _new_run(p, data, log, verbose, cache_dir):
    if data["real"] is None and 6 in p.items:
        p = dataclasses.replace(p, items=tuple(i for i in p.items if i != 6))
        log("no real outliers in the data: item 6 skipped")
    log(f"data: {data['sizes']}")
    specs, items = plan(p)
    need_adv = {items["main"][src][m] for src in p.adv_sources if src in items.get("main", {})
                for m in METHODS} if 2 in p.items else set()
    need_robust = set(items.get("strong", {}).values()) | set(items.get("real", {}).values())
    return _Run(p=p, data=data, specs=specs, items=items, verbose=verbose, cache_dir=cache_dir,
                log=log, need_adv=need_adv, need_robust=need_robust,
                peer_keys=_peer_keys(p, items), X_tr_f=_as_float_images(data["X_train"]),
                backbone=_backbone_for(p, data["X_train"]), shape=_sample_shape(data["X_train"]))


def run_benchmark(profile, data_root=None, *, data=None, log=None, verbose=0, cache_dir=None,
                  command=None):
    """Run the suite described by ``profile``; return the results dict.

    Parameters
    ----------
    profile : Profile or str
        A :class:`Profile` or the name of a shipped one (``"quick"``, ``"full"``).
    data_root : str, optional
        Folder searched first by the data loaders (``profile.data == "files"``).
    data : dict or str, optional
        Your own images instead of the profile's data sets: a dict or ``.npz`` path as read by
        :func:`load_user_data` (``n_train``/``n_test_id``/``n_ood`` then do not apply).
    log : callable, optional
        ``log(message)`` receives progress lines (nothing is printed otherwise).
    verbose : int, default=0
        Passed to the detectors (tqdm progress bars per training stage).
    cache_dir : str, optional
        Where the DCGAN generators are cached (keyed by data, seed and settings).
    command : str, optional
        The command line to record in the report.

    Returns
    -------
    dict
        JSON-serialisable results (see ``docs/benchmarks.md``); numpy arrays of the seed-0
        scores for the histograms are under the private key ``"_scores"``.
    """
    p = _checked(profile)
    log = log or (lambda msg: None)
    t_start = time.time()
    if data is None:
        data = load_data(p, data_root)
    elif not (isinstance(data, dict) and "sizes" in data):
        data = load_user_data(data)
    run = _new_run(p, data, log, verbose, cache_dir)
    for seed in run.p.seeds:
        _run_seed(run, seed)
    results = _results(run, command, t_start)
    results["meta"]["wall_seconds"] = time.time() - t_start
    return results


def _results(run, command, t_start):
    p, data, specs = run.p, run.data, run.specs
    names = list(data["ood"])
    results = {
        "meta": _meta(p, command, time.time() - t_start),
        "profile": _jsonable(dataclasses.asdict(p)),
        "data_sizes": data["sizes"],
        "specs": specs,
        "plan": _jsonable(run.items),
        "pretrained": {str(k): v for k, v in run.pretrained.items()},
        "runs": _aggregate_runs(specs, run.per_seed, p.seeds, names),
        "ood_sets": names,
        "unseen_sets": list(data["unseen"]),
        "id_description": data["description"],
        "pools": {str(s): run.per_seed[s]["_pools"] for s in p.seeds},
        "nonfinite_warnings": run.warn_counts,
    }
    if run.peers:
        results["peers"] = _jsonable({
            "backbones": {"ce": "pretrained (cross-entropy)", **run.peer_keys},
            "default_score": AOEDetector().ood_score, "fit_rows": "90% of the ID training "
            "images (seeded split); sums of two package scores standardised on the other 10%",
            "non_noise_sets": P.non_noise(names),
            "per_seed": {str(s): v for s, v in run.peers.items()}})
    results["items"] = _items(results, run.items, p, run.convergence, run.crosscheck)
    results["conclusions"] = conclusions(results, run.items, p)
    results["_scores"] = run.hist_scores
    return results


# --------------------------------------------------------------------------- meta
def _cpu_name():
    cpu_name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu_name


def _meta(p, command, wall):
    try:
        cpu_count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpu_count = os.cpu_count()
    dev = "cuda" if (p.device == "auto" and torch.cuda.is_available()) else (
        "cpu" if p.device == "auto" else p.device)
    return {"aoe_detect": __version__, "torch": torch.__version__, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_name(),
            "cpu_count": cpu_count, "torch_threads": torch.get_num_threads(), "device": dev,
            "command": command or " ".join(sys.argv), "wall_seconds": wall,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
