"""Named machine profiles: what a worker node costs and how long it takes to take calls.

Prices are list prices written down by hand (Linux, us-east-1, per instance-hour), to be
checked against the provider's page before relying on them; nothing is fetched. Boot times
run from "asked for" to "its worker has registered with warm agent processes".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# 1 USD = 1,400 KRW: a round figure for 2025 (the rate moved between ~1,350 and ~1,480 that
# year). A parameter: `dragoman simulate --krw-per-usd`.
KRW_PER_USD = 1400.0

# Calls per vCPU in cloud-AI mode when nothing is measured (`--uncalibrated`, or no
# results/calibration): an old assumption. Normally slots per node = the calls per core that
# `bench density` measured (results/calibration/density.json) × vCPUs.
CALLS_PER_VCPU = 20


@dataclass(frozen=True)
class LocalAI:
    """The self-hosted pipeline (Whisper → MT → Piper on the node's inference service): what
    decides how many *local* calls a node takes. Whisper is the bottleneck, so capacity is
    talkers per vCPU over the vCPUs left once the node's fixed share is held back."""

    talkers_per_vcpu: float
    service_vcpus: float  # held back whatever the load: inference service, worker, Janus
    service_memory_gib: float  # the inference service's models, once per node
    call_memory_mb: float  # one local call process (its HTTP client to the service included)
    source: str

    def capacity(self, vcpus: int, talkers_per_vcpu: float | None = None) -> int:
        per = self.talkers_per_vcpu if talkers_per_vcpu is None else talkers_per_vcpu
        return max(1, math.floor(per * (vcpus - self.service_vcpus)))


# Measured by `dragoman bench capacity --provider local` (README, "Measured"): on the 2-vCPU
# development machine 2 simultaneous talkers kept the lag targets and 3 did not (1.0 per
# vCPU, the callers sharing those cores: a node that runs no callers may hold more). A
# larger node is assumed to scale with its cores, one vCPU held back for the inference
# service's scheduler/HTTP, the worker and Janus; its models (Whisper base int8 + Piper)
# measured RSS 348 MB, rounded up to 0.5 GiB; a local call USS 35.8 MB (README,
# "Measured"). `--local-per-core` overrides the talkers per vCPU.
LOCAL_WHISPER_BASE = LocalAI(
    talkers_per_vcpu=1.0,
    service_vcpus=1.0,
    service_memory_gib=0.5,
    call_memory_mb=35.8,
    source="bench capacity: 2 simultaneous talkers on 2 shared vCPUs (1.0 per vCPU); "
    "linear in cores on a larger node is an assumption",
)


@dataclass(frozen=True)
class MachineProfile:
    name: str
    instance: str
    vcpus: int
    usd_per_hour: float
    boot_s: tuple[float, float]  # uniform range, asked for → warm slots registered
    source: str
    memory_gib: float = 8.0  # the cloud-AI profiles are xlarge: 4 vCPU, 8 GiB
    local: LocalAI | None = None  # None: cloud-AI mode (the AI is a provider's, billed apart)

    @property
    def slots(self) -> int:
        return CALLS_PER_VCPU * self.vcpus

    @property
    def ai(self) -> str:
        return "cloud" if self.local is None else "local"


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
        # Self-hosted AI: c7i.4xlarge (16 vCPU = 8 cores × 2 threads, 32 GiB) on-demand
        # $0.714/h = 4 × c7i.xlarge (AWS on-demand list price, us-east-1, as it stood in
        # 2025; written down 2026-12-07, not fetched: check it). x86 because CTranslate2's
        # int8 kernels (faster-whisper) are the tuned path there, and the talkers/vCPU figure
        # was measured on x86. Same boot model as the cloud-AI nodes (warm pool, 30-45 s): the
        # models load from the pre-initialised disk within the worker's start.
        MachineProfile(
            "c7i-4xlarge-local",
            "c7i.4xlarge on-demand",
            16,
            0.714,
            (30.0, 45.0),
            "assumed: AWS on-demand list price as of 2025 (written 2026-12-07); warm pool ~30 s",
            memory_gib=32.0,
            local=LOCAL_WHISPER_BASE,
        ),
    )
}

# Not a profile: "worker pod on a spare node kept by placeholder pods" (deploy/k8s/
# placeholder.yaml; schedule + container start + pre-fork ≈ 5-15 s). One worker fills a node,
# so a spare node costs what a warm worker costs and takes calls 5-15 s later: in this model
# spare capacity is simply part of the floor, already warm.

DEFAULT_PROFILE = "c7g-warm-pool"
LOCAL_PROFILE = "c7i-4xlarge-local"
# `--profile cloud|local`: the default machine of each AI mode.
ALIASES = {"cloud": DEFAULT_PROFILE, "local": LOCAL_PROFILE}


def resolve(name: str) -> MachineProfile:
    name = ALIASES.get(name, name)
    if name not in PROFILES:
        known = ", ".join([*ALIASES, *PROFILES])
        raise ValueError(f"unknown profile {name!r}: {known}")
    return PROFILES[name]
