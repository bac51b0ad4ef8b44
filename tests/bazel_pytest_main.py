"""The `main` of every py_test in BUILD: run pytest on the one test file named in the arguments.

    py_test(name = "data_test", srcs = ["tests/bazel_pytest_main.py", "tests/data_test.py"],
            main = "tests/bazel_pytest_main.py", args = ["$(rootpath tests/data_test.py)"], ...)

Bazel starts it in the runfiles root, where setup.cfg (data of each test) gives pytest the project's
settings and tests/conftest.py (a dep of each test) is loaded as usual. Further --test_arg values go
to pytest; a JUnit XML report goes where Bazel asks (XML_OUTPUT_FILE) so each test case is listed.

Under Bazel every ddss_tf module must come from the runfiles, else the test fails: an interpreter with
the checkout installed (`pip install -e .`, whose import hook finds ddss_tf.<mod> in the checkout when
the runfiles lack it) would hide a dep missing from BUILD.
"""

import os
import sys

import pytest


def _imported_from_outside(root):
    """The ddss_tf modules loaded from anywhere but the directory tree `root`, with their files."""
    return sorted(f"{name} from {module.__file__}" for name, module in list(sys.modules.items())
                  if (name == "ddss_tf" or name.startswith("ddss_tf.")) and getattr(module, "__file__", None)
                  and not os.path.abspath(module.__file__).startswith(root + os.sep))


def main(argv):
    if not argv or not argv[0].endswith("_test.py"):
        print("usage: bazel_pytest_main.py tests/<name>_test.py [pytest args...]", file=sys.stderr)
        return 2
    args = list(argv)
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append(f"--junitxml={xml}")
    runfiles = os.getcwd() if os.environ.get("TEST_SRCDIR") else None
    status = int(pytest.main(args))
    outside = _imported_from_outside(runfiles) if runfiles else []
    if outside:
        sys.stdout.flush()
        print(f"ddss_tf modules imported from outside the runfiles {runfiles} (a dep missing from BUILD, "
              "found through an installed ddss_tf):\n  " + "\n  ".join(outside), file=sys.stderr)
        return status or 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
