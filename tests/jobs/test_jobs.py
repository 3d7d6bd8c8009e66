"""PDF jobs off Gunicorn (issue 3): the edge's API and legacy links, the renderer's worker,
Celery interoperability in both directions, and the fault cases from the field.

Everything is real: redis-server with deploy/redis-b.conf, PostgreSQL with SAPL's schema
and sample data, `sapl-renderer work`, sapl-edge, Gunicorn with the test-bed Django app,
and the `celery` package from PyPI. No assertion depends on timing: waits poll for the
state a user would see, with generous ceilings.
"""
import concurrent.futures
import os

from .jobs_support import (QUEUE, TASK_NAME, get, materia_numero_ano, pdf_text, post, psql,
                           wait_done, wait_until)


def materia_ids(db, n):
    return [int(x) for x in psql(
        db, "SELECT id FROM materia_materialegislativa ORDER BY id LIMIT %d" % n).split()]


def tmp_files(pdf_dir):
    return [f for f in os.listdir(pdf_dir) if f.endswith(".tmp")]


# ---------------------------------------------------------------------------------------
# The API and the worker
# ---------------------------------------------------------------------------------------
def test_api_job_is_rendered_and_served_from_media(redis_b, tenant, worker_factory,
                                                   jobs_edge_factory, jobs_db, gunicorn):
    edge = jobs_edge_factory(redis_b, tenant)
    worker_factory(redis_b, tenant)
    hits_before = gunicorn.pdf_hits()

    r = post(edge, "/pdf/materia-tramitacao/1")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "rendering", "done")
    assert r.headers["Location"] == job["status_url"] == "/pdf/status/%s" % job["task_id"]

    done = wait_done(edge, job["task_id"])
    assert done.headers["Location"] == "/media/pdf/%s.pdf" % job["task_id"]
    assert done.json()["state"] == "done"

    pdf = get(edge, done.headers["Location"])
    assert pdf.status_code == 200
    assert pdf.headers["Content-Type"] == "application/pdf"
    text = pdf_text(pdf.content)
    assert "Histórico de Tramitações da Matéria: %s" % materia_numero_ano(jobs_db, 1) in text
    assert gunicorn.pdf_hits() == hits_before


def test_plan_alias_materia_is_the_tramitacao_report(redis_b, tenant, jobs_edge_factory):
    edge = jobs_edge_factory(redis_b, tenant)
    a = post(edge, "/pdf/materia/2").json()
    b = post(edge, "/pdf/materia-tramitacao/2").json()
    assert a["task_id"] == b["task_id"]
    record = redis_b.client(1).hgetall("%s:pdf.job.%s" % (tenant, a["task_id"]))
    assert record["kind"] == "materia-tramitacao"


def test_api_errors(redis_b, tenant, jobs_edge_factory):
    edge = jobs_edge_factory(redis_b, tenant)
    assert post(edge, "/pdf/relatorio-inexistente/1").status_code == 404
    assert post(edge, "/pdf/materia-tramitacao/abc").status_code == 400
    assert post(edge, "/pdf/etiqueta-protocolo/12").status_code == 400
    missing = post(edge, "/pdf/materia-tramitacao/999999")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not found"
    assert get(edge, "/pdf/status/00000000-0000-4000-8000-000000000000").status_code == 404
    assert get(edge, "/pdf/status/../../etc/passwd").status_code in (400, 404)
    wrong_method = get(edge, "/pdf/materia-tramitacao/1")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"
    # Nothing was queued by any of those.
    assert redis_b.client(0).llen("%s:%s" % (tenant, QUEUE)) == 0


def test_identical_requests_share_one_job_and_one_render(redis_b, tenant, worker_factory,
                                                         jobs_edge_factory):
    edge = jobs_edge_factory(redis_b, tenant)
    worker = worker_factory(redis_b, tenant, launch=False)

    def ask(_):
        return post(edge, "/pdf/etiqueta-materia/3").json()["task_id"]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        ids = set(pool.map(ask, range(1000)))
    assert len(ids) == 1
    assert redis_b.client(0).llen("%s:%s" % (tenant, QUEUE)) == 1

    worker.start()
    wait_done(edge, ids.pop())
    assert worker.metric("sapl_edge_jobs_started_total", kind="etiqueta-materia") == 1
    assert worker.metric("sapl_edge_jobs_done_total", kind="etiqueta-materia") == 1


def test_finished_pdf_is_reused_until_its_data_changes(redis_b, tenant, worker_factory,
                                                       jobs_edge_factory, jobs_db):
    edge = jobs_edge_factory(redis_b, tenant, fingerprint_cache="0s")
    worker_factory(redis_b, tenant)
    first = post(edge, "/pdf/etiqueta-materia/4").json()["task_id"]
    wait_done(edge, first)
    assert post(edge, "/pdf/etiqueta-materia/4").json() == {
        "task_id": first, "state": "done", "status_url": "/pdf/status/%s" % first}

    psql(jobs_db, "UPDATE materia_materialegislativa SET ementa = 'Ementa nova do teste de "
                  "reuso' WHERE id = 4")
    second = post(edge, "/pdf/etiqueta-materia/4").json()["task_id"]
    assert second != first
    done = wait_done(edge, second)
    text = " ".join(pdf_text(get(edge, done.headers["Location"]).content).split())
    assert "Ementa: Ementa nova do teste de reuso" in text


# ---------------------------------------------------------------------------------------
# Legacy links
# ---------------------------------------------------------------------------------------
def test_legacy_link_answers_the_pdf_inline_without_django(redis_b, tenant, worker_factory,
                                                           jobs_edge_factory, jobs_db,
                                                           gunicorn):
    edge = jobs_edge_factory(redis_b, tenant)
    worker_factory(redis_b, tenant)
    hits_before = gunicorn.pdf_hits()

    r = get(edge, "/relatorios/5/materia-tramitacao")
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == "application/pdf"
    assert r.headers["Content-Disposition"].startswith("inline")
    assert "Histórico de Tramitações da Matéria: %s" % materia_numero_ano(jobs_db, 5) \
        in pdf_text(r.content)

    again = get(edge, "/relatorios/5/materia-tramitacao",
                headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert gunicorn.pdf_hits() == hits_before


def test_legacy_link_past_the_budget_gets_the_wait_page(redis_b, tenant, worker_factory,
                                                        jobs_edge_factory, gunicorn):
    edge = jobs_edge_factory(redis_b, tenant, wait_budget="1s")
    hits_before = gunicorn.pdf_hits()

    r = get(edge, "/relatorios/6/etiqueta-materia-legislativa")
    assert r.status_code == 202
    assert r.headers["Content-Type"].startswith("text/html")
    assert "Gerando o relatório" in r.text
    task_id = r.headers["X-Job-Id"]
    assert "/pdf/status/%s" % task_id in r.text
    assert "/media/pdf/%s.pdf" % task_id in r.text

    worker_factory(redis_b, tenant)
    done = wait_done(edge, task_id)
    pdf = get(edge, done.headers["Location"])
    assert pdf.content.startswith(b"%PDF")
    # The same link now answers the PDF itself.
    assert get(edge, "/relatorios/6/etiqueta-materia-legislativa").headers["Content-Type"] \
        == "application/pdf"
    assert gunicorn.pdf_hits() == hits_before


def test_legacy_link_for_a_missing_object_is_404(redis_b, tenant, jobs_edge_factory, gunicorn):
    edge = jobs_edge_factory(redis_b, tenant)
    hits_before = gunicorn.pdf_hits()
    r = get(edge, "/relatorios/999999/materia-tramitacao")
    assert r.status_code == 404
    assert "não existe" in r.text
    assert gunicorn.pdf_hits() == hits_before


def test_redis_b_down_legacy_links_go_to_django_and_api_is_503(redis_b, tenant,
                                                                 jobs_edge_factory, gunicorn):
    edge = jobs_edge_factory(redis_b, tenant)
    redis_b.stop()
    hits_before = gunicorn.pdf_hits()

    r = get(edge, "/relatorios/1/materia-tramitacao")
    assert r.status_code == 200
    assert b"Django materia-tramitacao" in r.content
    assert gunicorn.pdf_hits() == hits_before + 1

    api = post(edge, "/pdf/materia-tramitacao/1")
    assert api.status_code == 503
    assert "Retry-After" in api.headers
    # Everything else keeps working.
    assert get(edge, "/materia/1").status_code == 200


def test_queue_cap_refuses_new_jobs(redis_b, tenant, jobs_edge_factory, gunicorn):
    edge = jobs_edge_factory(redis_b, tenant, max_queue_depth=2)
    assert post(edge, "/pdf/etiqueta-materia/1").status_code == 202
    assert post(edge, "/pdf/etiqueta-materia/2").status_code == 202
    full = post(edge, "/pdf/etiqueta-materia/3")
    assert full.status_code == 503
    assert int(full.headers["Retry-After"]) > 0
    # Joining a queued job is still allowed at the cap.
    assert post(edge, "/pdf/etiqueta-materia/1").status_code == 202

    hits_before = gunicorn.pdf_hits()
    legacy = get(edge, "/relatorios/3/etiqueta-materia-legislativa")
    assert legacy.status_code == 503
    assert "Muitos relatórios" in legacy.text
    assert gunicorn.pdf_hits() == hits_before


def post_together(edge, pks):
    """Asks for the etiqueta of every matéria in `pks` at once; the statuses, in order."""
    pks = list(pks)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(pks)) as pool:
        return list(pool.map(
            lambda pk: post(edge, "/pdf/etiqueta-materia/%d" % pk).status_code, pks))


def test_queue_cap_holds_when_requests_arrive_together(redis_b, tenant, jobs_edge_factory):
    # A crawler asking for many distinct reports at once: every request reads the queue
    # depth before any of them has enqueued.
    edge = jobs_edge_factory(redis_b, tenant, max_queue_depth=8)
    statuses = post_together(edge, range(1, 21))
    assert statuses.count(202) == 8, statuses
    assert statuses.count(503) == 12, statuses
    assert redis_b.client(0).llen("%s:%s" % (tenant, QUEUE)) == 8


def test_per_ip_new_job_limit_holds_when_requests_arrive_together(redis_b, tenant,
                                                                  jobs_edge_factory):
    edge = jobs_edge_factory(redis_b, tenant, new_jobs_per_ip=3)
    statuses = post_together(edge, range(1, 11))
    assert statuses.count(202) == 3, statuses
    assert statuses.count(429) == 7, statuses
    # Joining one of those jobs costs nothing.
    assert post(edge, "/pdf/etiqueta-materia/%d" % (statuses.index(202) + 1)).status_code == 202


def test_per_ip_new_job_limit(redis_b, tenant, jobs_edge_factory):
    edge = jobs_edge_factory(redis_b, tenant, new_jobs_per_ip=2)
    assert post(edge, "/pdf/etiqueta-materia/1").status_code == 202
    assert post(edge, "/pdf/etiqueta-materia/2").status_code == 202
    limited = post(edge, "/pdf/etiqueta-materia/3")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "60"
    assert post(edge, "/pdf/etiqueta-materia/2").status_code == 202


def test_unknown_object_sent_by_django_ends_failed(redis_b, tenant, worker_factory,
                                                   celery_app_factory):
    app = celery_app_factory(redis_b, tenant)
    worker_factory(redis_b, tenant)
    result = app.send_task(TASK_NAME, args=["materia-tramitacao", "424242", "anonymous"],
                           queue=QUEUE)
    wait_until(lambda: result.state == "FAILURE", what="FAILURE")
    record = redis_b.client(1).hgetall("%s:pdf.job.%s" % (tenant, result.id))
    assert record["state"] == "failed"
    assert record["reason"] == "not_found"
