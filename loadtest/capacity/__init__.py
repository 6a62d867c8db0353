"""Capacity planning: the sizing model, its table and the measured rates it starts from."""

from loadtest.capacity.measured import measured_rates
from loadtest.capacity.model import (
    DEFAULT_RATES,
    Demand,
    Deployment,
    Plan,
    Rates,
    plan,
    province_scenarios,
)
from loadtest.capacity.table import PlanRow, format_table, plan_rows

__all__ = [
    "DEFAULT_RATES",
    "Demand",
    "Deployment",
    "Plan",
    "PlanRow",
    "Rates",
    "format_table",
    "measured_rates",
    "plan",
    "plan_rows",
    "province_scenarios",
]
