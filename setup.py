"""Build hook: the wheel carries the top-level ``latency_tables/`` and ``configs/`` as package data under
``hwnas/_shipped/`` (``hwnas.shipped`` finds them there, or in a checkout at the top level). Everything
else about the package is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = {"latency_tables": "*/*.json", "configs": "*.yaml"}


class build_py_with_shipped(build_py):  # noqa: N801 (setuptools' naming)
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's folders directly
            return
        root = Path(__file__).resolve().parent
        for folder, pattern in SHIPPED.items():
            for src in sorted((root / folder).glob(pattern)):
                dst = Path(self.build_lib) / "hwnas" / "_shipped" / src.relative_to(root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": build_py_with_shipped})
