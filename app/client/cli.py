"""`chordline`: submit, inspect, cancel and watch jobs and workflows from a shell.

The API's address and key come from `--url`/`--api-key` or CHORDLINE_API_URL /
CHORDLINE_API_KEY. Errors print the API's code and message and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from simple_websocket import ConnectionError as SocketRefused

from app.client import FINAL_EVENTS, ChordlineClient, ClientError
from app.client.config import ClientSettings
from tasks.core.errors import ChordlineError
from tasks.core.events import EventType

BAR_WIDTH = 24
# Where a job's status comes from as its events arrive.
STATUS_OF = {EventType.JOB_QUEUED: "queued", EventType.JOB_STARTED: "running",
             EventType.JOB_RETRYING: "retrying", EventType.JOB_COMPLETED: "completed",
             EventType.JOB_FAILED: "failed", EventType.JOB_CANCELLED: "cancelled",
             EventType.JOB_SKIPPED: "skipped", EventType.STEP_COMPENSATED: "compensated",
             EventType.STEP_COMPENSATION_FAILED: "compensation_failed"}


class UsageError(ChordlineError):
    """The command line or an input file is wrong (exit 2)."""

    default_code = "USAGE"


def load_spec(path: str) -> dict[str, Any]:
    """A job or workflow from a JSON or YAML file (`-` reads standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    if path.endswith((".yaml", ".yml")):
        import yaml  # only the YAML path pays for the import

        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML: {exc}") from None
    else:
        try:
            spec = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"{path}: expected an object (a job, or a workflow with steps)")
    return spec


@dataclass
class Line:
    label: str
    status: str = "waiting"
    progress: int = 0

    def render(self) -> str:
        filled = BAR_WIDTH * self.progress // 100
        return (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.progress:3d}% "
                f"{self.status:<10} {self.label}")


class ProgressView:
    """Progress bars, one per job, redrawn in place on a terminal; one line per
    event elsewhere (a log file, a pipe)."""

    def __init__(self, lines: dict[str, Line], out: TextIO) -> None:
        self.lines = lines
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0
        self.summary = ""

    def update(self, event: dict[str, Any]) -> None:
        line = self.lines.get(event.get("job_id") or "")
        if line is not None:
            line.status = STATUS_OF.get(event["type"], line.status)
            if event["type"] == EventType.JOB_PROGRESS:
                line.progress = int(event["data"].get("progress", line.progress))
            elif event["type"] in (EventType.JOB_COMPLETED, EventType.JOB_SKIPPED):
                line.progress = 100
            elif event["type"] == EventType.JOB_RETRYING:
                line.progress = 0
        if event["type"].startswith("workflow."):
            self.summary = f"workflow {event['type'].split('.', 1)[1]}"
        if self.tty:
            self.draw()
        else:
            subject = line.label if line is not None else (event.get("workflow_id") or "")
            extra = f" {line.progress}%" if line and event["type"] == EventType.JOB_PROGRESS else ""
            self.out.write(f"{event['ts']} {event['type']:<20} {subject}{extra}\n")
            self.out.flush()

    def draw(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")
        rows = [line.render() for line in self.lines.values()] + [self.summary]
        self.out.write("".join(f"\x1b[2K{row}\n" for row in rows))
        self.out.flush()
        self._drawn = len(rows)


def watch(client: ChordlineClient, ident: str, since: str, out: TextIO) -> int:
    """Follow a job or workflow to its end; exit 0 only if it completed."""
    kind = client.kind_of(ident)
    if kind == "workflow":
        steps = client.workflow(ident)["steps"]
        lines = {s["job_id"]: Line(f"step {s['step_index']} {s.get('type') or ''}".rstrip())
                 for s in steps}
    else:
        lines = {ident: Line(f"job {client.job(ident).get('type', '')}".rstrip())}
    view = ProgressView(lines, out)
    final = ""
    for event in client.watch(kind, ident, since):
        view.update(event)
        if event["type"] in FINAL_EVENTS[kind]:
            final = event["type"]
    return 0 if final.endswith("completed") else 1


def build_parser() -> argparse.ArgumentParser:
    settings = ClientSettings.from_env()
    parser = argparse.ArgumentParser(prog="chordline", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=settings.api_url, help="the API (CHORDLINE_API_URL)")
    parser.add_argument("--api-key", default=settings.api_key,
                        help="an API key (CHORDLINE_API_KEY)")
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", help="submit a job or a workflow (JSON or YAML)")
    submit.add_argument("file", help="a .json, .yaml or .yml file, or - for standard input")
    submit.add_argument("--watch", action="store_true", help="then follow it to its end")
    status = commands.add_parser("status", help="print a job's or workflow's status")
    status.add_argument("id")
    cancel = commands.add_parser("cancel", help="cancel a job or workflow")
    cancel.add_argument("id")
    cancel.add_argument("--reason")
    cancel.add_argument("--terminate", action="store_true",
                        help="also stop a running job, or a workflow's running steps")
    cancel.add_argument("--compensate", action="store_true",
                        help="also undo the steps a workflow completed")
    compensate = commands.add_parser(
        "compensate", help="retry a workflow's failed compensation, or undo a cancelled one")
    compensate.add_argument("id")
    follow = commands.add_parser("watch", help="follow a job or workflow live")
    follow.add_argument("id")
    follow.add_argument("--since", default="0", help="resume after this event id")
    return parser


def run(args: argparse.Namespace, out: TextIO) -> int:
    client = ChordlineClient(args.url, args.api_key)
    if args.command == "submit":
        kind, ident = client.submit(load_spec(args.file))
        print(json.dumps({"kind": kind, "id": ident}), file=out, flush=True)
        return watch(client, ident, "0", out) if args.watch else 0
    if args.command == "status":
        kind = client.kind_of(args.id)
        body = client.workflow(args.id) if kind == "workflow" else {"job": client.job(args.id)}
        print(json.dumps(body, indent=2), file=out)
        return 0
    if args.command == "cancel":
        answer = client.cancel(client.kind_of(args.id), args.id, args.reason, args.terminate,
                               args.compensate)
        print(answer.get("message", "cancelled"), file=out)
        return 0
    if args.command == "compensate":
        print(client.compensate(args.id)["message"], file=out)
        return 0
    return watch(client, args.id, args.since, out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, sys.stdout)
    except UsageError as exc:
        print(f"chordline: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"chordline: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, SocketRefused) as exc:
        print(f"chordline: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
