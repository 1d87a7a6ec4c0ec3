"""Named machine profiles: what a worker node costs and how long it takes to take calls.

Prices are list prices written down by hand (Linux, us-east-1, per instance-hour), to be
checked against the provider's page before relying on them; nothing is fetched. Boot times
run from "asked for" to "its worker has registered with warm agent processes".
"""

from __future__ import annotations

from dataclasses import dataclass

# 1 USD = 1,400 KRW: a round figure for 2025 (the rate moved between ~1,350 and ~1,480 that
# year). A parameter: `dragoman simulate --krw-per-usd`.
KRW_PER_USD = 1400.0

# Calls per vCPU in cloud-AI mode when nothing is measured (`--uncalibrated`, or no
# results/calibration): an old assumption. Normally slots per node = the calls per core that
# `bench density` measured (results/calibration/density.json) × vCPUs.
CALLS_PER_VCPU = 20


@dataclass(frozen=True)
class MachineProfile:
    name: str
    instance: str
    vcpus: int
    usd_per_hour: float
    boot_s: tuple[float, float]  # uniform range, asked for → warm slots registered
    source: str
    memory_gib: float = 8.0  # every profile here is an xlarge: 4 vCPU, 8 GiB

    @property
    def slots(self) -> int:
        return CALLS_PER_VCPU * self.vcpus


PROFILES: dict[str, MachineProfile] = {
    p.name: p
    for p in (
        # AWS c7g.xlarge (Graviton3, 4 vCPU, 8 GiB) on-demand $0.145/h (aws.amazon.com/ec2/
        # pricing/on-demand). EC2 Auto Scaling warm pool of stopped, pre-initialised instances:
        # start ~30 s (docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-warm-
        # pools.html), + ~5 s for the worker to import and pre-fork its agents. A stopped
        # instance bills only its EBS volume (not counted here).
        MachineProfile(
            "c7g-warm-pool",
            "c7g.xlarge on-demand",
            4,
            0.145,
            (30.0, 45.0),
            "AWS on-demand price list; EC2 warm pool start ~30 s",
        ),
        # The same machine launched from scratch: EC2 boot, container image pull, worker start
        # → 60-180 s in practice (the spread is the image pull and the AMI).
        MachineProfile(
            "c7g-cold",
            "c7g.xlarge on-demand",
            4,
            0.145,
            (60.0, 180.0),
            "AWS on-demand price list; new instance 60-180 s",
        ),
        # c7g.xlarge Spot: ~60 % below on-demand most of 2024-25 in us-east-1 (check
        # aws.amazon.com/ec2/spot/pricing; it moves). Warm pools do not take Spot instances,
        # so every node is a cold launch. A 2-minute interruption notice is not simulated.
        MachineProfile(
            "c7g-spot",
            "c7g.xlarge spot",
            4,
            0.058,
            (60.0, 180.0),
            "AWS Spot price history (~40 % of on-demand); cold launch 60-180 s",
        ),
        # x86 for comparison: c7i.xlarge (4 vCPU, 8 GiB) on-demand $0.1785/h, warm pool.
        MachineProfile(
            "c7i-warm-pool",
            "c7i.xlarge on-demand",
            4,
            0.1785,
            (30.0, 45.0),
            "AWS on-demand price list; EC2 warm pool start ~30 s",
        ),
    )
}

# Not a profile: "worker pod on a spare node kept by placeholder pods" (deploy/k8s/
# placeholder.yaml; schedule + container start + pre-fork ≈ 5-15 s). One worker fills a node,
# so a spare node costs what a warm worker costs and takes calls 5-15 s later: in this model
# spare capacity is simply part of the floor, already warm.

DEFAULT_PROFILE = "c7g-warm-pool"
