"""The local AWS stack: moto's server, single-threaded, on 127.0.0.1.

moto's stock `moto_server` is threaded, and under CPU load it loses conditional
updates (seen here: 50 parallel conditional increments let 4 through instead of 3;
500 parallel ADDs came out 499). Serving requests one at a time makes every
DynamoDB condition exact, so the race tests mean what they say. A cancelled
transaction rolls back the items it names rather than deep-copied tables (see
snapshot_transactions_by_item), and the AWSCURRENT label and moto's current version
move together (move_current_with_its_label).

Usage: moto_server.py [--host ADDRESS] [--port N] [--port-file PATH]
Port 0 (the default) binds a free port; the chosen one is written to --port-file.
--host is 127.0.0.1 but for `sam local` (local/sam-local.sh): its Lambda containers sit on
Docker's default bridge, where the host's 127.0.0.1 is not reachable, and the pinned SAM
CLI does not honour `--docker-network host`; the containers reach the host at the
bridge's gateway address (docker0, e.g. 172.17.0.1), the one exception to "127.0.0.1
only": the host's own address, on a network only local containers are attached to.
"""

import argparse
import os
import sys

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def snapshot_transactions_by_item() -> None:
    """Make a cancelled TransactWriteItems roll back the items it names, not whole tables.

    moto 5 backs up every table a transaction touches with copy.deepcopy (once per item)
    so it can restore it if the transaction is cancelled: O(table size) for every
    transaction, which turns a suite of tests sharing one server quadratic (seen here:
    160 concurrent sends with budgets took 400 s of moto CPU). The items a transaction
    names are all it can change, so snapshotting just those gives the same outcome, and
    the server is single-threaded, so nothing else writes in between.
    """
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    class TablesAreNotCopied:
        """moto's `copy` module, but deepcopy leaves a Table as it is."""

        def __getattr__(self, name):
            return getattr(copy, name)

        @staticmethod
        def deepcopy(value, memo=None):
            if isinstance(value, Table):
                return value
            return copy.deepcopy(value, memo)

    models.copy = TablesAreNotCopied()
    transact = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        saved = []
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                table = self.tables.get(op.get("TableName"))
                source = op.get("Key") or op.get("Item") or {}
                hash_key = DynamoType(source[table.hash_key_attr])
                range_key = (
                    DynamoType(source[table.range_key_attr]) if table.range_key_attr else None
                )
            except (AttributeError, KeyError, StopIteration, TypeError):
                continue  # moto itself rejects such an entry
            if range_key is None:
                current = table.items.get(hash_key)
            else:
                current = table.items.get(hash_key, {}).get(range_key)
            saved.append((table, hash_key, range_key, copy.deepcopy(current)))
        try:
            return transact(self, transact_items)
        except Exception:
            for table, hash_key, range_key, item in reversed(saved):
                if range_key is None:
                    if item is None:
                        table.items.pop(hash_key, None)
                    else:
                        table.items[hash_key] = item
                elif item is None:
                    table.items.get(hash_key, {}).pop(range_key, None)
                else:
                    table.items[hash_key][range_key] = item
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items


def move_current_with_its_label() -> None:
    """Keep moto's idea of the current secret version where the AWSCURRENT label is.

    moto 5.2.5's UpdateSecretVersionStage moves the AWSCURRENT label but not the secret's
    `default_version_id`, which PutSecretValue then relabels AWSPREVIOUS: after a rotation's
    finishSecret, a plain PutSecretValue (an emergency revocation, an operator's edit)
    leaves two versions labelled AWSCURRENT, and GetSecretValue may answer the older one.
    Secrets Manager has one AWSCURRENT version at any time (the label names it).
    """
    from moto.secretsmanager.models import SecretsManagerBackend

    original = SecretsManagerBackend.update_secret_version_stage

    def update_secret_version_stage(
        self, secret_id, version_stage, remove_from_version_id, move_to_version_id
    ):
        result = original(
            self, secret_id, version_stage, remove_from_version_id, move_to_version_id
        )
        if version_stage == "AWSCURRENT" and move_to_version_id:
            self.secrets[secret_id].default_version_id = move_to_version_id
        return result

    SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()

    snapshot_transactions_by_item()
    move_current_with_its_label()
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
