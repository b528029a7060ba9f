"""Gunicorn settings for the `web` process (see Procfile).

The gevent worker class serves flask-sock WebSockets as cheap greenlets, so one
process holds many sockets; `PORT`, `WEB_CONCURRENCY` and `WEB_BIND` come from
the environment like every other process setting.
"""

import glob
import os
import shutil
import tempfile
from typing import Any
from urllib.parse import parse_qsl, urlencode

from gunicorn.glogging import Logger

bind = os.environ.get("WEB_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = 2000
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn 25's control socket sits at one path per user ($HOME/.gunicorn/gunicorn.ctl):
# a second web process on the host (a test, a rolling restart) would take it over.
control_socket_disable = True

# prometheus_client's multiprocess mode (app/prometheus.py): each worker writes its own
# series under this directory and a scrape of any worker sums them all. Set here,
# before the workers start, so they inherit it; emptied at start, since an earlier
# run's files would add up; a worker that exits is marked dead, so its gauges (open
# WebSockets) stop counting while its counters still do.
metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(
    tempfile.gettempdir(), f"chordline-metrics-{os.getpid()}"))


def on_starting(server: Any) -> None:
    os.makedirs(metrics_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(metrics_dir, "*.db")):
        os.remove(stale)


def on_exit(server: Any) -> None:
    if os.path.basename(metrics_dir).startswith("chordline-metrics-"):  # ours, not yours
        shutil.rmtree(metrics_dir, ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir)


# A WebSocket client may still put its key in the URL (`/ws?api_key=`): the access
# log never keeps a query string's credentials, whatever their spelling (the app
# decodes `api%5Fkey` to `api_key`, so the log must too).
SECRET_PARAMS = frozenset({"api_key", "ticket"})


def redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name.lower() in SECRET_PARAMS for name, _ in pairs):
        return query
    return urlencode([(name, "[redacted]" if name.lower() in SECRET_PARAMS else value)
                      for name, value in pairs], safe="[]/:")


def redact_request_line(line: str) -> str:
    method, _, rest = line.partition(" ")
    uri, _, protocol = rest.partition(" ")
    path, question, query = uri.partition("?")
    return f"{method} {path}{question}{redact_query(query)} {protocol}" if question else line


class RedactingLogger(Logger):
    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        atoms["r"] = redact_request_line(atoms.get("r", ""))
        atoms["q"] = redact_query(atoms.get("q", ""))
        for name in ("{raw_uri}e", "{query_string}e"):
            atoms.pop(name, None)
        return atoms


logger_class = RedactingLogger
