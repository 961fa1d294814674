"""The cost limit of a search, kept outside the space (as NNI's hub spaces do): `BudgetedSpace` is the
SST space plus one NNI ExpressionConstraint, `cost(sample) <= limit`, over the space's own labels, so NNI's
strategies never propose a subnet over budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._nni import ExpressionConstraint, FlopsParamsProfiler, current_model
from ..cost.latency import load_table_for
from ..space.config import Choices, SpaceConfig
from ..space.model import SSTSpace


@dataclass(frozen=True)
class Budget:
    """A latency budget (ms, predicted by a latency table) or a FLOPs budget (G multiply-adds)."""

    gflops: float | None = None
    latency_ms: float | None = None
    table: str | None = None  # latency table (name or path), needed with latency_ms
    allow_foreign_table: bool = False
    target: str | None = None  # the target the table must describe (None: the one it names)


def budget_constraint(space: SSTSpace, config: SpaceConfig, budget: Budget,
                      restriction: Choices | None = None) -> Any:
    """`cost(sample) <= limit` as an NNI ExpressionConstraint over the space's own labels."""
    if budget.latency_ms is not None:
        if budget.table is None:
            raise ValueError("a latency budget needs a latency table")
        table = load_table_for(budget.table, config, budget.target, budget.allow_foreign_table)
        # The table's rows are per stage; a layer may allow fewer ops (layer_ops): narrow to the space's
        # (and structure labels to the space's values, in its order).
        layers = {k: v for k, v in config.choices().items() if k.endswith(("_op", "_structure"))}
        expr = table.expression(restriction={**layers, **dict(restriction or {})}) <= budget.latency_ms
        return ExpressionConstraint(expr, label="latency_budget")
    if budget.gflops is not None:
        flops = FlopsParamsProfiler(space, torch.zeros(config.input_shape(1))).flops_result.flops
        return ExpressionConstraint(flops <= budget.gflops * 1e9, label="flops_budget")
    raise ValueError("a budget needs gflops or latency_ms")


class BudgetedSpace(SSTSpace):
    """The (restricted) SST space with the budget's constraint. NNI rebuilds it in each trial from these
    arguments; a trial's rebuild (current_model() set) does not add the constraint again."""

    def __init__(self, config: SpaceConfig, restriction: Choices | None = None, budget: Budget | None = None):
        super().__init__(config, restriction)
        if budget is not None and current_model() is None:
            self.add_mutable(budget_constraint(self, config, budget, restriction))
