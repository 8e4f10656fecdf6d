"""The local AWS stack: moto's server, single-threaded, on 127.0.0.1.

moto's stock `moto_server` is threaded, and under CPU load it loses conditional
updates (seen here: 50 parallel conditional increments let 4 through instead of 3;
500 parallel ADDs came out 499). Serving requests one at a time makes every
DynamoDB condition exact, so the race tests mean what they say.

Usage: moto_server.py [--port N] [--port-file PATH]
Port 0 (the default) binds a free port; the chosen one is written to --port-file.
"""

import argparse
import os
import sys

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", args.port, app, threaded=False)
    port = server.server_port
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    print(f"moto: serving AWS on http://127.0.0.1:{port} (single-threaded)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
