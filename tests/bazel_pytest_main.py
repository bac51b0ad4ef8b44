"""The `main` of every py_test in BUILD: run pytest on the one test file named in the arguments.

    py_test(name = "data_test", srcs = ["tests/bazel_pytest_main.py", "tests/data_test.py"],
            main = "tests/bazel_pytest_main.py", args = ["$(rootpath tests/data_test.py)"], ...)

Bazel starts it in the runfiles root, where setup.cfg (data of each test) gives pytest the project's
settings and tests/conftest.py (a dep of each test) is loaded as usual. Further --test_arg values go
to pytest; a JUnit XML report goes where Bazel asks (XML_OUTPUT_FILE) so each test case is listed.
"""

import os
import sys

import pytest


def main(argv):
    if not argv or not argv[0].endswith("_test.py"):
        print("usage: bazel_pytest_main.py tests/<name>_test.py [pytest args...]", file=sys.stderr)
        return 2
    args = list(argv)
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append(f"--junitxml={xml}")
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
