"""Packaging for titok-kernels: the reference TiTok model, its Triton kernels and benchmarks."""
from setuptools import find_packages, setup

setup(
    name="titok-kernels",
    version="0.1.0",
    description="Fast, faithful TiTok (1D image tokenizer) and MaskGIT generation with Triton kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Three import names, none generic: `titok` (the model), `titok_kernels` (the folder kernels/) and
    # `titok_bench` (the folder bench/). The folders keep their names; only the installed names differ, so
    # nothing clashes with other distributions' `kernels` or `bench` packages.
    packages=["titok", "titok.cli", "titok.evalset", "titok_kernels", "titok_bench"] + [f"titok_bench.{p}" for p in find_packages("bench")],
    package_dir={"titok": "titok", "titok_kernels": "kernels", "titok_bench": "bench"},
    package_data={"titok": ["manifests/*.json"], "titok_bench": ["*.json", "*.sh"]},
    install_requires=[
        "torch>=2.6",
        "numpy",
        "safetensors",
        "pillow",
        "rich",
        "triton; platform_system == 'Linux'",
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "pytest-benchmark", "scipy", "huggingface_hub"],
        "bench": ["matplotlib", "nvidia-ml-py", "jsonschema", "diffusers"],
    },
    entry_points={"console_scripts": ["titok=titok.cli:main"]},
)
