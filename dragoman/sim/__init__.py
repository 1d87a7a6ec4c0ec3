"""``dragoman simulate``: the fleet under a call trace, through the production dispatcher and
autoscale policy, with node boot times and prices as parameters (see engine.py)."""
