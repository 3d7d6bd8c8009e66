"""The renderer's worker under the faults of issue 3: killed mid-job, Redis B restarted,
two tenants on one Redis B, Celery on both ends, a render longer than the visibility
timeout, a job that kills the worker every time, and SIGTERM with a job in hand.

A slow render is real data, not a delay in the worker: a matéria with thousands of
tramitações (jobs_support.materia_with_tramitacoes) takes seconds to lay out, so a test
can act while the job is in hand by polling for its `rendering` record. Every wait polls
a state with a generous ceiling; no assertion depends on how long anything took.
"""
import json
import os
import uuid

import pytest

from .jobs_support import (QUEUE, TASK_NAME, get, materia_numero_ano, materia_with_tramitacoes,
                           pdf_text, post, wait_done, wait_until)

HEADING = "Histórico de Tramitações da Matéria: %s"

# Enough tramitações for a render of a few seconds in a debug build…
SLOW = 3000
# …and for one of several seconds whose PDF writing needs ~60 MiB more than an idle worker.
HUGE = 10000


@pytest.fixture(scope="module")
def huge_materia(jobs_db):
    return materia_with_tramitacoes(jobs_db, HUGE)


def job(redis_b, tenant, task_id):
    """The job record (what the edge's status API shows)."""
    return redis_b.client(1).hgetall("%s:pdf.job.%s" % (tenant, task_id))


def celery_status(redis_b, tenant, task_id):
    raw = redis_b.client(1).get("%s:celery-task-meta-%s" % (tenant, task_id))
    return json.loads(raw)["status"] if raw else None


def ask(edge, path):
    r = post(edge, path)
    assert r.status_code == 202, r.text
    return r.json()["task_id"]


def rendering_in(redis_b, tenant, task_ids, worker):
    """The jobs this run of `worker` is rendering now."""
    me = worker.worker_id()
    results = redis_b.client(1)
    in_hand = set()
    for tid in task_ids:
        state, by = results.hmget("%s:pdf.job.%s" % (tenant, tid), "state", "worker")
        if state == "rendering" and by == me:
            in_hand.add(tid)
    return in_hand


def files_of(pdf_dir, task_id):
    """Every file under the PDF directory naming the job (its PDF and any temporary)."""
    return sorted(name for name in os.listdir(pdf_dir) if task_id in name)


def queue(redis_b, tenant):
    return redis_b.client(0).lrange("%s:%s" % (tenant, QUEUE), 0, -1)


def in_flight(redis_b, tenant):
    """Messages some worker took and has not acknowledged, across all workers."""
    broker = redis_b.client(0)
    return [m for key in broker.scan_iter("%s:pdf.inflight.*" % tenant)
            for m in broker.lrange(key, 0, -1)]


def dead_letters(redis_b, tenant):
    return [json.loads(e) for e in redis_b.client(0).lrange("%s:pdf.dead" % tenant, 0, -1)]


def assert_pdf_of(pdf_dir, task_id, db, pk):
    """The job left exactly its own PDF (no temporary beside it), of the right matéria."""
    wait_until(lambda: files_of(pdf_dir, task_id) == ["%s.pdf" % task_id], timeout=60,
               what="only %s.pdf left" % task_id)
    with open(os.path.join(pdf_dir, "%s.pdf" % task_id), "rb") as f:
        assert HEADING % materia_numero_ano(db, pk) in pdf_text(f.read())


# ---------------------------------------------------------------------------------------
# 1. SIGKILL mid-job, again and again
# ---------------------------------------------------------------------------------------
def test_worker_killed_mid_job_again_and_again_still_renders_every_job_once(
        redis_b, tenant, worker_factory, jobs_edge_factory, jobs_db, pdf_dir):
    materias = [materia_with_tramitacoes(jobs_db, SLOW) for _ in range(5)]
    edge = jobs_edge_factory(redis_b, tenant)
    # Each kill is a delivery of every job in hand: leave room for all of them.
    worker = worker_factory(redis_b, tenant, "--concurrency", "2", "--max-deliveries", "10")
    jobs = {ask(edge, "/pdf/materia-tramitacao/%d" % pk): pk for pk in materias}
    assert len(jobs) == 5

    def done_count():
        return sum(job(redis_b, tenant, tid).get("state") == "done" for tid in jobs)

    killed_in_hand = []
    for kill in range(3):
        # The first kill comes as the first render starts; each later one once one more job
        # is done, while another render of this run is under way.
        wait_until(lambda: done_count() >= kill and rendering_in(redis_b, tenant, jobs, worker),
                   timeout=240, what="a render in hand (kill %d)" % (kill + 1))
        killed_in_hand.append(rendering_in(redis_b, tenant, jobs, worker))
        worker.kill()
        assert not worker.alive()
        worker.start()

    for tid in jobs:
        wait_done(edge, tid, timeout=300)
    for tid, pk in jobs.items():
        record = job(redis_b, tenant, tid)
        assert record["state"] == "done"
        assert celery_status(redis_b, tenant, tid) == "SUCCESS"
        assert_pdf_of(pdf_dir, tid, jobs_db, pk)
        # Written once: no run wrote a second `job done` for it.
        assert len(worker.log_lines("job done", tid)) == 1, tid
    # Every kill hit a render in hand, and each of those jobs was delivered again.
    assert all(killed_in_hand)
    for tid in set().union(*killed_in_hand):
        assert int(job(redis_b, tenant, tid)["attempt"]) >= 2, tid
    assert queue(redis_b, tenant) == []
    assert in_flight(redis_b, tenant) == []
    assert dead_letters(redis_b, tenant) == []


# ---------------------------------------------------------------------------------------
# 2. Redis B restarted between enqueue and render
# ---------------------------------------------------------------------------------------
def test_job_survives_a_redis_b_restart_before_any_worker(redis_b, tenant, worker_factory,
                                                          jobs_edge_factory, jobs_db, pdf_dir):
    edge = jobs_edge_factory(redis_b, tenant)
    task_id = ask(edge, "/pdf/materia-tramitacao/2")
    assert len(queue(redis_b, tenant)) == 1

    # SIGTERM: Redis B writes its AOF and RDB and exits, as on a pod restart.
    redis_b.stop()
    assert redis_b.process.proc.returncode == 0
    redis_b.start()
    assert len(queue(redis_b, tenant)) == 1
    # The edge answers 503 with Retry-After while its link reconnects, then the job again.
    def still_queued():
        r = get(edge, "/pdf/status/%s" % task_id)
        assert r.status_code in (200, 503), r.text
        return r.status_code == 200 and r.json()["state"] == "queued"
    wait_until(still_queued, timeout=60, what="the edge to show the job queued")

    worker_factory(redis_b, tenant)
    done = wait_done(edge, task_id)
    assert done.headers["Location"] == "/media/pdf/%s.pdf" % task_id
    assert_pdf_of(pdf_dir, task_id, jobs_db, 2)
    assert celery_status(redis_b, tenant, task_id) == "SUCCESS"


# ---------------------------------------------------------------------------------------
# 3. Two tenants on one Redis B
# ---------------------------------------------------------------------------------------
def test_two_tenants_on_one_redis_b_never_see_each_others_jobs(
        redis_b, tenant, worker_factory, jobs_edge_factory, jobs_db, pdf_dir):
    other = "cm-%s" % uuid.uuid4().hex[:8]
    other_dir = os.path.join(os.path.dirname(pdf_dir), "pdf-%s" % other)
    other_url = "/media/pdf-%s/" % other
    edge_a = jobs_edge_factory(redis_b, tenant)
    edge_b = jobs_edge_factory(redis_b, other, pdf_dir=other_dir, pdf_url=other_url)
    # The same reports in both chambers: nothing is shared between tenants, not even dedup.
    paths = ["/pdf/materia-tramitacao/%d" % pk for pk in (1, 2, 3)]
    jobs_a = [ask(edge_a, p) for p in paths]
    jobs_b = [ask(edge_b, p) for p in paths]
    assert not set(jobs_a) & set(jobs_b)

    # Only B's worker runs: B's jobs end done while A's stay queued, untouched.
    worker_b = worker_factory(redis_b, other, "--pdf-url", other_url, pdf=other_dir)
    for tid in jobs_b:
        assert wait_done(edge_b, tid).headers["Location"] == "%s%s.pdf" % (other_url, tid)
    assert len(queue(redis_b, tenant)) == 3
    assert {job(redis_b, tenant, tid)["state"] for tid in jobs_a} == {"queued"}

    worker_a = worker_factory(redis_b, tenant)
    for tid in jobs_a:
        assert wait_done(edge_a, tid).headers["Location"] == "/media/pdf/%s.pdf" % tid

    for tid, pk in zip(jobs_a, (1, 2, 3)):
        assert job(redis_b, tenant, tid)["worker"] == worker_a.worker_id()
        assert_pdf_of(pdf_dir, tid, jobs_db, pk)
        assert files_of(other_dir, tid) == []
        # B's edge knows nothing of A's job: not its status, not its file.
        assert get(edge_b, "/pdf/status/%s" % tid).status_code == 404
        assert get(edge_b, "%s%s.pdf" % (other_url, tid)).status_code == 404
    for tid, pk in zip(jobs_b, (1, 2, 3)):
        assert job(redis_b, other, tid)["worker"] == worker_b.worker_id()
        assert_pdf_of(other_dir, tid, jobs_db, pk)
        assert files_of(pdf_dir, tid) == []
        assert get(edge_a, "/pdf/status/%s" % tid).status_code == 404

    # No key of B's, in either database, names or holds one of A's jobs.
    for db in (0, 1):
        client = redis_b.client(db)
        for key in client.scan_iter("%s:*" % other):
            text = key + " " + json.dumps(dump_value(client, key))
            assert not [tid for tid in jobs_a if tid in text], key
    assert len(worker_b.log_lines("job done")) == 3
    assert not [tid for tid in jobs_a if worker_b.log_lines("", tid)]


def dump_value(client, key):
    kind = client.type(key)
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "set":
        return sorted(client.smembers(key))
    return kind


# ---------------------------------------------------------------------------------------
# 4. Celery in both directions
# ---------------------------------------------------------------------------------------
def test_celery_send_task_for_an_existing_materia_ends_success(
        redis_b, tenant, worker_factory, celery_app_factory, jobs_db, pdf_dir):
    app = celery_app_factory(redis_b, tenant)
    worker_factory(redis_b, tenant)

    result = app.send_task(TASK_NAME, args=["materia-tramitacao", "3", "anonymous"],
                           queue=QUEUE)
    value = result.get(timeout=90)
    assert result.state == "SUCCESS"
    size = os.path.getsize(os.path.join(pdf_dir, "%s.pdf" % result.id))
    assert value == {"pdf": "/media/pdf/%s.pdf" % result.id, "bytes": size,
                     "kind": "materia-tramitacao", "id": "3"}
    assert_pdf_of(pdf_dir, result.id, jobs_db, 3)


def test_edge_job_is_a_celery_message_then_a_celery_success(
        redis_b, tenant, worker_factory, jobs_edge_factory, celery_app_factory, jobs_db,
        pdf_dir):
    app = celery_app_factory(redis_b, tenant)
    edge = jobs_edge_factory(redis_b, tenant)
    task_id = ask(edge, "/pdf/materia-tramitacao/4")

    # Before any worker: kombu, with Django's key prefix, counts the message in the queue
    # and decodes it as a Celery task call. (Kombu's client prefixes LLEN but not LRANGE or
    # EXISTS, so the raw message is read with a plain client and a passive queue_declare
    # cannot be used.)
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as client:
            assert client.llen(QUEUE) == 1
        [raw] = queue(redis_b, tenant)
        message = channel.message_to_python(json.loads(raw))
        assert message.content_type == "application/json"
        assert message.headers["task"] == TASK_NAME
        assert message.headers["id"] == task_id
        args, kwargs, _embed = message.decode()
    assert (args, kwargs) == (["materia-tramitacao", "4", "anonymous"], {})
    assert app.AsyncResult(task_id).state == "PENDING"

    worker_factory(redis_b, tenant)
    result = app.AsyncResult(task_id)
    wait_until(lambda: result.state == "SUCCESS", timeout=90, what="SUCCESS")
    assert result.result["pdf"] == "/media/pdf/%s.pdf" % task_id
    assert_pdf_of(pdf_dir, task_id, jobs_db, 4)


# ---------------------------------------------------------------------------------------
# 5. A render longer than the visibility timeout
# ---------------------------------------------------------------------------------------
def test_render_longer_than_the_visibility_timeout_runs_once(
        redis_b, tenant, worker_factory, jobs_edge_factory, jobs_db, pdf_dir, huge_materia):
    edge = jobs_edge_factory(redis_b, tenant)
    # Two idle workers with a 2 s visibility timeout: either would take a message whose
    # owner looked dead.
    workers = [worker_factory(redis_b, tenant, "--concurrency", "1",
                              "--visibility-timeout", "2s") for _ in range(2)]
    task_id = ask(edge, "/pdf/materia-tramitacao/%d" % huge_materia)
    wait_done(edge, task_id, timeout=300)

    record = job(redis_b, tenant, task_id)
    # The case under test happened: the render outlasted the visibility timeout.
    assert float(record["render_ms"]) > 2000
    assert record["attempt"] == "1"
    assert sum(w.metric("sapl_edge_jobs_started_total", kind="materia-tramitacao")
               for w in workers) == 1
    assert sum(w.metric("sapl_edge_jobs_done_total", kind="materia-tramitacao")
               for w in workers) == 1
    for w in workers:
        assert not w.log_lines("jobs of dead workers returned")
        assert not w.log_lines("duplicate delivery dropped")
    assert_pdf_of(pdf_dir, task_id, jobs_db, huge_materia)


# ---------------------------------------------------------------------------------------
# 6. A job that kills the worker every time
# ---------------------------------------------------------------------------------------
def test_job_that_kills_the_worker_every_time_ends_failed_and_dead_lettered(
        redis_b, tenant, worker_factory, jobs_edge_factory, celery_app_factory, huge_materia):
    edge = jobs_edge_factory(redis_b, tenant)
    app = celery_app_factory(redis_b, tenant)
    # An idle worker and a small render stay far below 56 MiB; writing this PDF does not.
    worker = worker_factory(redis_b, tenant, "--concurrency", "1", "--memory-limit-mb", "56",
                            "--max-deliveries", "3")
    poison = ask(edge, "/pdf/materia-tramitacao/%d" % huge_materia)
    behind = ask(edge, "/pdf/etiqueta-materia/7")

    # The test is the worker's supervisor: it restarts the worker each time it exits.
    exits = []
    for _ in range(10):
        wait_until(lambda: not worker.alive()
                   or job(redis_b, tenant, poison).get("state") == "failed",
                   timeout=180, what="the worker to exit or the job to fail")
        if worker.alive():
            break
        exits.append(worker.process.proc.returncode)
        worker.start()
    assert exits == [75, 75, 75]  # the memory envelope, once per allowed delivery
    assert worker.alive()

    record = job(redis_b, tenant, poison)
    assert record["state"] == "failed"
    assert record["reason"] == "too_many_attempts"
    status = get(edge, "/pdf/status/%s" % poison)
    assert status.status_code == 200
    assert status.json()["state"] == "failed"
    assert app.AsyncResult(poison).state == "FAILURE"
    [letter] = dead_letters(redis_b, tenant)
    assert letter["task_id"] == poison
    assert letter["reason"] == "too_many_attempts"
    assert json.loads(letter["message"])["headers"]["id"] == poison

    # The job queued behind it was not lost, and nothing is left to loop on.
    wait_done(edge, behind)
    wait_until(lambda: not in_flight(redis_b, tenant), timeout=30, what="no message in flight")
    assert queue(redis_b, tenant) == []
    assert job(redis_b, tenant, poison)["state"] == "failed"


# ---------------------------------------------------------------------------------------
# 7. SIGTERM with a job in hand
# ---------------------------------------------------------------------------------------
def test_sigterm_finishes_the_job_in_hand_and_takes_no_more(
        redis_b, tenant, worker_factory, jobs_edge_factory, jobs_db, pdf_dir):
    materias = [materia_with_tramitacoes(jobs_db, SLOW) for _ in range(2)]
    edge = jobs_edge_factory(redis_b, tenant)
    worker = worker_factory(redis_b, tenant, "--concurrency", "1", "--shutdown-grace", "300s")
    first, second = (ask(edge, "/pdf/materia-tramitacao/%d" % pk) for pk in materias)

    wait_until(lambda: rendering_in(redis_b, tenant, [first], worker), timeout=120,
               what="the first job in hand")
    rendered_by = worker.worker_id()
    worker.terminate()
    assert worker.wait_exit(timeout=300) == 0

    # The job in hand was finished by the stopping worker; the next one was not taken.
    record = job(redis_b, tenant, first)
    assert (record["state"], record["worker"]) == ("done", rendered_by)
    assert_pdf_of(pdf_dir, first, jobs_db, materias[0])
    assert job(redis_b, tenant, second)["state"] == "queued"
    assert len(queue(redis_b, tenant)) == 1
    assert in_flight(redis_b, tenant) == []
    assert files_of(pdf_dir, second) == []

    worker.start()
    wait_done(edge, second)
    assert_pdf_of(pdf_dir, second, jobs_db, materias[1])


def test_sigterm_past_the_grace_returns_the_job_and_a_new_worker_finishes_it(
        redis_b, tenant, worker_factory, jobs_edge_factory, jobs_db, pdf_dir, huge_materia):
    edge = jobs_edge_factory(redis_b, tenant)
    worker = worker_factory(redis_b, tenant, "--concurrency", "1", "--shutdown-grace", "1s")
    task_id = ask(edge, "/pdf/materia-tramitacao/%d" % huge_materia)

    wait_until(lambda: rendering_in(redis_b, tenant, [task_id], worker), timeout=120,
               what="the job in hand")
    worker.terminate()
    assert worker.wait_exit(timeout=60) == 0

    assert worker.log_lines("job returned to the queue", task_id)
    assert len(queue(redis_b, tenant)) == 1
    assert in_flight(redis_b, tenant) == []
    assert files_of(pdf_dir, task_id) == []

    worker.start()
    wait_done(edge, task_id, timeout=300)
    # The returned delivery did not count against the job's attempts.
    assert job(redis_b, tenant, task_id)["attempt"] == "1"
    assert_pdf_of(pdf_dir, task_id, jobs_db, huge_materia)
