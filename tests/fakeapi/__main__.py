"""Run the fake API server standalone, for e2e harnesses and `make e2e-local`:

    python -m tests.fakeapi --port 8001 --kubeconfig /tmp/fake.kubeconfig --node node-a

It prints the URL, writes the kubeconfig (with the bearer token), seeds the given Nodes and
serves until SIGINT/SIGTERM. With --tls it serves HTTPS with a throw-away self-signed
certificate (written into the kubeconfig): needed for kubectl, which sends the token only over TLS.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.fakeapi.server import NODES, FakeApiServer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeapi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing here to this path")
    parser.add_argument("--token", default="fake-token", help="bearer token ('' disables auth)")
    parser.add_argument("--tls", action="store_true",
                        help="serve HTTPS (self-signed); kubectl sends the token only over TLS")
    parser.add_argument("--bookmark-interval", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--node", action="append", default=[], metavar="NAME",
                        help="create a Node (label kubernetes.io/hostname=NAME); repeatable")
    args = parser.parse_args(argv)

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    server = FakeApiServer(token=args.token or None, bookmark_interval_s=args.bookmark_interval,
                           host=args.host, port=args.port, tls=args.tls)
    url = server.start()
    for name in args.node:
        server.put_object(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": {"kubernetes.io/hostname": name}}})
    if args.kubeconfig:
        server.kubeconfig(args.kubeconfig)
    print(url, flush=True)  # only now: the harness may signal us as soon as it reads this
    while not done.wait(0.5):  # short waits keep signal handling prompt
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
