"""Python part of ``benchmarks/gpu_check.sh`` (CUDA only; see that script)."""

import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from aoe_detect import AOEDetector
from aoe_detect.backbones import build_backbone
from aoe_detect.losses import energy
from aoe_detect.metrics import auroc
from aoe_detect.runtime import Runtime

warnings.simplefilter("ignore")
OUT = sys.argv[1] if len(sys.argv) > 1 else "."
#: AOE_GPU_CHECK_SMOKE=1 runs the same code on the CPU with tiny sizes (checks the script
#: itself where there is no GPU; thresholds are not meaningful then).
SMOKE = os.environ.get("AOE_GPU_CHECK_SMOKE") == "1"
DEV = "cpu" if SMOKE else "cuda"


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()
RESULTS, FAILED = {}, []


def check(name, ok, **info):
    RESULTS[name] = {"ok": bool(ok), **info}
    print(f"{'PASS' if ok else 'FAIL'} {name}: {info}", flush=True)
    if not ok:
        FAILED.append(name)


def data(n=4000, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.rand(10, 3, 32, 32).astype(np.float32)
    y = rng.randint(0, 10, n)
    X = np.clip(centers[y] * 0.6 + rng.rand(n, 3, 32, 32).astype(np.float32) * 0.4, 0, 1)
    return X, y, rng.rand(500, 3, 32, 32).astype(np.float32)


def run_step(name, fn):
    t = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # one failed check must not hide the others
        check(name, False, error=f"{type(exc).__name__}: {exc}"[:300])
    RESULTS.setdefault(name, {})["seconds"] = round(time.perf_counter() - t, 1)


X, y, X_ood = data(300 if SMOKE else 4000)
BASE = dict(backbone="small_cnn", epochs=1 if SMOKE else 2, pretrain_epochs=1 if SMOKE else 2, batch_size=128, device=DEV,
            outliers="uniform", random_state=0)
fitted = {}


def amp_fits():
    for amp in ("bf16", "fp16"):
        det = AOEDetector(**BASE, runtime=Runtime(amp=amp)).fit(X, y)
        s_id, s_ood = det.score_samples(X[:500]), det.score_samples(X_ood)
        a = auroc(s_id, s_ood)
        ok = (all(np.isfinite(r["loss"]) for r in det.history_) and np.isfinite(s_id).all()
              and np.isfinite(det.offset_) and a > 0.9)
        check(f"cuda fit amp={amp}", ok, auroc=round(float(a), 4), epochs=len(det.history_))
        fitted[amp] = det


def compiled_fit():
    eager = AOEDetector(**{**BASE, "epochs": 1, "pretrain_epochs": 1}).fit(X, y)
    comp = AOEDetector(**{**BASE, "epochs": 1, "pretrain_epochs": 1,
                          "runtime": Runtime(compile=True)}).fit(X, y)
    a, b = eager.score_samples(X[:500]), comp.score_samples(X[:500])
    err = float(np.abs(a - b).max() / max(np.ptp(a), 1e-12))
    check("compile=True matches eager", err < 1e-3 and np.isfinite(b).all(), rel_err=err)


def save_load():
    det = fitted.get("bf16") or AOEDetector(**BASE, runtime=Runtime(amp="bf16")).fit(X, y)
    with tempfile.TemporaryDirectory() as tmp:
        path = det.save(os.path.join(tmp, "cuda.aoe"))
        back = AOEDetector.load(path, device="cpu")
    a = det.score_samples(X[:500])
    back.set_params(runtime__amp=False)
    b = back.score_samples(X[:500])
    err = float(np.abs(a - b).max() / max(np.ptp(a), 1e-12))
    ok = str(back.device_) == "cpu" and next(back.module_.parameters()).device.type == "cpu"
    # (bf16 scores differ from fp32 ones by ~1e-2 of the spread: informational only)
    check("CUDA -> CPU save/load", ok and np.isfinite(b).all(), rel_err_vs_bf16_cuda=err)
    det.set_params(runtime__amp=False)
    c = det.score_samples(X[:500])
    err32 = float(np.abs(c - b).max() / max(np.ptp(c), 1e-12))
    check("CUDA fp32 scores == CPU scores after load", err32 < 1e-4, rel_err=err32)


def plain_loop_ips(Xt, yt, epochs=2, batch=128, eps=8 / 255, lam=0.1):
    """The same work without the package: FGSM on uniform outliers, one forward over
    ID+outliers, CE + energy margins, Adam, bf16 autocast, channels_last."""
    dev = torch.device(DEV)
    net = build_backbone("wrn40_2", 10, (3, 32, 32), mean=torch.zeros(3), std=torch.ones(3))
    net = net.to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    Xg = torch.from_numpy(Xt).to(dev)
    yg = torch.from_numpy(yt).to(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    times = []
    for _ in range(epochs):
        _sync()
        t = time.perf_counter()
        perm = torch.randperm(len(Xg), device=dev, generator=g)
        for idx in perm.split(batch):
            xi = Xg[idx].contiguous(memory_format=torch.channels_last)
            xo = torch.rand(xi.shape, device=dev, generator=g).requires_grad_(True)
            net.eval()
            with torch.autocast(DEV, dtype=torch.bfloat16):
                e = energy(net(xo).float(), 1.0).sum()
            (grad,) = torch.autograd.grad(e, xo)
            xo = (xo.detach() - eps * grad.sign()).clamp(0, 1)
            net.train()
            with torch.autocast(DEV, dtype=torch.bfloat16):
                logits = net(torch.cat([xi, xo]).contiguous(memory_format=torch.channels_last)).float()
            li, lo = logits[:len(xi)], logits[len(xi):]
            ei, eo = energy(li, 1.0), energy(lo, 1.0)
            loss = F.cross_entropy(li, yg[idx]) + lam * (F.relu(ei + 7).pow(2).mean()
                                                          + F.relu(-5 - eo).pow(2).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync()
        times.append(time.perf_counter() - t)
    return len(Xt) / min(times)


def wrn_throughput():
    n = 200 if SMOKE else 6000
    rng = np.random.RandomState(0)
    Xw = rng.rand(n, 3, 32, 32).astype(np.float32)
    yw = rng.randint(0, 10, n)
    det = AOEDetector(backbone="wrn40_2", outliers="uniform", attack="fgsm", epochs=2,
                      pretrain_epochs=0, batch_size=128, runtime=Runtime(amp="bf16"), device=DEV,
                      validation_fraction=0.1, random_state=0).fit(Xw, yw)
    n_tr = n - int(round(0.1 * n))
    ips_det = n_tr / min(h["seconds"] for h in det.history_)
    ips_plain = plain_loop_ips(Xw[:n_tr], yw[:n_tr].astype(np.int64))
    ratio = ips_det / ips_plain
    check("WRN-40-2 fit images/s vs plain loop", ratio > 0.8, fit_images_per_s=round(ips_det),
          plain_images_per_s=round(ips_plain), ratio=round(ratio, 3))


STEPS = [("cuda fit amp", amp_fits), ("compile=True matches eager", compiled_fit),
         ("CUDA -> CPU save/load", save_load), ("WRN-40-2 fit images/s vs plain loop", wrn_throughput)]
for name, fn in STEPS:
    if SMOKE and name.startswith("compile"):
        continue  # compiling on a CPU without a C++ toolchain set up is not what is tested
    run_step(name, fn)
RESULTS["_meta"] = {"torch": torch.__version__, "smoke_on_cpu": SMOKE,
                    "device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu",
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "gpu_check.json"), "w") as f:
    json.dump(RESULTS, f, indent=1)
print(f"{len(FAILED)} failed: {FAILED}" if FAILED else "all GPU checks passed")
sys.exit(1 if FAILED else 0)
