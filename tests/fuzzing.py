"""How the suite fuzzes with Hypothesis (schemathesis included), so that a red run is reproducible and a green one
means something.

* ``make test`` runs every fuzz test with the fixed seed :data:`SEED`: the same cases every run (on the same versions
  of Hypothesis, schemathesis and the schema). Before them it replays the example database kept in
  :data:`EXAMPLES` (read-only there), and the explicit examples a test names (inputs that once broke something).
* ``pytest -m slow`` runs the long fuzz tests with a new random seed each time and writes what fails into
  :data:`EXAMPLES`: commit those files, and every later ``make test`` replays the failure first.
* Every other property test (``@given`` without this module) runs derandomized: its cases follow from the test's
  own code, so it too finds the same thing every run (the ``b24bridge`` profile, set in ``tests/conftest.py``).

To reproduce a failure by hand, run the one test: the seed and the database are part of the test, nothing else is
needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase, ReadOnlyDatabase
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

SEED = 15  # issue 15: the fuzz test that passed or failed by chance
EXAMPLES = Path(__file__).parent / "fuzz-examples"
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def example_database(*, record: bool) -> ExampleDatabase:
    directory = DirectoryBasedExampleDatabase(EXAMPLES)
    return directory if record else ReadOnlyDatabase(directory)


def fuzz_operation(
    operation: Any,
    call: Callable[[Any], None],
    *,
    examples: int,
    explore: bool = False,
    explicit: Iterable[Any] = (),
) -> None:
    """Send ``examples`` positive and as many negative cases of a schemathesis ``operation`` through ``call``.

    ``explore``: a random seed and a database that keeps what fails (the slow run); otherwise :data:`SEED` and the
    database read-only. ``explicit``: cases (``operation.Case(...)``) sent first, every run.
    """
    for mode in MODES:

        def exercise(case: Any) -> None:
            call(case)

        test: Any = given(case=operation.as_strategy(generation_mode=mode))(exercise)
        if mode is GenerationMode.POSITIVE:
            for case in explicit:
                test = example(case=case)(test)
        test = settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=example_database(record=explore),
            derandomize=False,
        )(test)
        if not explore:
            test = seed(SEED)(test)
        # One database key per operation and mode (the loop's test functions share their source, so their keys
        # would collide); schemathesis's own runner keys its tests the same way.
        test.hypothesis.inner_test._hypothesis_internal_add_digest = f"{operation.label} {mode.value}".encode()
        try:
            test()
        except Unsatisfiable:
            # Some operations have no input that breaks their schema (/healthz takes none, a free string path
            # parameter takes any): then there is no negative case to send.
            if mode is not GenerationMode.NEGATIVE:
                raise
