"""What the paper suite runs: items, methods, OOD sets, profiles and the run plan.

Nothing here trains or loads data; :func:`plan` lists the fine-tuning runs of a profile.
"""

from __future__ import annotations

import copy
import dataclasses

#: The eight items of the suite (GitHub issue 3).
ITEMS = {
    1: "OOD detection",
    2: "Adversarial OOD detection",
    3: "ID accuracy",
    4: "Convergence",
    5: "Sample efficiency",
    6: "Open questions (real outliers, stronger adversaries)",
    7: "Outlier-source ablation",
    8: "Cross-check with pytorch-ood",
}

#: Methods of the main table: key -> (label, AOEDetector parameters besides the shared ones).
METHODS = {
    "none": ("no OE (CE fine-tuning)", {"outliers": None, "attack": None}),
    "oe": ("OE", {"attack": None}),
    "oe_gauss": ("OE + Gaussian noise", {"attack": "gaussian"}),
    "aoe_fgsm": ("AOE-FGSM", {"attack": "fgsm"}),
    "aoe_pgd": ("AOE-PGD", {"attack": "pgd"}),
}

#: OOD evaluation sets, in report order.
OOD_SETS = ("mnist", "digits28", "gaussian_noise", "uniform_noise", "photo_patches")
OOD_LABELS = {"mnist": "MNIST", "digits28": "digits28", "gaussian_noise": "Gauss noise",
              "uniform_noise": "Unif. noise", "photo_patches": "photos"}

SOURCE_LABELS = {"default": "default mixture", "gan": "DCGAN samples", "noise": "noise",
                 "lowdensity": "low-density GMM", "permuted": "transformed ID",
                 "real": "real images"}

#: Seed of the evaluation-set draws; independent of the training seeds, never tuned.
EVAL_SEED = 20250

METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")
_METRICS = METRICS

#: Fine-tuning attack of each OE method.
METHOD_ATTACK = {"oe": "none", "oe_gauss": "gaussian", "aoe_fgsm": "fgsm", "aoe_pgd": "pgd"}
_METHOD_ATTACK = METHOD_ATTACK


@dataclasses.dataclass
class Profile:
    """Sizes of one benchmark run. See :data:`PROFILES` for the shipped ones.

    Every field is in the JSON report. ``data="sample"`` uses the embedded sample only
    (:func:`aoe_detect.datasets.load_sample`); ``data="files"`` loads Fashion-MNIST and MNIST
    through :mod:`aoe_detect.datasets` (``--data-root`` is searched first).
    """

    name: str = "custom"
    data: str = "sample"
    n_train: int | None = None
    n_test_id: int | None = None
    n_ood: int = 1000
    seeds: tuple = (0,)
    width: int = 16
    pretrain_epochs: int = 15
    pretrain_lr: float = 3e-3
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    epsilon: float = 8.0 / 255.0
    pgd_steps: int = 5
    pool_size: int = 20000
    sources: tuple = ("default", "gan")
    gan_epochs: int = 5
    gan_width: int = 32
    gan_max_train: int = 10000
    gan_sigma: float = 1.5
    adv_eps: tuple = (0.0, 0.01, 0.03, 0.07)
    adv_pgd_steps: int = 10
    n_adv: int = 200
    adv_sources: tuple = ("default",)
    robust_eps: float = 0.03
    conv_methods: tuple = ("oe", "aoe_fgsm")
    conv_chunks: int = 4
    conv_eval_n: int = 500
    sample_sizes: tuple = (1000, 5000)
    sample_source: str = "gan"
    strong_pgd_steps: tuple = (1, 3, 10)
    strong_eps: tuple = (16.0 / 255.0, 32.0 / 255.0)
    real_outliers: str = "digits28"
    n_real: int = 20000
    ablation_families: tuple = ("noise", "lowdensity", "gan", "permuted", "default")
    items: tuple = (1, 2, 3, 4, 5, 6, 7, 8)
    device: str = "auto"
    notes: str = ""


PROFILES = {
    "quick": Profile(
        name="quick", data="sample", n_ood=1000, seeds=(0,), width=16, pretrain_epochs=15,
        epochs=3, pool_size=20000, gan_epochs=4, gan_width=32, n_adv=100, conv_chunks=3,
        conv_eval_n=400, sample_sizes=(1000, 5000), strong_pgd_steps=(1, 3),
        strong_eps=(16.0 / 255.0,), real_outliers="digits28",
        notes=("Quick profile: the embedded sample only (3000 Fashion-MNIST training images, "
               "1000 test images, 1000 MNIST test images), ONE seed (so no std), 3 fine-tuning "
               "epochs, small outlier pools (20k) and attack subsets (100 per OOD set), fewer "
               "adversary strengths in item 6 (no PGD-10, no eps 32/255). Real outliers are "
               "sklearn's digits (train block, 1000 images). All eight items run, at reduced "
               "size; the full profile is the reference.")),
    "full": Profile(
        name="full", data="files", n_train=10000, n_test_id=5000, n_ood=2000, seeds=(0, 1, 2),
        width=16, pretrain_epochs=15, epochs=3, pool_size=60000, gan_epochs=5, gan_width=32,
        gan_max_train=10000, n_adv=250, conv_chunks=4, conv_eval_n=1000,
        sample_sizes=(1000, 5000, 20000), strong_pgd_steps=(1, 3, 10),
        strong_eps=(16.0 / 255.0, 32.0 / 255.0), real_outliers="mnist", n_real=20000,
        notes=("Full profile: class-balanced subsets of Fashion-MNIST, 10k training and 5k "
               "test images (the full 60k/10k do not fit the CPU budget of about an hour on 2 "
               "shared cores), 3 seeds. Real outliers are 20k MNIST training images.")),
}


def get_profile(name, **overrides):
    """A copy of the shipped profile ``name`` with fields replaced by ``overrides``."""
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(PROFILES)}.")
    prof = dataclasses.replace(PROFILES[name])
    fields = {f.name for f in dataclasses.fields(Profile)}
    for k, v in overrides.items():
        if k not in fields:
            raise ValueError(f"Unknown profile field {k!r}; valid fields: {sorted(fields)}.")
        setattr(prof, k, v)
    return prof


def copy_profile(profile):
    """A deep copy of a profile (helper for callers that tweak fields)."""
    return copy.deepcopy(profile)


def profile_from_json(entry):
    """The :class:`Profile` recorded in a result's ``"profile"`` entry (lists -> tuples)."""
    fields = {f.name for f in dataclasses.fields(Profile)}
    return Profile(**{k: tuple(v) if isinstance(v, list) else v
                      for k, v in entry.items() if k in fields})


def _label(name):
    return OOD_LABELS.get(name, name)


def _eps_key(eps):
    return f"{float(eps):.4f}"


# ------------------------------------------------------------------------ run specs
def _spec(source, attack, *, n_pool=None, eps=None, steps=None, profile):
    """Canonical description of one fine-tuning run (runs with equal specs are shared)."""
    if attack == "none_noe":
        return {"key": "noOE", "source": None, "attack": None, "n_pool": None, "eps": None,
                "steps": None}
    eps = profile.epsilon if eps is None else float(eps)
    if source == "real":  # the whole set of real images
        n_pool = None
    else:
        n_pool = profile.pool_size if n_pool is None else int(n_pool)
    steps = (profile.pgd_steps if steps is None else int(steps)) if attack == "pgd" else None
    att = {"none": "OE", "gaussian": "OE+gauss", "fgsm": "FGSM", "pgd": f"PGD{steps}"}[attack]
    key = f"{source}|n={'all' if n_pool is None else n_pool}|{att}"
    if attack != "none":
        key += f"|eps={eps * 255:.0f}/255"
    return {"key": key, "source": source, "attack": attack, "n_pool": n_pool, "eps": eps,
            "steps": steps}


def _main_spec(method, source, profile, **kw):
    if method == "none":
        return _spec(None, "none_noe", profile=profile)
    return _spec(source, METHOD_ATTACK[method], profile=profile, **kw)


def _strong_specs(p, add):
    strong = {"OE": add(_main_spec("oe", "default", p)),
              f"FGSM eps={p.epsilon * 255:.0f}/255": add(_main_spec("aoe_fgsm", "default", p))}
    for k in sorted(set(int(s) for s in p.strong_pgd_steps) | {int(p.pgd_steps)}):
        strong[f"PGD-{k} eps={p.epsilon * 255:.0f}/255"] = add(
            _main_spec("aoe_pgd", "default", p, steps=k))
    for e in p.strong_eps:
        strong[f"FGSM eps={e * 255:.0f}/255"] = add(_main_spec("aoe_fgsm", "default", p, eps=e))
        strong[f"PGD-{p.pgd_steps} eps={e * 255:.0f}/255"] = add(
            _main_spec("aoe_pgd", "default", p, eps=e))
    return strong


def plan(profile):
    """All run specs of ``profile``, by item, without training anything.

    Returns
    -------
    specs : dict key -> spec
    items : dict item name -> structure of spec keys
    """
    p = profile
    specs, items = {}, {}

    def add(s):
        specs[s["key"]] = s
        return s["key"]

    main_sources = list(p.sources)
    if any(i in p.items for i in (1, 2, 3, 8)):
        items["main"] = {src: {m: add(_main_spec(m, src, p)) for m in METHODS}
                         for src in main_sources}
    if 5 in p.items:
        sizes = sorted(set(int(n) for n in p.sample_sizes) | {int(p.pool_size)})
        items["sample"] = {m: {n: add(_main_spec(m, p.sample_source, p, n_pool=n))
                               for n in sizes} for m in ("oe", "aoe_fgsm")}
    if 6 in p.items:
        items["real"] = {m: add(_main_spec(m, "real", p)) for m in ("oe", "aoe_fgsm", "aoe_pgd")}
        items["strong"] = _strong_specs(p, add)
    if 7 in p.items:
        items["ablation"] = {fam: {m: add(_main_spec(m, fam, p)) for m in ("oe", "aoe_fgsm")}
                             for fam in p.ablation_families}
    return specs, items


def plan_from_json(entry):
    """The ``items`` structure of :func:`plan` from a result's JSON ``"plan"`` entry."""
    plan_ = copy.deepcopy(entry)
    if "sample" in plan_:
        plan_["sample"] = {m: {int(n): k for n, k in v.items()} for m, v in plan_["sample"].items()}
    return plan_


def _needed_sources(specs):
    return sorted({s["source"] for s in specs.values() if s["source"] is not None})


def _hist_keys(items):
    main = items.get("main", {})
    return {k for src in main.values() for k in src.values()}
