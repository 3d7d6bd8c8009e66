"""WSGI entry point Gunicorn serves: `saplbed.wsgi:application`."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saplbed.settings")
application = get_wsgi_application()
