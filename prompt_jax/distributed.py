"""Multi-process jobs on JAX's own multi-controller runtime (`jax.distributed`).

A job on several hosts (Cloud TPU VM workers, GPU machines) runs one process per host, each
running the same command. `initialize` connects them before anything touches a device; from
then on the same code runs as on one CPU: the mesh spans every process's devices, each process
builds the same global batches and feeds only its own rows (`partitioning.shard_batch`), each
reads only its own devices' shards of the frozen model (`models.assemble`), and orbax saves
checkpoints collectively. Only the primary process (0) writes files and logs: config, metrics,
TensorBoard events, progress bars, prompts and summaries (`is_primary`).

A process that dies takes the job down: JAX's coordination service stops every process whose
peer has sent no heartbeat for `heartbeat_timeout` seconds, so the job fails in bounded time
instead of waiting in a collective forever; `--resume` then continues from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os

import jax

# The environment variables `from_environment` reads (JAX itself reads the first).
ENVIRONMENT = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
               "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-process job (all unset: a single-process job).

    Attributes:
      coordinator_address: "host:port" of process 0, where it serves the coordination service.
      num_processes: processes in the job.
      process_id: this process's index, 0 .. num_processes - 1.
      auto: let JAX detect the three above (Cloud TPU VMs, Slurm, Open MPI, Kubernetes).
      initialization_timeout: seconds to wait for every process to join.
      heartbeat_timeout: seconds without a heartbeat after which a process counts as dead and
        the whole job stops.
      shutdown_timeout: seconds a finishing process waits for the others to finish too.
    """

    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1
    auto: bool = False
    initialization_timeout: int = 300
    heartbeat_timeout: int = 100
    shutdown_timeout: int = 300

    @property
    def requested(self) -> bool:
        """Whether this names a multi-process job at all."""
        return self.auto or bool(self.coordinator_address or self.num_processes
                                 or self.process_id >= 0)


def from_environment(config: DistributedConfig = DistributedConfig(),
                     environ: dict[str, str] | None = None) -> DistributedConfig:
    """`config` with its unset coordinator, process count and id taken from the environment
    (`ENVIRONMENT`): flags win over the environment."""
    environ = os.environ if environ is None else environ
    values = {}
    if not config.coordinator_address and environ.get(ENVIRONMENT["coordinator_address"]):
        values["coordinator_address"] = environ[ENVIRONMENT["coordinator_address"]]
    for name, unset in (("num_processes", 0), ("process_id", -1)):
        text = environ.get(ENVIRONMENT[name], "")
        if getattr(config, name) == unset and text:
            try:
                values[name] = int(text)
            except ValueError:
                raise ValueError(f"{ENVIRONMENT[name]}={text!r} is not an integer") from None
    return dataclasses.replace(config, **values)


def initialize(config: DistributedConfig) -> bool:
    """Joins the multi-process job `config` (completed from the environment) names, if any.

    Call it before anything touches a device. Without `auto`, the coordinator, the process
    count and this process's id must all be given.

    Returns:
      Whether a multi-process job was joined (False: a single-process job, nothing done).

    Raises:
      ValueError: only some of coordinator, count and id are given, or they disagree.
    """
    config = from_environment(config)
    if not config.requested:
        return False
    given = {"--coordinator_address": bool(config.coordinator_address),
             "--num_processes": config.num_processes > 0, "--process_id": config.process_id >= 0}
    if not config.auto and not all(given.values()):
        missing = ", ".join(flag for flag, ok in given.items() if not ok)
        raise ValueError(f"a multi-process job needs --coordinator_address, --num_processes and "
                         f"--process_id together (or --distributed, to let JAX detect them on "
                         f"Cloud TPU VMs, Slurm or Open MPI); missing: {missing}")
    if config.process_id >= 0 and config.num_processes and not (
            config.process_id < config.num_processes):
        raise ValueError(f"process id {config.process_id} is not below the process count "
                         f"{config.num_processes}")
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address or None,
        num_processes=config.num_processes or None,
        process_id=config.process_id if config.process_id >= 0 else None,
        initialization_timeout=config.initialization_timeout,
        heartbeat_timeout_seconds=config.heartbeat_timeout,
        shutdown_timeout_seconds=config.shutdown_timeout,
    )
    return True


def is_primary() -> bool:
    """Whether this is the process that writes files and logs (process 0; the only process of
    a single-process job)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (nothing to wait for alone)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
