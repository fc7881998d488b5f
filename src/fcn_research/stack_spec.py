"""What the members of one stack may differ in: the one list that the grouping of a sweep's
jobs (``stacking.stack_key``), the stacked optimizers (``stacked_optim``) and the split and
join of a stack's checkpoint (``callbacks.checkpoint``) all read.

Members run the same sequence of operations and differ only in what changes the numbers: the
seed, the initializer and its parameters, the learning rate and the optimizer's numeric
hyperparameters. This module imports neither torch nor Lightning: the launcher plugin reads
it whenever ``python train.py`` starts, ``--help`` included.
"""

from __future__ import annotations

# Per optimizer with a stacked implementation (its ``_target_``), the keyword arguments that
# may take one value per member: the numeric ones. The stacked optimizer keeps each as a list.
MEMBER_OPTIMIZER_HPARAMS: dict[str, tuple[str, ...]] = {
    "torch.optim.SGD": ("lr", "momentum", "dampening", "weight_decay"),
    "torch.optim.Adam": ("lr", "betas", "eps", "weight_decay"),
    "torch.optim.AdamW": ("lr", "betas", "eps", "weight_decay"),
}
STACKED_OPTIMIZERS = tuple(MEMBER_OPTIMIZER_HPARAMS)
# Every param-group entry that some stacked optimizer keeps as one value per member.
OPTIMIZER_MEMBER_LISTS = tuple(
    dict.fromkeys(key for keys in MEMBER_OPTIMIZER_HPARAMS.values() for key in keys)
)

# The config keys members of one stack may differ in (dotted; a group stands for its node).
MEMBER_KEYS = (
    "seed",
    "lr",
    "initializer",
    *(f"optimizer.{key}" for key in OPTIMIZER_MEMBER_LISTS),
    "callbacks.theory.initializer",  # the theory instrument reads the member's own initializer
)

# A stack's checkpoint entries that hold one value per member, split and joined with them:
# the module's lists (``FCNModule.on_save_checkpoint``) ...
CHECKPOINT_MEMBER_LISTS = ("members_diverged", "members_stopped_at", "members_stopped_metrics")
# ... and the instruments' state (their step-0 values, histogram ranges per tag, the last
# gradient norms of the activations' parameters).
CALLBACK_MEMBER_STATE = ("init_metrics", "hist_ranges", "last_grad_norms")
# Per member, one entry of a callback's state that a single run's callback keeps as one value
# (Lightning's EarlyStopping's: ``callbacks.early_stopping.MemberEarlyStopping`` keeps a list
# in a stack): a member's part holds its own value, as its solo run's checkpoint does.
CALLBACK_MEMBER_SCALARS = (
    "wait_count",
    "stopped_epoch",
    "best_score",
    "stopping_reason",
    "stopping_reason_message",
)
