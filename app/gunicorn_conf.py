"""Gunicorn settings for the `web` process (see Procfile).

The gevent worker class serves flask-sock WebSockets as cheap greenlets, so one
process holds many sockets; `PORT`, `WEB_CONCURRENCY` and `WEB_BIND` come from
the environment like every other process setting.
"""

import glob
import os
import re
import shutil
import tempfile
from typing import Any

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

# prometheus_client's multiprocess mode (app/metrics.py): each worker writes its own
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
# log never keeps a query string's credentials.
SECRET_PARAMS = re.compile(r"((?:^|[?&])(?:api_key|ticket)=)[^&\s]*", re.IGNORECASE)


class RedactingLogger(Logger):
    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for name in ("r", "q"):
            atoms[name] = SECRET_PARAMS.sub(r"\1[redacted]", atoms.get(name, ""))
        return atoms


logger_class = RedactingLogger
