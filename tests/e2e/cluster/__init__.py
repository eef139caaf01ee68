# A package on purpose: its conftest.py is then imported as cluster.conftest
# and does not replace tests/e2e/conftest.py as the module `conftest`, which
# tests up there import from inside their test functions.
