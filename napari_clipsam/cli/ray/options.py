"""The ``--ray`` options of ``segment`` and ``eval`` (no Ray import: ``--help`` stays fast)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import InvalidInputError

DEFAULT_RETRIES = 3
LOCAL = ("", "local")


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cluster (with --ray; docs/cluster.md)")
    g.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on a Ray cluster: 'auto' (the cluster this machine belongs to), 'ray://HOST:10001' "
                        "(Ray Client), HOST:PORT (its GCS), or nothing / 'local' for a local Ray started for the "
                        "job (loopback only, no dashboard, no usage statistics). Give it after the inputs, or "
                        "as --ray=ADDRESS")
    g.add_argument("--ray-actors", type=int, metavar="N",
                   help="engine actors, each loading the models once (default: one per GPU of the cluster; "
                        "without GPUs, its CPUs divided by --ray-cpus-per-actor)")
    g.add_argument("--ray-cpus-per-actor", type=int, metavar="N",
                   help="CPUs each actor reserves and uses as torch threads (default: 1 on GPU actors; on CPU "
                        "actors 4, or fewer when no node has 4)")
    g.add_argument("--ray-batch-size", type=int, metavar="N",
                   help="images per actor call, encoded together on a GPU (default: 4 on GPU actors, 1 on CPU)")
    g.add_argument("--ray-retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                   help=f"times a call is retried when its actor is lost (the actor is restarted by Ray; "
                        f"default: {DEFAULT_RETRIES}); after that its images are reported as failed")


def check_ray_options(args: argparse.Namespace) -> None:
    """Refuse nonsense before anything starts (InvalidInputError naming the option)."""
    address = args.ray
    if address is not None and address not in LOCAL and address != "auto" and not address.startswith("ray://") \
            and Path(address).exists():
        raise InvalidInputError(f"--ray {address}: that is a file or folder, not a Ray address; give --ray after "
                                "the inputs, or write --ray=local (or --ray=auto, --ray=ray://HOST:10001).")
    for name in ("ray_actors", "ray_cpus_per_actor", "ray_batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
    if args.ray_retries < 0:
        raise InvalidInputError(f"--ray-retries must be 0 or more, got {args.ray_retries}.")
