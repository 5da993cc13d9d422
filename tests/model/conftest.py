"""Model tests.  stacks.py here holds the reversible-stack helpers that tests/model/fast shares (pytest puts
the folder of each conftest.py on sys.path, so `import stacks` works from both)."""
