"""The random controls: the Sequential and FastV schedules with seeded random picks."""
from .base import Method, register_method

register_method(Method(
    "random", "stepwise", "random", "control: the sequential schedule with seeded random picks",
    defaults=dict(ratio=0.75, layer=2, step=0.1)))
register_method(Method(
    "random_oneshot", "oneshot", "random", "control: the FastV schedule with seeded random picks",
    defaults=dict(ratio=0.5, layer=2)))
