"""The PDF-job suite (issue 3). A package, so its conftest is `jobs.conftest` and never
shadows the suite's own `conftest` module that other test files import constants from.
"""
