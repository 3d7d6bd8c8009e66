#!/usr/bin/env python
"""Command-line entry of the test-bed Django project (runserver, shell, check).

Never run `migrate` with it: the database is SAPL's own schema, loaded from
shared/sapl/schema.sql, exactly as a SAPL pod has it.
"""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saplbed.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
