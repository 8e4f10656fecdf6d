"""The local AWS stack of moto_server.py, bound to the Docker bridge's host address.

For `sam local invoke` and `sam local start-api` only (local/sam-local.sh): their Lambda
containers sit on Docker's default bridge network, where the host's 127.0.0.1 is not
reachable, and the pinned SAM CLI does not honour `--docker-network host` (it leaves the
container on the bridge). The containers reach the host at the bridge's gateway address
(docker0, e.g. 172.17.0.1), so moto listens there: the one exception to "127.0.0.1 only".
The address is the host's own, on a network only local containers are attached to.
Same server as moto_server.py: single-threaded, transactions snapshotted per item.

Usage: moto_bridge.py --host ADDRESS [--port N] [--port-file PATH]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

import moto_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()

    moto_server.snapshot_transactions_by_item()
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(args.host, args.port, app, threaded=False)
    port = server.server_port
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    print(f"moto: serving AWS on http://{args.host}:{port} (single-threaded)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
