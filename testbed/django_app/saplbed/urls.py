"""SAPL's URL shapes the proxy must carry, plus the test-only views."""
from django.urls import path, re_path

from saplbed import views

urlpatterns = [
    path("", views.home),
    path("materia/<int:pk>", views.materia),
    path("api/", views.api_root),
    path("api/materia/materialegislativa/", views.api_materias),
    path("api/materia/materialegislativa/<int:pk>/", views.api_materia),
    path("api/blob/<int:size>/", views.api_blob),
    re_path(r"^api/.*$", views.api_not_found),
    path("painel/<int:pk>/dados", views.painel_dados),
    path("login/", views.login_view),
    path("upload/", views.upload),
    path("slow/", views.slow),
    re_path(r"^echo(?:/.*)?$", views.echo),
    path("redirect/", views.redirect),
    path("set-cookies/", views.set_cookies),
    path("relatorios/<int:pk>/materia-tramitacao", views.relatorio_pdf),
    path("relatorios/<int:pk>/etiqueta-materia-legislativa", views.relatorio_pdf),
    path("relatorios/<int:nro>/<int:ano>/etiqueta-protocolo", views.relatorio_pdf),
    path("relatorios/<int:pk>/sessao-plenaria-pdf", views.relatorio_pdf),
    path("metrics", views.metrics),
    path("__hits__", views.hits),
    path("tiny/", views.tiny),
]
