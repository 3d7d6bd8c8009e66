"""Fixtures of the PDF-job suite (issue 3): Redis B, the renderer's worker, sapl-edge with
`[jobs]` and `pdf` routes, and a Celery app speaking to the same Redis B (jobs_support.py
has the processes behind them).
"""
import gc
import os
import uuid

import pytest

import servers
from .jobs_support import RedisB, Worker, jobs_edge_config


@pytest.fixture(scope="session")
def jobs_db(workdir):
    name = servers.create_sapl_database(workdir)
    yield name
    servers.drop_database(name)


@pytest.fixture
def redis_b(workdir):
    server = RedisB(workdir, "redis-b-%s" % uuid.uuid4().hex[:6]).start()
    yield server
    server.stop()


@pytest.fixture
def tenant():
    return "cm-%s" % uuid.uuid4().hex[:8]


@pytest.fixture
def pdf_dir(roots):
    path = os.path.join(roots["media"], "pdf")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture
def worker_factory(workdir, jobs_db, pdf_dir):
    started = []

    def start(redis_b, tenant, *extra, pdf=None, launch=True):
        worker = Worker(workdir, "worker-%s" % uuid.uuid4().hex[:6], redis_b, jobs_db,
                        tenant, pdf or pdf_dir, extra)
        started.append(worker)
        return worker.start() if launch else worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def jobs_edge_factory(workdir, gunicorn, roots, jobs_db, pdf_dir):
    started = []

    def start(redis_b, tenant, **jobs):
        listen, metrics = servers.free_port(), servers.free_port()
        config = jobs_edge_config(listen, metrics, gunicorn, roots, redis_b, jobs_db, tenant,
                                  **jobs)
        server = servers.Edge(workdir, "edge-jobs-%s" % uuid.uuid4().hex[:6], config, listen,
                              metrics)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def celery_app_factory():
    """A Celery app as Django would configure it for one tenant (global_keyprefix)."""
    apps = []

    def make(redis_b, tenant):
        from celery import Celery
        app = Celery("sapl", broker=redis_b.url(0), backend=redis_b.url(1))
        prefix = {"global_keyprefix": "%s:" % tenant}
        app.conf.update(
            broker_transport_options=prefix,
            result_backend_transport_options=prefix,
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
        )
        apps.append(app)
        return app

    yield make
    # The test's AsyncResults unsubscribe from Redis B when collected: do it while Redis B
    # is still up (this teardown runs before redis_b's).
    gc.collect()
    for app in apps:
        app.close()
