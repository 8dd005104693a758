"""The Celery app, built from the Flask app's configuration (flask's examples/celery pattern).

Production: Redis from REDIS_URL. Embedded (`lineadiretta run`, no REDIS_URL): kombu's
filesystem transport under instance/broker, so the worker is still a separate process and
tasks still run outside the request, with no extra service to install.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from celery.signals import task_received, worker_ready
from flask import Flask

from workers.supervise import touch_heartbeat


def broker_settings(app: Flask) -> dict[str, Any]:
    redis_url = app.config.get("REDIS_URL")
    if redis_url:
        return {"broker_url": redis_url}
    folder = os.path.join(app.instance_path, "broker")
    for sub in ("queue", "processed", "control"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": os.path.join(folder, "queue"),
            "data_folder_out": os.path.join(folder, "queue"),
            "processed_folder": os.path.join(folder, "processed"),
            "control_folder": os.path.join(folder, "control"),
            "store_processed": False,
        },
    }


def _heartbeat(**_kw: Any) -> None:
    touch_heartbeat()


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.conf.update(
        **broker_settings(app),
        task_ignore_result=True,
        task_acks_late=True,  # a task lost with its worker is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # No broadcast channel (remote control, gossip, mingle, heartbeats): on Redis these
        # ride a pub/sub connection whose loss in the middle of a read can end the worker
        # ("Unrecoverable error: ... 'hostname'", seen in chaos drill 3); the outbox and the
        # sweeper need none of them.
        worker_enable_remote_control=False,
        broker_transport_options_visibility_timeout=600,
        timezone="UTC",
        # The web tier must not hang on a dead broker: fail fast, the sweeper catches up.
        broker_connection_timeout=2,
        task_publish_retry=False,
        beat_schedule={
            "sweep-outbox": {
                "task": "workers.tasks.sweep_outbox",
                "schedule": timedelta(seconds=app.config["SWEEP_EVERY_SECONDS"]),
            },
            "flag-overdue": {
                "task": "workers.tasks.flag_overdue",
                "schedule": timedelta(minutes=app.config["OVERDUE_EVERY_MINUTES"]),
            },
        },
        beat_schedule_filename=os.path.join(app.instance_path, "celerybeat-schedule"),
        include=["workers.tasks"],
    )
    celery_app.conf.update(app.config.get("CELERY", {}))
    # the supervising parent (workers.supervise) sees that this worker still consumes
    task_received.connect(_heartbeat, weak=False)
    worker_ready.connect(_heartbeat, weak=False)
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
