"""The ``qfs`` command line: every client command, each a call of the HTTP API through
peer.client.api_client.

``qfs peer`` (the node), ``qfs tui`` and ``qfs demo`` (the file manager) run more than a client;
they come in as `Programs` from the ``qfs`` program itself (peer.main), so this module imports
nothing of the node or the TUI (and ``qfs put`` loads neither Twisted nor Textual).

Exit status: 0 success; 1 the peer refused the request (any HTTP error, a conflict) or a
local file could not be read or written; 2 usage error (bad arguments, bad configuration);
3 no valid answer from the peer (unreachable, timeout, connection lost, corrupt data);
130 interrupted. Failures print one line on stderr, ``qfs: error: ...``; only a conflict adds
the siblings and how to resolve them.

Everything a peer sends is printed through `printable`: a member name, a file name or an error
detail carrying terminal escape sequences shows them as ``\x1b`` escapes (``--json`` output is
JSON, whose strings escape them anyway). The token comes from ``QFS_TOKEN`` or ``--token-file``;
``--token`` works but warns, as every local user sees a command line in ``ps``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TextIO

from peer.client.api_client import (
    DEFAULT_PEER,
    Client,
    Conflict,
    QfsError,
    format_mode,
    normalize_path,
    printable,
)
from peer.client.progress import transfer_progress, tree_progress

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
PROGRAM_COMMANDS = frozenset({"peer", "tui", "demo", "cluster"})
"""Commands that need `Programs`: they run a node, the file manager or the cluster setup."""
CONFIG_ENV = "QFS_CONFIG"
DEMO_CLIENT_CONFIG = Path("data") / "cluster" / "client.toml"
"""Read when $QFS_CONFIG is not set: the file `qfs demo` writes for its cluster."""

Handler = Callable[[Client, argparse.Namespace], int]


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line naming the help to read."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"qfs: error: {message} (see '{self.prog} --help')\n")


class _UsageError(Exception):
    """Arguments that parse but make no sense together; reported as a usage error."""


def fail(message: str) -> None:
    """Print the one-line error every failed command ends with."""
    print(f"qfs: error: {printable(message)}", file=sys.stderr)


# Argument types: raising ArgumentTypeError makes argparse report a usage error.


def _remote(value: str) -> str:
    """A remote path, checked but kept as typed (a trailing slash means "into this dir")."""
    try:
        normalize_path(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _mode(value: str) -> str:
    try:
        return format_mode(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _owner_group(value: str) -> tuple[str | None, str | None]:
    """``USER``, ``USER:GROUP`` or ``:GROUP``."""
    owner, _, group = value.partition(":")
    if not owner and not group:
        raise argparse.ArgumentTypeError(f"bad owner {value!r}: expected USER[:GROUP]")
    return owner or None, group or None


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return int(value)


# Output helpers


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Collection[int] = (),
    file: TextIO | None = None,
    indent: str = "",
) -> None:
    """Rows under a header as aligned columns; columns in ``right`` are right-aligned."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print(indent + "  ".join(cells).rstrip(), file=file)


def _text(value: Any) -> str:
    """A JSON value for a table cell: ``-`` for missing, lists joined with commas, escaped."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return printable(",".join(str(v) for v in value)) or "-"
    return printable(value)


def _time(value: Any) -> str:
    """An mtime (seconds since the epoch, or already a string) in local time."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return _text(value)


def _mode_text(entry: dict[str, Any]) -> str:
    """``drwxr-x---`` style permissions of a listing entry, ``-`` when it carries no mode."""
    try:
        bits = int(entry["mode"], 8)
    except (KeyError, TypeError, ValueError):
        return "-"
    kind = stat.S_IFDIR if entry.get("type") == "dir" else stat.S_IFREG
    return stat.filemode(kind | bits)


# Client commands


def _cmd_put(client: Client, args: argparse.Namespace) -> int:
    remote = args.remote
    if remote.endswith("/"):
        if args.local == "-":
            raise _UsageError("put from stdin needs a remote file name, not a directory")
        remote += os.path.basename(args.local)
    with contextlib.ExitStack() as stack:
        if args.local == "-":
            source: BinaryIO = sys.stdin.buffer
            mode = args.mode
        else:
            source = stack.enter_context(open(args.local, "rb"))
            local_mode = stat.S_IMODE(os.fstat(source.fileno()).st_mode)
            mode = args.mode if args.mode is not None else local_mode
        bar = stack.enter_context(transfer_progress(f"put {remote}"))
        result = client.put(remote, source, mode=mode, version=args.version, w=args.w, progress=bar)
    if args.json:
        _print_json(result)
    else:
        path, size, version = (_text(result.get(k)) for k in ("path", "size", "version"))
        print(f"{path}: {size} bytes, version {version}")
    return EXIT_OK


def _cmd_get(client: Client, args: argparse.Namespace) -> int:
    name = os.path.basename(normalize_path(args.remote))
    if not name:
        raise _UsageError("REMOTE must name a file, not /")
    if args.local == "-":
        with transfer_progress(f"get {args.remote}") as bar:
            client.get(args.remote, sys.stdout.buffer, version=args.version, r=args.r, progress=bar)
        sys.stdout.buffer.flush()
        return EXIT_OK
    dest = args.local or name
    if os.path.isdir(dest):
        dest = os.path.join(dest, name)
    # Download next to the destination, then rename: a failed or conflicted read leaves any
    # existing file untouched and no partial one behind.
    folder, base = os.path.split(dest)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{base}.", suffix=".part")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, dest) from None  # name dest, not the temp file
    try:
        with os.fdopen(fd, "wb") as sink, transfer_progress(f"get {args.remote}") as bar:
            info = client.get(args.remote, sink, version=args.version, r=args.r, progress=bar)
        os.chmod(tmp, info.mode if info.mode is not None else _default_mode(dest))
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return EXIT_OK


def _default_mode(path: str) -> int:
    """The mode a download gets when the peer sends none: the file's own if it exists, else
    what a new file gets under the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _cmd_ls(client: Client, args: argparse.Namespace) -> int:
    listing = client.list_dir(args.dir)
    if args.json:
        _print_json(listing)
        return EXIT_OK
    entries = sorted(listing["entries"], key=lambda e: str(e.get("name", "")))
    names = [str(e.get("name", "?")) + ("/" if e.get("type") == "dir" else "") for e in entries]
    if not args.long:
        for name in names:
            print(printable(name))
        return EXIT_OK
    rows = [
        [
            _mode_text(e),
            _text(e.get("owner")),
            _text(e.get("group")),
            _text(e.get("size")),
            _time(e.get("mtime")),
            name,
        ]
        for e, name in zip(entries, names, strict=True)
    ]
    if rows:
        _table(["MODE", "OWNER", "GROUP", "SIZE", "MTIME", "NAME"], rows, right={3})
    return EXIT_OK


def _cmd_rm(client: Client, args: argparse.Namespace) -> int:
    client.rm(args.remote)
    return EXIT_OK


def _cmd_stat(client: Client, args: argparse.Namespace) -> int:
    info = client.stat(args.remote)
    if args.json:
        _print_json(info)
        return EXIT_OK
    for key, value in info.items():
        if key == "blocks":
            continue
        print(f"{printable(key) + ':':10} {_time(value) if key == 'mtime' else _text(value)}")
    blocks = info.get("blocks") or []
    if blocks:
        print(f"{'blocks:':10} {len(blocks)}")
        rows = [[_text(b.get(k)) for k in ("hash", "size", "holders")] for b in blocks]
        _table(["HASH", "SIZE", "HOLDERS"], rows, right={1}, indent="  ")
    return EXIT_OK


def _cmd_members(client: Client, args: argparse.Namespace) -> int:
    cluster = client.cluster()
    if args.json:
        _print_json(cluster)
        return EXIT_OK
    me = cluster.get("self")
    rows = [
        [_text(m.get(k)) for k in ("name", "state", "incarnation", "addr", "http")]
        + ["self" if m.get("name") == me else ""]
        for m in cluster.get("members", [])
    ]
    _table(["NAME", "STATE", "INCARNATION", "ADDR", "HTTP", ""], rows, right={2})
    config = cluster.get("config") or {}
    if config:
        print(
            f"replicas N={_text(config.get('n'))}, read quorum R={_text(config.get('r'))}, "
            f"write quorum W={_text(config.get('w'))}, block size {_text(config.get('block_size'))}"
        )
    return EXIT_OK


def _cmd_mkdir(client: Client, args: argparse.Namespace) -> int:
    client.mkdir(args.dir, parents=args.parents)
    return EXIT_OK


def _cmd_rmdir(client: Client, args: argparse.Namespace) -> int:
    client.rmdir(args.dir, recursive=args.recursive)
    return EXIT_OK


TRANSFER_VERBS = {"mv": "move", "cp": "copy"}


def _cmd_transfer(client: Client, args: argparse.Namespace) -> int:
    """`mv` and `cp`: one request; a large directory shows files arriving (on a terminal)."""
    verb = TRANSFER_VERBS[args.command]
    transfer = getattr(client, verb)
    result = tree_progress(
        client,
        f"{verb} {args.src}",
        args.src,
        args.dst,
        lambda: transfer(args.src, args.dst, overwrite=args.force),
    )
    if args.json:
        _print_json(result)
    return EXIT_OK


def _cmd_chmod(client: Client, args: argparse.Namespace) -> int:
    result = client.chmod(args.path, args.mode)
    if args.json:
        _print_json(result)
    return EXIT_OK


def _cmd_chown(client: Client, args: argparse.Namespace) -> int:
    owner, group = args.owner
    result = client.chown(args.path, owner, group)
    if args.json:
        _print_json(result)
    return EXIT_OK


def _cmd_token_create(client: Client, args: argparse.Namespace) -> int:
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    result = client.token_create(args.user, groups, admin=args.admin)
    if args.json:
        _print_json(result)
        return EXIT_OK
    # The secret alone on stdout, so that `export QFS_TOKEN=$(qfs token create bob)` works.
    print(printable(result["token"]))
    print(
        f"qfs: token {_text(result.get('id'))} for {_text(result.get('user'))}: "
        "it is shown only this once",
        file=sys.stderr,
    )
    return EXIT_OK


def _cmd_token_list(client: Client, args: argparse.Namespace) -> int:
    tokens = client.token_list()
    if args.json:
        _print_json({"tokens": tokens})
        return EXIT_OK
    rows = [
        [
            _text(t.get("id")),
            _text(t.get("user")),
            _text(t.get("groups")),
            "yes" if t.get("admin") else "no",
        ]
        for t in tokens
    ]
    _table(["ID", "USER", "GROUPS", "ADMIN"], rows)
    return EXIT_OK


def _cmd_token_revoke(client: Client, args: argparse.Namespace) -> int:
    client.token_revoke(args.id)
    return EXIT_OK


def _cmd_s3_key_create(client: Client, args: argparse.Namespace) -> int:
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    result = client.s3_key_create(args.user, groups)
    if args.json:
        _print_json({k: result[k] for k in ("access_key_id", "secret_access_key") if k in result})
        return EXIT_OK
    print(f"access key id:     {result['access_key_id']}")
    print(f"secret access key: {result['secret_access_key']}")
    user = result.get("user")
    print(f"qfs: S3 key for {user}: the secret is shown only this once", file=sys.stderr)
    return EXIT_OK


def _cmd_s3_key_list(client: Client, args: argparse.Namespace) -> int:
    keys = client.s3_key_list()
    if args.json:
        _print_json({"keys": keys})
        return EXIT_OK
    rows = [[_text(k.get("id")), _text(k.get("user")), _text(k.get("groups"))] for k in keys]
    _table(["ACCESS KEY ID", "USER", "GROUPS"], rows)
    return EXIT_OK


def _cmd_s3_key_revoke(client: Client, args: argparse.Namespace) -> int:
    client.s3_key_revoke(args.id)
    return EXIT_OK


def _cmd_whoami(client: Client, args: argparse.Namespace) -> int:
    me = client.whoami()
    if args.json:
        _print_json(me)
        return EXIT_OK
    groups = printable(", ".join(str(g) for g in me.get("groups") or [])) or "none"
    print(f"{_text(me.get('user'))} (groups: {groups}{'; admin' if me.get('admin') else ''})")
    return EXIT_OK


@dataclass(frozen=True)
class Programs:
    """The commands that run more than a client, supplied by the ``qfs`` program (peer.main)."""

    run_peer: Callable[[list[str]], int]
    """``qfs peer ARGS``: run a node with these flags until SIGTERM."""
    open_ui: Callable[[Client], int]
    """Open the terminal file manager on a client (``qfs tui``, ``qfs demo``)."""
    run_cluster: Callable[[list[str]], int]
    """``qfs cluster ARGS``: make a secure cluster's CA, keys and certificates."""


def _cmd_tui(client: Client, args: argparse.Namespace) -> int:
    return args.programs.open_ui(client)


def _run_demo(args: argparse.Namespace) -> int:
    from peer.client.demo import run_demo

    return run_demo(args, args.programs.open_ui, args.programs.run_cluster)


# The parser


def build_parser() -> argparse.ArgumentParser:
    """The ``qfs`` parser; each client command's namespace has ``handler`` set."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a value given before or after the command both count; main fills the default.
    common.add_argument(
        "--peer",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"peer to talk to (default: $QFS_PEER, else {DEFAULT_PEER})",
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="bearer token: shows in ps to every local user, prefer $QFS_TOKEN or --token-file",
    )
    common.add_argument(
        "--token-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="file holding the bearer token, private to you (chmod 600)",
    )
    common.add_argument(
        "--ca",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the cluster CA certificate that https:// peers must be signed by (default: $QFS_CA)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the server's JSON")

    parser = UsageParser(
        prog="qfs", parents=[common], description="quorumfs: a leaderless peer-to-peer file store."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler | None, help: str, json_out: bool = False):
        parents = [common, as_json] if json_out else [common]
        sub = commands.add_parser(name, parents=parents, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    p = command("put", _cmd_put, "store a local file (- for stdin)", json_out=True)
    p.add_argument("local", metavar="LOCAL")
    p.add_argument(
        "remote", metavar="REMOTE", type=_remote, help="remote path (DIR/ keeps the name)"
    )
    p.add_argument("--mode", type=_mode, help="octal mode such as 0644 (default: the local file's)")
    p.add_argument(
        "--version", metavar="CTX", help="version context of a read (resolves conflicts)"
    )
    p.add_argument("-w", type=_positive, metavar="W", help="write quorum for this request")

    p = command("get", _cmd_get, "fetch a file (to LOCAL, into a dir, or - for stdout)")
    p.add_argument("remote", metavar="REMOTE", type=_remote)
    p.add_argument("local", metavar="LOCAL", nargs="?", help="default: the remote file's name")
    p.add_argument("--version", metavar="V", help="read this one version of a conflicted file")
    p.add_argument("-r", type=_positive, metavar="R", help="read quorum for this request")

    p = command("ls", _cmd_ls, "list a directory", json_out=True)
    p.add_argument("dir", metavar="DIR", nargs="?", default="/", type=_remote)
    p.add_argument("-l", dest="long", action="store_true", help="long listing")

    p = command("rm", _cmd_rm, "delete a file")
    p.add_argument("remote", metavar="REMOTE", type=_remote)

    p = command("stat", _cmd_stat, "show a file's metadata and where its blocks are", json_out=True)
    p.add_argument("remote", metavar="REMOTE", type=_remote)

    command("members", _cmd_members, "show the cluster members", json_out=True)

    p = command("mkdir", _cmd_mkdir, "create a directory")
    p.add_argument("dir", metavar="DIR", type=_remote)
    p.add_argument("-p", dest="parents", action="store_true", help="create missing parents too")

    p = command("rmdir", _cmd_rmdir, "remove a directory")
    p.add_argument("dir", metavar="DIR", type=_remote)
    p.add_argument("-r", dest="recursive", action="store_true", help="with everything in it")

    for name, verb in TRANSFER_VERBS.items():
        p = command(name, _cmd_transfer, f"{verb} a file or directory", json_out=True)
        p.add_argument("src", metavar="SRC", type=_remote)
        p.add_argument("dst", metavar="DST", type=_remote)
        p.add_argument("-f", dest="force", action="store_true", help="overwrite DST if it exists")

    p = command("chmod", _cmd_chmod, "set the mode of a path", json_out=True)
    p.add_argument("mode", metavar="MODE", type=_mode, help="octal, such as 0640")
    p.add_argument("path", metavar="PATH", type=_remote)

    p = command("chown", _cmd_chown, "set the owner and/or group of a path", json_out=True)
    p.add_argument("owner", metavar="USER[:GROUP]", type=_owner_group)
    p.add_argument("path", metavar="PATH", type=_remote)

    p = command("token", None, "manage access tokens (admin only)")
    tokens = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    t = tokens.add_parser("create", parents=[common, as_json], help="create a token for a user")
    t.set_defaults(handler=_cmd_token_create)
    t.add_argument("user", metavar="USER")
    t.add_argument("--groups", default="", metavar="G,...", help="comma-separated groups")
    t.add_argument("--admin", action="store_true", help="make the user an admin")
    t = tokens.add_parser("list", parents=[common, as_json], help="list tokens (never secrets)")
    t.set_defaults(handler=_cmd_token_list)
    t = tokens.add_parser("revoke", parents=[common], help="revoke a token")
    t.set_defaults(handler=_cmd_token_revoke)
    t.add_argument("id", metavar="ID")

    p = command("s3", None, "manage S3 credentials (admin only)")
    s3 = p.add_subparsers(dest="s3_command", metavar="WHAT", required=True)
    k = s3.add_parser("key", help="S3 access keys")
    keys = k.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    t = keys.add_parser("create", parents=[common, as_json], help="create an S3 key for a user")
    t.set_defaults(handler=_cmd_s3_key_create)
    t.add_argument("user", metavar="USER")
    t.add_argument("--groups", default="", metavar="G,...", help="comma-separated groups")
    t = keys.add_parser("list", parents=[common, as_json], help="list S3 keys (never secrets)")
    t.set_defaults(handler=_cmd_s3_key_list)
    t = keys.add_parser("revoke", parents=[common], help="revoke an S3 key")
    t.set_defaults(handler=_cmd_s3_key_revoke)
    t.add_argument("id", metavar="ID")

    command("whoami", _cmd_whoami, "show who the token is", json_out=True)
    command("tui", _cmd_tui, "open the terminal file manager")

    p = command("demo", None, "start the Procfile's peers, open the file manager, stop them")
    p.add_argument("--procfile", metavar="PATH", default="Procfile")
    p.add_argument("--headless", action="store_true", help="start the peers without the TUI")
    p.add_argument(
        "--init", action="store_true", help="only create the demo cluster's TLS folder, then exit"
    )

    # Listed for --help only: main hands everything after `peer` to Programs.run_peer (and
    # after `cluster` to Programs.run_cluster).
    commands.add_parser("peer", add_help=False, help="run a peer (see 'qfs peer --help')")
    commands.add_parser(
        "cluster",
        add_help=False,
        help="create a cluster's CA, keys and certificates (see 'qfs cluster --help')",
    )
    return parser


def main(argv: Sequence[str] | None = None, programs: Programs | None = None) -> int:
    """Run one ``qfs`` command; returns the exit status. Without `programs` only the client
    commands run (the ``qfs`` console script is peer.main, which supplies them)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv, programs)
    except SystemExit as exc:  # argparse's --help and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE if exc.code else EXIT_OK
    except KeyboardInterrupt:
        fail("interrupted")
        return EXIT_INTERRUPTED


def _main(argv: list[str], programs: Programs | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in PROGRAM_COMMANDS and programs is None:
        fail(f"'qfs {args.command}' runs only from the qfs program (python -m peer.main)")
        return EXIT_USAGE
    args.programs = programs
    if args.command == "peer":
        return programs.run_peer(extra)
    if args.command == "cluster":
        return programs.run_cluster(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "demo":
        return _run_demo(args)
    try:
        file = _client_config()
        token = _token(args)
    except (ValueError, _UsageError) as exc:
        fail(str(exc))
        return EXIT_USAGE
    args.peer = getattr(args, "peer", None) or os.environ.get("QFS_PEER") or file.get("peer")
    args.peer = args.peer or DEFAULT_PEER
    args.token = token or file.get("token")
    args.ca = getattr(args, "ca", None) or os.environ.get("QFS_CA") or file.get("ca")
    try:
        client = Client(args.peer, args.token or None, ca=args.ca)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        with client:
            return args.handler(client, args)
    except Conflict as exc:
        _report_conflict(exc)
        return EXIT_ERROR
    except QfsError as exc:
        fail(str(exc) + _hint(exc, args))
        return EXIT_UNREACHABLE if exc.status is None else EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`qfs get F - | head`): stop quietly, and keep Python from
        # complaining when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except _UsageError as exc:
        fail(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        return EXIT_ERROR


def _client_config() -> dict[str, str]:
    """The client config file: $QFS_CONFIG, else ./data/cluster/client.toml when it exists.

    Keys: ``peer`` (URL), ``ca`` (CA certificate file) and ``token-file`` (a file holding the
    bearer token); relative paths are relative to the config file. Flags and the environment
    win over it. ValueError names what is wrong with it.
    """
    named = os.environ.get(CONFIG_ENV)
    path = Path(named) if named else DEMO_CLIENT_CONFIG
    if not named and not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"client config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"client config {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"peer", "ca", "token-file"})
    if unknown or not all(isinstance(v, str) for v in document.values()):
        raise ValueError(f"client config {path}: expected string keys peer, ca, token-file")
    folder = path.resolve().parent
    settings = {"peer": document.get("peer", "")}
    if "ca" in document:
        settings["ca"] = str(folder / document["ca"])
    if "token-file" in document:
        token_file = folder / document["token-file"]
        try:
            settings["token"] = read_token_file(str(token_file))
        except _UsageError as exc:
            raise ValueError(f"client config {path}: {exc}") from None
    return {k: v for k, v in settings.items() if v}


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token: --token (with a warning), else --token-file, else $QFS_TOKEN."""
    given = getattr(args, "token", None)
    if given:
        print(
            "qfs: warning: a token given with --token shows in ps to every local user; "
            "use QFS_TOKEN or --token-file FILE",
            file=sys.stderr,
        )
        return given
    path = getattr(args, "token_file", None)
    if path is not None:
        return read_token_file(path)
    return os.environ.get("QFS_TOKEN") or None


def read_token_file(path: str) -> str:
    """The token in `path`, refused (as ssh refuses a private key) when group or others may
    read or write the file: whoever reads it is that user. (The peer's secret files go through
    gossip.wire.read_private_file; the client side imports nothing of the node.)"""
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & 0o077:
                raise _UsageError(
                    f"token file {path}: permissions {mode:04o} are too open: it must not be "
                    f"readable or writable by group or others (chmod 600 {path})"
                )
            token = f.read(1024).decode("ascii", "replace").strip()
    except OSError as exc:
        raise _UsageError(f"token file {path}: {exc.strerror}") from None
    if not token:
        raise _UsageError(f"token file {path} is empty")
    return token


def _hint(exc: QfsError, args: argparse.Namespace) -> str:
    if exc.status is None and "CERTIFICATE_VERIFY_FAILED" in exc.detail:
        return " (the peer's certificate is not signed by the CA given with --ca or QFS_CA)"
    if exc.status is None:
        return " (is a peer running there? choose one with --peer URL or QFS_PEER)"
    if exc.status == 401 and not args.token:
        return " (give a token with QFS_TOKEN or --token-file FILE)"
    return ""


def _report_conflict(exc: Conflict) -> None:
    """The error line, then the siblings and the two ways out, all on stderr."""
    fail(str(exc))
    rows = [
        [_text(s.get("version")), _text(s.get("size")), _time(s.get("mtime"))] for s in exc.siblings
    ]
    _table(["VERSION", "SIZE", "MTIME"], rows, right={1}, file=sys.stderr, indent="  ")
    path, version = printable(exc.path), printable(exc.version)
    print(f"read one:  qfs get --version VERSION {path} LOCAL", file=sys.stderr)
    print(f"resolve:   qfs put --version {version} LOCAL {path}", file=sys.stderr)
