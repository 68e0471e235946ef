"""How a detector runs: precision, compilation, memory format, data loading, data parallelism.

:class:`Runtime` groups the settings of ``AOEDetector(runtime=...)`` that change the speed
and memory of ``fit`` and scoring but not what is computed (up to floating-point rounding,
and ``distributed`` up to the batch split). ``runtime=None`` is ``Runtime()``; each setting
is reachable as ``runtime__<name>`` (``set_params(runtime__amp="bf16")`` works on the
default too). See ``docs/scaling.md``.
"""

from __future__ import annotations


from sklearn.base import BaseEstimator

from ._compat import IntInterval, StrOptions

__all__ = ["Runtime"]


class Runtime(BaseEstimator):
    """The execution settings of :class:`~aoe_detect.AOEDetector` (``runtime=Runtime(...)``).

    Parameters
    ----------
    amp : False, "bf16", "fp16" or True, default=False
        Mixed precision: the training forward, the attack's forward and scoring run under
        ``torch.autocast`` with this dtype (``True``: bf16 where supported, else fp16);
        energies and losses are computed in float32 from the logits; fp16 training uses a
        gradient scaler and the attack scales its energy before the backward pass so the
        input gradient does not underflow. A change after ``fit`` applies to scoring at once.
    compile : bool or dict, default=False
        Run the training forward, the attack and scoring through ``torch.compile`` (a dict
        is passed as its keyword arguments). ``module_`` stays the plain module.
    channels_last : "auto" or bool, default="auto"
        Use the channels-last memory format for image backbones and batches. ``"auto"``:
        on CUDA only (where convolutions are faster with it).
    num_workers : int, default=0
        DataLoader worker processes that load Dataset inputs (``fit`` and scoring).
    distributed : "auto" or bool, default="auto"
        Data-parallel training over a ``torch.distributed`` process group (launch with
        ``torchrun``). ``"auto"``: when a group with several ranks is initialised or the
        process was launched by torchrun with ``WORLD_SIZE > 1``; ``True``: required
        (initialises the group from the torchrun environment if needed); ``False``: never.
        ``batch_size`` is then the global batch, sharded across the ranks; only rank 0
        shows progress and writes checkpoints. See :mod:`aoe_detect.distributed`.
    sync_batchnorm : "auto" or bool, default="auto"
        With several data-parallel ranks, BatchNorm uses the whole global batch's statistics
        (:class:`aoe_detect.distributed.SyncBatchNorm`) as one process would; ``False``: each
        rank its own shard (rank 0's running statistics kept). ``module_`` stays plain.

    Examples
    --------
    >>> from aoe_detect import AOEDetector
    >>> from aoe_detect.runtime import Runtime
    >>> AOEDetector(runtime=Runtime(amp="bf16")).set_params(runtime__num_workers=2).runtime
    Runtime(amp='bf16', num_workers=2)
    """

    _parameter_constraints = {
        "amp": [StrOptions({"bf16", "fp16"}), "boolean"],
        "compile": ["boolean", dict],
        "channels_last": [StrOptions({"auto"}), "boolean"],
        "num_workers": [IntInterval(0, None, closed="left")],
        "distributed": [StrOptions({"auto"}), "boolean"],
        "sync_batchnorm": [StrOptions({"auto"}), "boolean"],
    }

    def __init__(self, amp=False, compile=False, channels_last="auto", num_workers=0,
                 distributed="auto", sync_batchnorm="auto"):
        self.amp = amp
        self.compile = compile
        self.channels_last = channels_last
        self.num_workers = num_workers
        self.distributed = distributed
        self.sync_batchnorm = sync_batchnorm

