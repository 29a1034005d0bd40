"""pytest configuration for the functional tests.

test_runner.py matches test_*.py but is the parallel runner, not a test module: keep pytest
from collecting it (`pytest tests` and `pytest tests/functional` both pass through here).
"""

collect_ignore = ["test_runner.py"]
