"""First contact with the test bed: each server answers, through each proxy."""
import requests


def test_materia_page_reaches_the_browser_through_the_proxy(proxy):
    r = requests.get("http://%s:%d/materia/1" % (proxy.host, proxy.port), timeout=30)
    assert r.status_code == 200
    assert "Projeto de Lei Ordinária nº 1 de 2025" in r.text
