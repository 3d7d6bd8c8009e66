"""A small Django project that stands in for SAPL behind the proxy under test.

It answers SAPL's URL shapes (matérias, API, painel, login, relatórios) from SAPL's
real PostgreSQL schema, plus test-only views (echo, upload, slow, hits) that let the
integration suite see exactly what reached Gunicorn.
"""
