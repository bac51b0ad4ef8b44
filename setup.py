"""ddss_tf: learned fast samplers for diffusion models (DDSS) in TensorFlow / Keras.

TensorFlow is chosen by flavour, as tensorflow-datasets does:
    pip install "ddss_tf[cpu]"   # tensorflow-cpu
    pip install "ddss_tf[gpu]"   # tensorflow[and-cuda]
    pip install "ddss_tf[tpu]"   # tensorflow-tpu (Cloud / Colab TPU VMs)
"""

import os

from setuptools import find_packages, setup

_TF = ">=2.20,<2.22"
_BINARIES = ["ddss_train_model", "ddss_train_classifier", "ddss_sample", "ddss_search",
             "ddss_benchmark"]


def _version():
    with open(os.path.join(os.path.dirname(__file__), "ddss_tf", "__init__.py")) as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in ddss_tf/__init__.py")


setup(
    name="ddss_tf",
    version=_version(),
    description="Learn fast samplers for diffusion models by differentiating through sample "
                "quality (DDSS, Watson et al. ICLR 2022) in TensorFlow / Keras.",
    long_description=open(os.path.join(os.path.dirname(__file__), "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["ddss_tf", "ddss_tf.*"]) + ["ddss_tf_bin"],  # bin/: binaries
    package_dir={"ddss_tf_bin": "bin"},
    package_data={"ddss_tf": ["assets/*/*.json", "assets/*/*.h5", "assets/*/reference/*.json"]},
    install_requires=[
        "keras>=3.8",
        "numpy>=1.26",
        "absl-py>=1.0",
        # The embedded default data: the handwritten digits that scikit-learn ships.
        "scikit-learn>=1.3",
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu{_TF}"],
        "gpu": [f"tensorflow[and-cuda]{_TF}"],
        "tpu": [f"tensorflow-tpu{_TF}"],
        # Viewing the TensorBoard logs the binaries write (writing them needs only TensorFlow).
        "tensorboard": ["tensorboard"],
        # ddss_benchmark's FID-versus-K plot and sample grid (it writes the tables without).
        "plots": ["matplotlib>=3.7"],
        # The FID-against-steps plot of notebooks/ddss_colab_tpu.ipynb (it prints a table without).
        "notebook": ["matplotlib>=3.7"],
        # Real data by tensorflow-datasets name (--dataset=cifar10); imported only for those.
        "tfds": ["tensorflow-datasets>=4.9"],
        # tensorflow-datasets for the offline (mock_data) test of tfds names; it installs in
        # seconds and brings no TensorFlow of its own.
        # nbclient, nbformat, ipykernel, matplotlib: tests/notebook_test.py runs the notebook.
        # pytest-xdist: the README's command runs the suite on two processes (15 minutes on
        # 2 cores instead of 26).
        "test": ["pytest>=7", "pytest-xdist>=3", "scipy>=1.10", "tensorflow-datasets>=4.9",
                 "nbclient>=0.8", "nbformat>=5.7", "ipykernel>=6", "matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": [f"{b} = ddss_tf_bin.{b}:run" for b in _BINARIES],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
