"""The paper-reproduction suite: does Adversarial Outlier Exposure deliver what the paper claims?

Lives in the source repository, not in the installed package. Run it from the repository
root::

    python -m benchmarks.paper --profile quick --threads 1
    python -m benchmarks.paper --profile full --data-root DIR --threads 1

The command line is :mod:`.cli` (``python -m benchmarks.paper --help``); the library's
``aoe-detect benchmark`` no longer runs the suite (issue 21). Modules, by concern:

- :mod:`.plan`: items, methods, OOD sets, profiles and the run plan;
- :mod:`.data`: the ID data, the fixed OOD test sets, user data;
- :mod:`.run`: training and evaluation (:func:`run_benchmark`);
- :mod:`.peers`: pytorch-ood's post-hoc detectors and the package's own scores;
- :mod:`.crosscheck`: item 8, metrics and loss against pytorch-ood;
- :mod:`.aggregate`: mean ± std over seeds, per item;
- :mod:`.verdicts`: the claim rules (:func:`_conclusions`) and the best-peer line;
- :mod:`.report`: Markdown and JSON (:func:`write_results`, :func:`rerender`);
- :mod:`.plots`: the figures (matplotlib, optional).

Library code never prints: progress goes to the ``log`` callable the caller passes.

References
----------
.. [1] T. Botschen, K. Kirchheim, F. Ortmeier. "Out-of-Distribution Detection with
   Adversarial Outlier Exposure." CVPR 2025 Workshops.
"""

try:  # the suite needs pytorch-ood (item 8 and the peer table): the bench extra
    import pytorch_ood  # noqa: F401
except ImportError as _exc:
    raise ImportError("the paper suite (benchmarks.paper) needs pytorch-ood: "
                      "pip install 'aoe-detect[bench]'") from _exc

from aoe_detect.demo import demo_table, run_demo  # noqa: E402

from .aggregate import _aggregate_runs, _items, _jsonable, _ms, _strip
from .crosscheck import _crosscheck
from .data import (_as_float_images, _finish_data, _sample_shape, _stratified, load_data,
                   load_user_data)
from .peers import PEER_LABELS, PEERS
from .plan import (_METHOD_ATTACK, _METRICS, EVAL_SEED, ITEMS, METHOD_ATTACK, METHODS, METRICS,
                   OOD_LABELS, OOD_SETS, PROFILES, SOURCE_LABELS, Profile, _eps_key, _hist_keys,
                   _label, _main_spec, _needed_sources, _spec, copy_profile, get_profile, plan)
from .report import _fmt, _load_scores, _save_scores, format_table, render_markdown, rerender, \
    write_results
from .run import (SmallCNNFactory, _adversarial, _attack_param, _backbone_for,
                  _convergence_chain, _detector, _draw_pool, _evaluate, _family_source,
                  _last_row, _meta, run_benchmark)
from .verdicts import (_compare, _conclusions, _per_seed_metric, _sets_worse, _verdict,
                       best_peer, conclusions, peer_comparison)

__all__ = ["Profile", "PROFILES", "ITEMS", "METHODS", "OOD_SETS", "OOD_LABELS", "SOURCE_LABELS",
           "EVAL_SEED", "PEERS", "get_profile", "copy_profile", "plan", "load_data",
           "load_user_data", "run_benchmark", "write_results", "rerender", "render_markdown",
           "format_table", "conclusions", "best_peer", "peer_comparison", "run_demo",
           "demo_table"]
