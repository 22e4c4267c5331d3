"""A multi-node pod's entry point: wait until the rendezvous host resolves, then exec the
launcher (torchrun). Standard library only; runs before anything heavy is imported.

    python -m alpaca_jobs.backends.k8s_rendezvous HOST [--timeout S] -- COMMAND...

A cluster's DNS names a pod under a headless Service only once the pod exists (and, without
publishNotReadyAddresses, is Ready); torchrun fails at once on a name that does not resolve,
which would spend one of the Job's retries on a race. Kubeflow's PyTorchJob waits the same way
in an init container.
"""

from __future__ import annotations

import os
import socket
import sys
import time

DEFAULT_TIMEOUT_S = 600.0


def wait_for(host: str, timeout: float = DEFAULT_TIMEOUT_S, every: float = 1.0) -> str | None:
    """The host's address once it resolves; None after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError:
            if time.monotonic() >= end:
                return None
            time.sleep(every)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--" not in args or args.index("--") == 0 or args.index("--") == len(args) - 1:
        print("usage: python -m alpaca_jobs.backends.k8s_rendezvous HOST [--timeout S] -- COMMAND...",
              file=sys.stderr)
        return 2
    cut = args.index("--")
    head, command = args[:cut], args[cut + 1:]
    timeout = float(head[head.index("--timeout") + 1]) if "--timeout" in head else DEFAULT_TIMEOUT_S
    host = head[0]
    addr = wait_for(host, timeout)
    if addr is None:
        print(f"rendezvous host {host} did not resolve within {timeout:.0f} s: is pod 0 of the run "
              "running, and the run's headless Service there?", file=sys.stderr, flush=True)
        return 1
    print(f"rendezvous host {host} is {addr}; starting {command[0]}", file=sys.stderr, flush=True)
    if command[0] in ("python", "python3"):
        command = [sys.executable, *command[1:]]  # the interpreter this runs under (the image's)
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
