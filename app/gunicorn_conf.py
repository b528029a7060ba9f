"""Gunicorn settings for the `web` process (see Procfile).

The gevent worker class serves flask-sock WebSockets as cheap greenlets, so one
process holds many sockets; `PORT`, `WEB_CONCURRENCY` and `WEB_BIND` come from
the environment like every other process setting.
"""

import os

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
