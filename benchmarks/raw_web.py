"""The bare side of benchmarks/submit_load.py: a Flask view that sends one Celery task.

`gunicorn -k gevent benchmarks.raw_web:app` serves POST /submit, which sends
`raw.noop` (benchmarks/raw_throughput.py) with a fresh id and answers it: what any
Flask-and-Celery API does at the least, with no validation, store or events.
"""

from __future__ import annotations

import uuid

from flask import Flask

from benchmarks.raw_throughput import app as celery

app = Flask(__name__)
RUN = "load"


@app.post("/submit")
def submit() -> dict[str, str]:
    task_id = str(uuid.uuid4())
    celery.send_task("raw.noop", args=(RUN, task_id), task_id=task_id)
    return {"job_id": task_id}
