"""The one Celery app. Queues: `default` (CPU work: exports, refreshes) and `training`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("polyphony")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
